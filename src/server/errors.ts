// Errors in the shape BFL's API (FastAPI) uses: 422 bodies are
// {detail: [{loc: ["body", field], msg, type}]}, others {detail: "text"}.

import type { z } from "zod";

export interface FieldError {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export class ApiError extends Error {
  constructor(readonly status: number, readonly detail: string | FieldError[], readonly headers: Record<string, string> = {}) {
    super(typeof detail === "string" ? detail : detail.map((d) => `${d.loc.join(".")}: ${d.msg}`).join("; "));
  }

  get body(): { detail: string | FieldError[] } {
    return { detail: this.detail };
  }
}

export function unprocessable(errors: FieldError[]): ApiError {
  return new ApiError(422, errors);
}

/** One 422 error for one body field. */
export function fieldError(field: string | (string | number)[], msg: string, type = "value_error"): ApiError {
  return unprocessable([{ loc: ["body", ...(Array.isArray(field) ? field : [field])], msg, type }]);
}

/** zod issues → FastAPI-style entries (loc starts with "body"). */
export function zodIssues(issues: z.core.$ZodIssue[]): FieldError[] {
  const out: FieldError[] = [];
  for (const i of issues) {
    const loc = ["body", ...i.path.map((p) => (typeof p === "symbol" ? String(p) : p))];
    if (i.code === "unrecognized_keys") {
      for (const k of i.keys) out.push({ loc: [...loc, k], msg: "Extra inputs are not permitted", type: "extra_forbidden" });
      continue;
    }
    out.push({ loc, msg: issueMessage(i), type: issueType(i) });
  }
  return out;
}

function issueType(i: z.core.$ZodIssue): string {
  switch (i.code) {
    case "invalid_type":
      return i.input === undefined ? "missing" : `${i.expected}_type`;
    case "too_small":
      return i.origin === "string" || i.origin === "array" ? "too_short" : "greater_than_equal";
    case "too_big":
      return i.origin === "string" || i.origin === "array" ? "too_long" : "less_than_equal";
    case "invalid_format":
      return i.format === "url" ? "url_parsing" : "string_pattern_mismatch";
    case "invalid_value":
      return "enum";
    default:
      return "value_error";
  }
}

function issueMessage(i: z.core.$ZodIssue): string {
  if (i.code === "invalid_type" && i.input === undefined) return "Field required";
  return i.message;
}
