// The server's LoRAs (GET v1/loras) with a strength slider for each one chosen, up to the API's
// limit of LoRAs per request.

import type { LoraList } from "../api";

export interface LoraChoice { name: string; strength: number }

interface Props {
  list: LoraList | null;
  error: string | null;
  value: LoraChoice[];
  onChange: (v: LoraChoice[]) => void;
}

const mb = (n: number) => `${(n / (1024 * 1024)).toFixed(n < 10 * 1024 * 1024 ? 1 : 0)} MB`;

export function LoraPicker({ list, error, value, onChange }: Props) {
  const chosen = new Map(value.map((v) => [v.name, v]));
  const full = list ? value.length >= list.max : true;
  const unknown = value.filter((v) => list && !list.loras.some((l) => l.name === v.name));
  return (
    <section className="panel" aria-labelledby="loras-h">
      <div className="row spread">
        <h2 id="loras-h">LoRAs</h2>
        {list && <span className="hint" data-testid="lora-count">{value.length} / {list.max}</span>}
      </div>
      {error && <p className="error" role="alert">Could not list the LoRAs: {error}</p>}
      {list && !list.loraDir && <p className="hint">This server has no LoRA folder (start it with --lora-dir DIR).</p>}
      {list && list.loraDir && !list.loras.length && <p className="hint">The server's LoRA folder is empty.</p>}
      {unknown.length > 0 && <p className="error" role="alert">Not on this server: {unknown.map((u) => u.name).join(", ")} (remove {unknown.length === 1 ? "it" : "them"} to generate).</p>}
      <ul className="loras" data-testid="lora-list">
        {list?.loras.map((l) => {
          const c = chosen.get(l.name);
          const id = `lora-${l.name}`;
          return (
            <li key={l.name} data-testid="lora-item" data-lora={l.name}>
              <label className="check">
                <input type="checkbox" checked={!!c} disabled={(!c && full) || !!l.error}
                  onChange={(e) => onChange(e.target.checked ? [...value, { name: l.name, strength: list.strength.default }] : value.filter((v) => v.name !== l.name))} />
                {l.name}
              </label>
              <span className="hint">
                {l.error ? `cannot be used: ${l.error}` : `${l.format}${l.rank ? `, rank ${l.rank}` : ""}, ${l.weights} weights (${l.targets.slice(0, 4).join(", ")}${l.targets.length > 4 ? "…" : ""}), ${mb(l.size)}`}
              </span>
              {c && (
                <span className="row">
                  <label htmlFor={id}>Strength <output htmlFor={id}>{c.strength.toFixed(2)}</output></label>
                  <input id={id} type="range" min={list.strength.min} max={list.strength.max} step={0.05} value={c.strength}
                    onChange={(e) => onChange(value.map((v) => (v.name === l.name ? { ...v, strength: Number(e.target.value) } : v)))} />
                </span>
              )}
            </li>
          );
        })}
      </ul>
      {list && full && list.loras.length > value.length && <p className="hint">At most {list.max} LoRAs per image.</p>}
    </section>
  );
}
