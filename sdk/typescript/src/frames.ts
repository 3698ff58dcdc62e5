// Websocket frames of `WS /v1/ws`: the types generated from the server's /asyncapi.json.
import type { CompactEvent, EventFrame } from "./generated/frames.js";

export type {
  ClientFrame,
  CompactEvent as CompactEventFrame,
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

/** An event of a channel: an `event` frame, or an `ev` frame on a client made with
 * `frames: "compact"` (docs/websocket-protocol.md: `ch`, `ev`, `at` in ms, `d`; no envelope). */
export type ChannelEvent = EventFrame | CompactEvent;

/** The event type and payload of either kind of event frame. */
export function eventOf(frame: ChannelEvent): { type: string; payload: Record<string, unknown> } {
  return frame.type === "ev" ? { type: frame.ev, payload: frame.d } : (frame.event as { type: string; payload: Record<string, unknown> });
}
