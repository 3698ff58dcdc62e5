// The live tail: one websocket per signed-in page (/console/api/tail), the tenant's events as they commit.
import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { tailUrl, type TailEvent } from "./api";

export type TailStatus = "connecting" | "live" | "closed";

export interface Tail {
  status: TailStatus;
  events: TailEvent[]; // newest first, the last KEEP
  counts: Record<string, number>; // events seen per type since the page opened
  total: number;
}

const KEEP = 200;
const EMPTY: Tail = { status: "connecting", events: [], counts: {}, total: 0 };
const TailContext = createContext<Tail>(EMPTY);
const browserSocket = (url: string) => new WebSocket(url);

export function useTail(): Tail {
  return useContext(TailContext);
}

/** Holds the tail open while mounted; reconnects after a drop (not after a refusal: 1008 means signed out). */
export function TailProvider({
  children,
  onRefused,
  socket = browserSocket,
}: {
  children: ReactNode;
  onRefused: () => void;
  socket?: (url: string) => WebSocket;
}) {
  const [tail, setTail] = useState<Tail>(EMPTY);
  const refused = useRef(onRefused);
  refused.current = onRefused;
  useEffect(() => {
    let stopped = false;
    let ws: WebSocket | null = null;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const open = (attempt: number) => {
      ws = socket(tailUrl());
      ws.onmessage = (message) => {
        const frame = JSON.parse(String(message.data)) as { type: string; event?: TailEvent };
        if (frame.type === "ready") setTail((t) => ({ ...t, status: "live" }));
        else if (frame.type === "event" && frame.event) {
          const event = frame.event;
          setTail((t) => ({
            status: "live",
            events: [event, ...t.events].slice(0, KEEP),
            counts: { ...t.counts, [event.type]: (t.counts[event.type] ?? 0) + 1 },
            total: t.total + 1,
          }));
        }
      };
      ws.onclose = (close) => {
        if (stopped) return;
        setTail((t) => ({ ...t, status: "closed" }));
        if (close.code === 1008) {
          refused.current();
          return;
        }
        retry = setTimeout(() => open(attempt + 1), Math.min(5000, 250 * 2 ** attempt));
      };
    };
    open(0);
    return () => {
      stopped = true;
      clearTimeout(retry);
      ws?.close();
    };
  }, [socket]);
  return <TailContext.Provider value={tail}>{children}</TailContext.Provider>;
}
