// The `fetch` handed to @huggingface/hub (its `fetch` option): adds a
// User-Agent, a time limit on every request's answer, an abort switch for
// stalled bodies, and notes of the last responses so that errors can be told
// apart — the library's HubApiError keeps the status code but not the Hub's
// X-Error-Code header (RepoNotFound / RevisionNotFound / GatedRepo …), and
// its Blob.stream() reduces a failed request to the error's message string.

import { HubApiError, InvalidApiResponseFormatError } from "@huggingface/hub";
import { PullError } from "./errors.js";

export interface ResponseNote {
  url: string;
  status: number;
  /** The Range header we sent, if any. */
  range: string | null;
  /** The Hub's X-Error-Code / X-Error-Message headers. */
  errorCode: string | null;
  errorMessage: string | null;
}

const USER_AGENT = "flux2.ts (flux2 pull; @huggingface/hub)";

export class HubHttp {
  /** The last response (after redirects) and the last non-2xx one. */
  lastResponse: ResponseNote | null = null;
  lastFailure: ResponseNote | null = null;
  private readonly active = new Set<AbortController>();

  constructor(
    readonly hubUrl: string,
    private readonly baseFetch: typeof fetch,
    private readonly timeoutMs: number,
    private readonly signal?: AbortSignal,
  ) {}

  /** Abort every request started so far (a stalled download, Ctrl-C). */
  abortAll(reason: unknown): void {
    for (const c of this.active) c.abort(reason);
    this.active.clear();
  }

  readonly fetch: typeof fetch = async (input, init) => {
    const ctl = new AbortController();
    this.active.add(ctl);
    const onOuterAbort = () => ctl.abort(this.signal?.reason);
    if (this.signal?.aborted) onOuterAbort();
    this.signal?.addEventListener("abort", onOuterAbort, { once: true });
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    const timer = setTimeout(() => {
      ctl.abort(new PullError("network", `no answer from ${url} within ${Math.round(this.timeoutMs / 1000)} s`, { retryable: true }));
    }, this.timeoutMs);
    const headers = new Headers(init?.headers);
    if (!headers.has("user-agent")) headers.set("user-agent", USER_AGENT);
    try {
      const res = await this.baseFetch(input, { ...init, headers, signal: ctl.signal });
      const note: ResponseNote = {
        url: res.url || url,
        status: res.status,
        range: headers.get("range"),
        errorCode: res.headers.get("x-error-code"),
        errorMessage: res.headers.get("x-error-message"),
      };
      this.lastResponse = note;
      if (!res.ok) this.lastFailure = note;
      return res;
    } finally {
      clearTimeout(timer);
      this.signal?.removeEventListener("abort", onOuterAbort);
    }
  };
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH",
  "EPIPE", "ENETDOWN", "EHOSTDOWN", "UND_ERR_CONNECT_TIMEOUT", "UND_ERR_SOCKET", "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT", "UND_ERR_CLOSED",
]);

/** The system error code (ECONNREFUSED …) somewhere in an error's cause chain, if any. */
export function networkCode(e: unknown): string | null {
  for (let cur: any = e, depth = 0; cur && depth < 5; cur = cur.cause, depth++) {
    if (typeof cur.code === "string" && NETWORK_CODES.has(cur.code)) return cur.code;
    if (Array.isArray(cur.errors)) {
      for (const sub of cur.errors) if (typeof sub?.code === "string" && NETWORK_CODES.has(sub.code)) return sub.code;
    }
  }
  return null;
}

function describe(e: unknown): string {
  if (typeof e === "string") return e;
  const err = e as Error & { cause?: any };
  const cause = err?.cause?.message ? ` (${err.cause.message})` : "";
  return `${err?.message ?? String(e)}${cause}`;
}

export interface ErrorContext {
  http: HubHttp;
  repo: string;
  revision: string;
  tokenSent: boolean;
  /** The file being fetched, if any (listing: undefined). */
  file?: string;
}

