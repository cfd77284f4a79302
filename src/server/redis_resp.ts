// A minimal Redis client (RESP2 over one TCP socket) for BullMQ.
//
// BullMQ 6 talks to Redis through an adapter; it ships adapters for ioredis,
// node-redis and Bun's built-in client, but none of those packages is a
// dependency here. Bun's adapter needs the least from its raw client —
// send(command, args), connect(), close(), `connected`, and onconnect /
// onclose callbacks — so this class provides exactly that surface and
// `createBunRedisClient` does the rest (scripts, pipelines, reply shapes).

import * as net from "node:net";

type Arg = string | number | Buffer;
type Reply = string | number | null | Error | Reply[];

interface Waiting {
  resolve: (v: Reply) => void;
  reject: (e: Error) => void;
}

export class RedisReplyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RedisReplyError";
  }
}

/** Parse one reply at `pos`; null when the buffer does not hold all of it yet. */
function parse(buf: Buffer, pos: number): { value: Reply; end: number } | null {
  if (pos >= buf.length) return null;
  const nl = buf.indexOf("\r\n", pos);
  if (nl < 0) return null;
  const type = buf[pos];
  const line = buf.toString("utf8", pos + 1, nl);
  switch (type) {
    case 0x2b: // + simple string
      return { value: line, end: nl + 2 };
    case 0x2d: // - error
      return { value: new RedisReplyError(line), end: nl + 2 };
    case 0x3a: // : integer
      return { value: Number(line), end: nl + 2 };
    case 0x24: { // $ bulk string
      const len = Number(line);
      if (len < 0) return { value: null, end: nl + 2 };
      if (buf.length < nl + 2 + len + 2) return null;
      return { value: buf.toString("utf8", nl + 2, nl + 2 + len), end: nl + 2 + len + 2 };
    }
    case 0x2a: { // * array
      const n = Number(line);
      if (n < 0) return { value: null, end: nl + 2 };
      const items: Reply[] = [];
      let at = nl + 2;
      for (let i = 0; i < n; i++) {
        const r = parse(buf, at);
        if (!r) return null;
        items.push(r.value);
        at = r.end;
      }
      return { value: items, end: at };
    }
    default:
      throw new Error(`unexpected byte ${type} in a Redis reply`);
  }
}

function encode(command: string, args: Arg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length + 1}\r\n$${Buffer.byteLength(command)}\r\n${command}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

export class RespClient {
  connected = false;
  onconnect: ((...args: any[]) => void) | null = null;
  onclose: ((...args: any[]) => void) | null = null;
  onerror: ((...args: any[]) => void) | null = null;
  private socket: net.Socket | null = null;
  private waiting: Waiting[] = [];
  private buffer: Buffer = Buffer.alloc(0);
  private connecting: Promise<void> | null = null;
  private closedByUs = false;
  readonly host: string;
  readonly port: number;
  private password?: string;
  private db?: number;

  /** autoReconnect: a command on a closed client reconnects first (for our own plain clients; BullMQ's adapter reconnects itself). */
  constructor(readonly url: string, private opts: { autoReconnect?: boolean } = {}) {
    const u = new URL(url);
    if (u.protocol !== "redis:") throw new Error(`only redis:// URLs are supported, got ${u.protocol}`);
    this.host = u.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1";
    this.port = Number(u.port || 6379);
    if (u.password) this.password = decodeURIComponent(u.password);
    const db = u.pathname.replace(/^\//, "");
    if (db) this.db = Number(db);
  }

  connect(): Promise<void> {
    if (this.connected) return Promise.resolve();
    if (this.connecting) return this.connecting;
    this.connecting = new Promise<void>((resolve, reject) => {
      const s = net.connect({ host: this.host, port: this.port });
      s.setNoDelay(true);
      this.socket = s;
      let opened = false;
      s.on("connect", async () => {
        opened = true;
        this.connected = true;
        try {
          if (this.password) await this.send("AUTH", [this.password]);
          if (this.db !== undefined) await this.send("SELECT", [this.db]);
        } catch (e) {
          s.destroy();
          return reject(e);
        }
        this.connecting = null;
        resolve();
        this.onconnect?.();
      });
      s.on("data", (d) => this.onData(d));
      s.on("error", (e) => {
        if (!opened) {
          this.connecting = null;
          reject(new Error(`Connection closed: cannot reach Redis at ${this.host}:${this.port} (${e.message})`));
        } else this.onerror?.(e);
      });
      s.on("close", () => {
        const was = this.connected;
        this.connected = false;
        this.socket = null;
        this.buffer = Buffer.alloc(0);
        for (const w of this.waiting.splice(0)) w.reject(new Error("Connection closed"));
        if (was) this.onclose?.(new Error("Connection closed"));
      });
    });
    return this.connecting;
  }

  private onData(d: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, d]) : d;
    let pos = 0;
    for (;;) {
      const r = parse(this.buffer, pos);
      if (!r) break;
      pos = r.end;
      const w = this.waiting.shift();
      if (!w) continue;
      if (r.value instanceof RedisReplyError) w.reject(r.value);
      else w.resolve(r.value);
    }
    this.buffer = pos === this.buffer.length ? Buffer.alloc(0) : this.buffer.subarray(pos);
  }

  send<T = any>(command: string, args: Arg[] = []): Promise<T> {
    const s = this.socket;
    if (!s || !this.connected) {
      if (this.opts.autoReconnect && !this.closedByUs) return this.connect().then(() => this.send<T>(command, args));
      return Promise.reject(new Error("Connection closed"));
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve: resolve as (v: Reply) => void, reject });
      s.write(encode(command, args));
    });
  }

  close(): void {
    this.closedByUs = true;
    this.socket?.destroy();
  }

  /** A new, unconnected client for the same server (BullMQ's blocking connections). */
  async duplicate(): Promise<this> {
    return new RespClient(this.url) as this;
  }

  get(key: string): Promise<string | null> {
    return this.send("GET", [key]);
  }

  smembers(key: string): Promise<string[]> {
    return this.send("SMEMBERS", [key]);
  }

  incr(key: string): Promise<number> {
    return this.send("INCR", [key]);
  }
}
