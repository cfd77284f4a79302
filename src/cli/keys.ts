// flux2 keys: API keys for flux2 serve.

import { parseArgs } from "node:util";
import { createKey } from "../server/auth.js";
import { defaultDataDir } from "../server/config.js";
import { JobStore } from "../server/store.js";
import { numFlag } from "./serve.js";

const HELP = `usage: flux2 keys add [--name NAME] [--max-active N] [--data DIR]
       flux2 keys list [--data DIR]
       flux2 keys revoke ID [--data DIR]

Manages the API keys of flux2 serve (clients send them in the x-key header).
Only a SHA-256 hash of each key is stored; \`add\` prints the key once.

  add                 create a key and print it
  list                id, name, prefix, creation time and state of every key
  revoke ID           revoke a key (by id or prefix); effective immediately
  --name NAME         a label for the key (add)
  --max-active N      this key's limit of queued + running tasks (add; default:
                      the server's --max-active)
  --data DIR          the server's data folder (default ${defaultDataDir()})
  -h, --help          this text`;

const OPTIONS = {
  name: { type: "string" }, "max-active": { type: "string" }, data: { type: "string" }, help: { type: "boolean", short: "h" },
} as const;

export async function runKeysCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  const [action, arg] = positionals;
  if (v.help || !action) {
    console.log(HELP);
    return v.help ? 0 : 2;
  }
  const store = new JobStore(v.data ?? defaultDataDir());
  try {
    switch (action) {
      case "add": {
        const { key, row } = createKey(store, v.name ?? "", numFlag(v["max-active"], "max-active", 0, 1_000_000) ?? null);
        console.log(key);
        process.stderr.write(`created key ${row.id}${row.name ? ` (${row.name})` : ""}: keep it now, it is not stored and cannot be shown again\n`);
        return 0;
      }
      case "list": {
        const rows = store.listKeys();
        if (!rows.length) console.log("no keys");
        for (const k of rows) {
          const state = k.revoked_at ? `revoked ${new Date(k.revoked_at).toISOString()}` : "active";
          console.log([k.id, k.prefix + "…", k.name || "-", new Date(k.created_at).toISOString(), k.max_active ?? "default", state].join("\t"));
        }
        return 0;
      }
      case "revoke": {
        if (!arg) throw new Error("give the id of the key to revoke (see flux2 keys list)");
        const row = store.revokeKey(arg);
        if (!row) throw new Error(`no active key ${arg}`);
        console.log(`revoked ${row.id}`);
        return 0;
      }
      default:
        console.error(HELP);
        return 2;
    }
  } finally {
    store.close();
  }
}
