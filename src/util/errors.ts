// Errors that any layer may raise about what the caller asked for. It lives below every
// layer (the request layer validates first; the pipeline and models still refuse what
// reaches them directly) so that no layer imports upward to throw it.

/** The request cannot be honoured as given; the message says what to change. */
export class InvalidRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidRequestError";
  }
}
