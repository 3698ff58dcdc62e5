// Websocket frames of `WS /v1/ws` (docs/api.md), as api/ws.py sends and reads them.
import type { Schemas } from "./http.js";

export type EventEnvelope = Schemas["EventOut"];

export type ClientFrame =
  | { type: "subscribe"; channel_id: string; since_seq?: number }
  | { type: "unsubscribe"; channel_id: string }
  | { type: "subscribe_presence"; user_ids: string[] }
  | { type: "typing"; channel_id: string }
  | { type: "ping" };

export interface SubscribedFrame { type: "subscribed"; channel_id: string; head_seq: number }
export interface EventFrame { type: "event"; channel_id: string; seq: number; position: number; event: EventEnvelope }
export interface UnsubscribedFrame { type: "unsubscribed"; channel_id: string }
export interface PresenceFrame {
  type: "presence";
  user_id: string;
  status: "online" | "away" | "offline";
  last_seen_at: string | null;
  devices: number;
}
export interface TypingFrame { type: "typing"; channel_id: string; user_id: string; expires_in_ms: number }
export interface PongFrame { type: "pong" }
export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
  channel_id?: string;
  retry_after?: number;
  details?: Record<string, unknown>;
}
export type ServerFrame =
  | SubscribedFrame
  | EventFrame
  | UnsubscribedFrame
  | PresenceFrame
  | TypingFrame
  | PongFrame
  | ErrorFrame;
