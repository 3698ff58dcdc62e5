"""What both backends share: the websocket hub, presence, and the projection rules (batches,
retry, park, stall), with the embedded backend's in-process runner. Never imports an adapter."""
