// The one error type `flux2 pull` throws, with a kind a caller (or a test)
// can branch on. Messages are written for the person at the terminal: what
// went wrong, and what to do about it.

export type PullErrorKind =
  /** Bad arguments: repository id, token format, include globs. */
  | "usage"
  /** The repository (or revision, or a listed file) does not exist on the Hub. */
  | "not_found"
  /** HTTP 401/403: gated or private repository without (sufficient) credentials. */
  | "gated"
  /** The Hub cannot be reached at all (connection refused, DNS, timeout). */
  | "network"
  /** A transfer broke off; the .incomplete file is kept and the next run resumes. */
  | "interrupted"
  /** The downloaded bytes do not match the listing's sha256 / git sha1 / size. */
  | "checksum"
  /** ENOSPC (or EDQUOT) while writing; the .incomplete file is kept. */
  | "disk_full"
  /** Any other HTTP answer we cannot act on (5xx after retries, 416, odd responses). */
  | "http"
  /** Local file-system trouble other than a full disk (permissions, …). */
  | "io";

export class PullError extends Error {
  readonly kind: PullErrorKind;
  /** Whether trying the same transfer again (resuming) may help. */
  readonly retryable: boolean;

  constructor(kind: PullErrorKind, message: string, opts: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "PullError";
    this.kind = kind;
    this.retryable = opts.retryable ?? false;
  }
}
