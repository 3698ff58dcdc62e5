// Websocket frames of `WS /v1/ws`: the types generated from the server's /asyncapi.json.
export type {
  ClientFrame,
  Envelope as EventEnvelope,
  Error as ErrorFrame,
  EventFrame,
  Ping as PingFrame,
  Pong as PongFrame,
  Presence as PresenceFrame,
  SendTyping as SendTypingFrame,
  ServerFrame,
  Subscribe as SubscribeFrame,
  SubscribePresence as SubscribePresenceFrame,
  Subscribed as SubscribedFrame,
  Typing as TypingFrame,
  Unsubscribe as UnsubscribeFrame,
  Unsubscribed as UnsubscribedFrame,
} from "./generated/frames.js";