/** Turn whatever a library call threw into a PullError with a plain-words message. */
export function toPullError(e: unknown, ctx: ErrorContext): PullError {
  if (e instanceof PullError) return e;
  const { http, repo, revision, file } = ctx;
  const repoUrl = `${http.hubUrl}/${repo}`;
  // Blob.stream() of the library turns a failed request into its message string;
  // the response note tells us which status it was.
  let status: number | null = e instanceof HubApiError ? e.statusCode : null;
  let note = http.lastFailure;
  if (status === null && typeof e === "string" && note && e.includes(`status ${note.status}`)) status = note.status;
  if (status !== null && note?.status !== status) note = null;
  if (status !== null) {
    const serverSays = note?.errorMessage ?? (e instanceof HubApiError ? e.message.replace(/\. URL: .*$/s, "") : "");
    const detail = serverSays ? ` (the Hub says: ${serverSays})` : "";
    const code = note?.errorCode ?? null;
    if (code === "RevisionNotFound") {
      return new PullError("not_found", `revision "${revision}" not found in ${repo} on ${http.hubUrl}${detail}`);
    }
    if (code === "EntryNotFound") {
      return new PullError("not_found", `${repo}: ${file ?? "a file"} is listed but cannot be downloaded at revision "${revision}" — did the repository change meanwhile? Run pull again${detail}`);
    }
    if (code === "RepoNotFound" || status === 404) {
      return new PullError(
        "not_found",
        `repository "${repo}" not found on ${http.hubUrl} (HTTP ${status}): check the name (owner/name, e.g. black-forest-labs/FLUX.2-klein-4B); ` +
          `if it is private, set HF_TOKEN to a token that can read it${detail}`,
      );
    }
    if (status === 401 || status === 403) {
      const tokenHint = ctx.tokenSent
        ? `; a token was sent but it was refused or its account has no access: accept the license at ${repoUrl} with that account and use a token that may read gated repositories`
        : `; no token was sent (set HF_TOKEN or pass --token)`;
      return new PullError(
        "gated",
        `${repo}: access denied (HTTP ${status}): this repository is gated: accept its license on the Hub and set HF_TOKEN (license page: ${repoUrl})${tokenHint}${detail}`,
      );
    }
    const what = file ? `downloading ${file}` : `listing ${repo}`;
    const retryable = status === 408 || status === 429 || status >= 500;
    return new PullError("http", `${what}: the Hub at ${http.hubUrl} answered HTTP ${status}${detail}`, { retryable, cause: e });
  }
  if (e instanceof InvalidApiResponseFormatError) {
    return new PullError("http", `${file ? `downloading ${file}` : `listing ${repo}`}: the server at ${http.hubUrl} does not answer like the Hugging Face Hub (${e.message}); check HF_ENDPOINT / --endpoint and any proxy in between`, { cause: e });
  }
  const code = networkCode(e);
  if (code !== null || (e instanceof TypeError && /fetch failed/.test(e.message))) {
    if (!file) {
      return new PullError("network", `cannot reach the Hub at ${http.hubUrl} (${code ?? describe(e)}): check the network connection, a proxy, or HF_ENDPOINT`, { cause: e });
    }
    return new PullError("interrupted", `downloading ${file}: connection to ${http.hubUrl} lost (${code ?? describe(e)})`, { retryable: true, cause: e });
  }
  if ((e as any)?.name === "AbortError" || (e as any)?.name === "TimeoutError") {
    return new PullError(file ? "interrupted" : "network", `${file ? `downloading ${file}` : `listing ${repo}`}: request aborted (${describe(e)})`, { retryable: !!file, cause: e });
  }
  if (typeof e === "string" || (e instanceof TypeError && /terminated|other side closed/.test(e.message))) {
    return new PullError("interrupted", `downloading ${file ?? "?"}: transfer broke off (${describe(e)})`, { retryable: true });
  }
  return new PullError("http", `${file ? `downloading ${file}` : `listing ${repo}`}: ${describe(e)}`, { cause: e });
}
