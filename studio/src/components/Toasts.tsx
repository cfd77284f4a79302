// Short notices (settings loaded, seed set, errors) shown at the bottom of the window, next to the
// sticky Generate bar where the user is looking; each goes after a few seconds (errors stay longer)
// and can be closed. Announced to screen readers (status, or alert for errors).

export interface Toast { id: number; kind: "info" | "error"; text: string }

export function Toasts({ toasts, onClose }: { toasts: Toast[]; onClose: (id: number) => void }) {
  return (
    <div className="toasts" data-testid="toasts">
      {toasts.map((t) => (
        <div key={t.id} className={`toast ${t.kind}`} role={t.kind === "error" ? "alert" : "status"} data-testid="toast">
          <span>{t.text}</span>
          <button type="button" className="icon" aria-label="Close notice" onClick={() => onClose(t.id)}>✕</button>
        </div>
      ))}
    </div>
  );
}
