// The one tap every intermediate tensor of a run goes through. The conformance runner
// and `--trace` listen on it; names are those of the golden fixtures (testdata/golden,
// written by scripts that instrument the diffusers pipeline). With no listener, a tap
// costs one branch per name, and `lazy` never builds its tensor.

export interface TraceTensor {
  data: Float32Array | BigInt64Array | Uint8Array | Float64Array | Int32Array;
  shape: readonly number[];
}

export type TraceListener = (name: string, t: TraceTensor) => void;

export class Tap {
  constructor(private readonly listener?: TraceListener, private readonly prefix = "") {}

  get enabled(): boolean {
    return this.listener !== undefined;
  }

  emit(name: string, t: TraceTensor): void {
    this.listener?.(this.prefix + name, t);
  }

  /** Build the tensor only when someone listens (for traces that cost a copy). */
  lazy(name: string, make: () => TraceTensor): void {
    if (this.listener) this.listener(this.prefix + name, make());
  }

  /** The same tap with every name prefixed `step{i}_`, as the fixtures name per-step tensors. */
  step(i: number): Tap {
    return new Tap(this.listener, `${this.prefix}step${i}_`);
  }
}
