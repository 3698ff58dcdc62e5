"""Pure reducers from recorded events to read-model writes."""
