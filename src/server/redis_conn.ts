// BullMQ connections over our RESP client. BullMQ treats a connection passed
// as an instance as shared and never closes it, so we keep track of every one
// we make and close them ourselves; each gets an error listener, so a Redis
// restart is logged instead of crashing the process.

import { createBunRedisClient } from "bullmq";
import { RespClient } from "./redis_resp.js";

type Adapter = ReturnType<typeof createBunRedisClient>;

export class RedisConnections {
  private made: Adapter[] = [];
  private lastLog = 0;

  constructor(readonly url: string, private log: (s: string) => void = () => {}) {
    new RespClient(url); // validates the URL now rather than on first use
  }

  /** A fresh connection for one BullMQ Queue / Worker / QueueEvents. */
  make(): Adapter {
    const a = createBunRedisClient(new RespClient(this.url));
    a.on("error", (e: Error) => {
      // At most one line per 5 s while Redis is away.
      if (Date.now() - this.lastLog > 5000) {
        this.lastLog = Date.now();
        this.log(`redis: ${e.message}`);
      }
    });
    this.made.push(a);
    return a;
  }

  /** A plain client for our own keys (model adverts, cancel flags). */
  async plain(): Promise<RespClient> {
    const c = new RespClient(this.url, { autoReconnect: true });
    await c.connect();
    return c;
  }

  closeAll(): void {
    for (const a of this.made.splice(0)) {
      try {
        a.disconnect();
      } catch { /* already closed */ }
    }
  }
}

export const MODELS_KEY = "flux2:models";
export const cancelKey = (id: string) => `flux2:cancel:${id}`;
export const queueName = (model: string) => `flux2-${model}`;
