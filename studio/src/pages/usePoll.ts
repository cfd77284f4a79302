// One poll loop for the pages that follow a server job (Fine-tune, Storyboard):
// GET the path now, then again every second while the answer's status is
// "Pending". Leaving the page, or a new path or poke value, stops the loop
// (its pending timer is cleared, and an answer that arrives late is dropped).

import { useEffect, useRef } from "react";
import { call } from "./client";

export function usePoll<T extends { status: string }>(
  path: string | null,
  onData: (v: T) => void,
  onError: (e: Error) => void,
  /** Change it to start polling again (after a re-make, say). */
  poke: unknown = 0,
  everyMs = 1000,
): void {
  // The latest callbacks, without restarting the loop when the page re-renders.
  const cb = useRef({ onData, onError });
  cb.current = { onData, onError };
  useEffect(() => {
    if (!path) return;
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const v = await call<T>("GET", path);
        if (stop) return;
        cb.current.onData(v);
        if (v.status === "Pending") timer = setTimeout(() => void tick(), everyMs);
      } catch (e) {
        if (!stop) cb.current.onError(e as Error);
      }
    };
    void tick();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [path, poke, everyMs]);
}
