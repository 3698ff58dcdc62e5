// A TCP proxy between a client and the server that can stop the server's bytes (so the server
// sees a slow reader) and cut connections in the middle of a request or before its answer.
import { createServer, connect, type Server as NetServer, type Socket } from "node:net";
import type { AddressInfo } from "node:net";

type Cut = "mid-request" | "before-answer";

export class Proxy {
  private server: NetServer | undefined;
  private readonly pairs = new Set<[Socket, Socket]>();
  private paused = false;
  /** The next matching requests are cut, one rule per request, in order. */
  readonly cuts: { match: string; how: Cut }[] = [];
  /** Requests cut so far. */
  cutCount = 0;
  port = 0;

  constructor(private readonly upstreamPort: number) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = createServer((client) => this.accept(client));
    await new Promise<void>((r) => this.server?.listen(0, "127.0.0.1", r));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** Stop reading what the server sends (it piles up in the server's buffers). */
  pauseDownstream(): void {
    this.paused = true;
    for (const [, upstream] of this.pairs) upstream.pause();
  }

  resumeDownstream(): void {
    this.paused = false;
    for (const [, upstream] of this.pairs) upstream.resume();
  }

  async close(): Promise<void> {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    await new Promise((r) => this.server?.close(r));
  }

  private accept(client: Socket): void {
    const upstream = connect(this.upstreamPort, "127.0.0.1");
    const pair: [Socket, Socket] = [client, upstream];
    this.pairs.add(pair);
    if (this.paused) upstream.pause();
    let cutting: Cut | undefined;
    const drop = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("data", (chunk: Buffer) => {
      if (cutting === "mid-request") return; // the rest of the request never arrives
      const text = chunk.toString("latin1");
      const rule = this.cuts[0];
      if (cutting === undefined && rule !== undefined && text.includes(rule.match)) {
        this.cuts.shift();
        this.cutCount++;
        cutting = rule.how;
        if (rule.how === "mid-request") {
          // the headers and part of the body reach the server, then the connection dies
          const end = text.indexOf("\r\n\r\n");
          upstream.write(chunk.subarray(0, end + 4 + Math.floor((chunk.length - end - 4) / 2)));
          setTimeout(drop, 50);
          return;
        }
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (cutting === "before-answer") {
        drop(); // the server answered, the client never hears it
        return;
      }
      client.write(chunk);
    });
    client.on("error", drop);
    upstream.on("error", drop);
    client.on("close", drop);
    upstream.on("close", drop);
  }
}
