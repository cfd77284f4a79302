// Redis connections for the scale-out queue, through ioredis (BullMQ's own
// default client): reconnection with backoff, TLS (rediss://), AUTH and ACL
// users, and Sentinel.
//
// One --queue URL says everything:
//   redis://[USER:PASSWORD@]HOST[:PORT][/DB]        plain TCP
//   rediss://…                                      TLS (system CAs, plus NODE_EXTRA_CA_CERTS)
//   redis+sentinel://[USER:PASSWORD@]H1:P1,H2:P2/MASTER[/DB]   ask Sentinels for MASTER
//   rediss+sentinel://…                             the same over TLS
// $FLUX2_REDIS_PASSWORD, when set, is the password (kept out of the command
// line and `ps`); $FLUX2_SENTINEL_PASSWORD is the Sentinels' own password.
//
// BullMQ treats a connection passed as an instance as shared and never closes
// it, so we keep track of every one we make and close them ourselves; each
// gets an error listener, so a Redis restart is logged instead of crashing
// the process.

import { Redis, type RedisOptions } from "ioredis";

export type RedisClient = Redis;

/** Reconnect after 100 ms, 200 ms, … up to 5 s between tries, with jitter so workers do not reconnect in step. */
export function reconnectDelay(times: number): number {
  const base = Math.min(100 * 2 ** Math.min(times - 1, 6), 5000);
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/** ioredis options for a --queue URL; throws a message that says what a valid URL looks like. */
export function redisOptions(url: string, env: NodeJS.ProcessEnv = process.env): RedisOptions {
  const scheme = url.match(/^([a-z][a-z0-9+.-]*):\/\//i)?.[1].toLowerCase();
  if (!scheme) throw new Error(`--queue: "${url}" is not a URL; use redis://HOST:PORT, rediss://HOST:PORT (TLS) or redis+sentinel://HOST:PORT,HOST:PORT/MASTER`);
  if (!["redis", "rediss", "redis+sentinel", "rediss+sentinel"].includes(scheme)) {
    throw new Error(`--queue: unsupported scheme "${scheme}:"; use redis://, rediss:// (TLS), redis+sentinel:// or rediss+sentinel://`);
  }
  if (/[?#]/.test(url)) throw new Error(`--queue: "${url}" has a query or fragment; options go in the URL's parts (user, password, host, port, /db)`);
  // Read by hand: WHATWG URL parsing takes one host only, and Sentinel URLs list several.
  const m = url.slice(scheme.length + 3).match(/^(?:([^:@/]*)(?::([^@/]*))?@)?([^/]*)(\/.*)?$/);
  if (!m) throw new Error(`--queue: cannot read "${url}"`);
  const [, user, pass, hosts, pathname = ""] = m;
  const tls = scheme.startsWith("rediss");
  const username = user ? decodeURIComponent(user) : undefined;
  const password = env.FLUX2_REDIS_PASSWORD ?? (pass ? decodeURIComponent(pass) : undefined);
  const parts = pathname.split("/").filter(Boolean);
  const o: RedisOptions = {
    username, password, retryStrategy: reconnectDelay,
    // Let the first connection fail fast and clearly when nothing listens, instead of queueing forever.
    connectTimeout: 10_000,
  };
  if (tls) o.tls = {};
  if (scheme.endsWith("+sentinel")) {
    const sentinels = hosts.split(",").map((hp) => hostPort(hp, 26379, url));
    if (!parts[0]) throw new Error(`--queue: ${scheme}:// needs the master's name: ${scheme}://HOST:26379/MASTER`);
    o.sentinels = sentinels;
    o.name = decodeURIComponent(parts[0]);
    o.db = dbNumber(parts[1], url);
    o.sentinelPassword = env.FLUX2_SENTINEL_PASSWORD;
    o.sentinelRetryStrategy = reconnectDelay;
    if (tls) {
      o.enableTLSForSentinelMode = true;
      o.sentinelTLS = {};
    }
    return o;
  }
  if (hosts.includes(",")) throw new Error(`--queue: "${url}" lists several hosts; that is for Sentinel: ${tls ? "rediss" : "redis"}+sentinel://HOST:PORT,HOST:PORT/MASTER`);
  Object.assign(o, hosts ? hostPort(hosts, 6379, url) : { host: "127.0.0.1", port: 6379 });
  o.db = dbNumber(parts[0], url);
  if (parts.length > 1) throw new Error(`--queue: "${url}": the path is the database number only (/0 … /15)`);
  return o;
}

/** HOST, HOST:PORT, [V6] or [V6]:PORT. */
function hostPort(s: string, defaultPort: number, url: string): { host: string; port: number } {
  const m = s.match(/^(?:\[([0-9a-f:.]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/i);
  const port = m?.[3] ? Number(m[3]) : defaultPort;
  if (!m || port < 1 || port > 65535) throw new Error(`--queue: "${url}": cannot read the address "${s}" (HOST:PORT, or [IPv6]:PORT)`);
  return { host: m[1] ?? m[2], port };
}

function dbNumber(s: string | undefined, url: string): number {
  if (s === undefined) return 0;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--queue: "${url}": the database must be a number such as /0, got "/${s}"`);
  return n;
}

/** The URL as it may be printed: any password replaced. */
export function redactedUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:***@");
}

export class RedisConnections {
  private made: Redis[] = [];
  private lastLog = 0;
  private options: RedisOptions;

  constructor(readonly url: string, private log: (s: string) => void = () => {}) {
    this.options = redisOptions(url); // validates the URL now rather than on first use
  }

  private watch(c: Redis): Redis {
    c.on("error", (e: Error) => {
      // At most one line per 5 s while Redis is away.
      if (Date.now() - this.lastLog > 5000) {
        this.lastLog = Date.now();
        this.log(`redis (${redactedUrl(this.url)}): ${e.message}`);
      }
    });
    this.made.push(c);
    return c;
  }

  /**
   * A fresh connection for one BullMQ Queue / Worker / QueueEvents. maxRetriesPerRequest null is
   * what BullMQ requires: its blocking commands wait through a reconnection instead of failing.
   */
  make(): Redis {
    return this.watch(new Redis({ ...this.options, maxRetriesPerRequest: null, enableReadyCheck: true }));
  }

  /**
   * A client for our own keys (model adverts, cancel flags). Its commands give up after two
   * reconnection attempts, so an HTTP request that touches Redis while it is down fails in about a
   * second instead of hanging; the callers retry (adverts, sweeps) or fall back (cancel).
   */
  async plain(): Promise<Redis> {
    const c = this.watch(new Redis({ ...this.options, maxRetriesPerRequest: 2, lazyConnect: true }));
    await c.connect();
    return c;
  }

  closeAll(): void {
    for (const c of this.made.splice(0)) c.disconnect();
  }
}

export const MODELS_KEY = "flux2:models";
export const cancelKey = (id: string) => `flux2:cancel:${id}`;
export const queueName = (model: string) => `flux2-${model}`;
