// Queued and running jobs, oldest first, each with a cancel. The server keeps the queue (its job
// list persists), so the studio rebuilds this list from it after a reload.

export interface QueueItem {
  id: string; model: string; prompt: string; status: string; images: number;
  /** The x-flux2-batch id it was sent with (a provider batch), so the finished job joins its batch's gallery card. */
  batch?: string;
}

export function QueuePanel({ items, onCancel }: { items: QueueItem[]; onCancel: (id: string) => void }) {
  if (!items.length) return null;
  return (
    <section className="panel queue" aria-labelledby="queue-h">
      <h2 id="queue-h">Queue ({items.length})</h2>
      <ol data-testid="queue">
        {items.map((q) => (
          <li key={q.id} data-testid="queue-item" data-job={q.id} data-status={q.status}>
            <span className="queue-state">{q.status === "Running" ? "running" : "queued"}</span>
            <span className="queue-prompt" title={q.prompt}>{q.prompt || <em>(no prompt)</em>}</span>
            <span className="hint">{q.model}{q.images > 1 ? ` · ${q.images} images` : ""}</span>
            <button type="button" onClick={() => onCancel(q.id)} aria-label={`Cancel: ${q.prompt.slice(0, 60)}`}>Cancel</button>
          </li>
        ))}
      </ol>
    </section>
  );
}
