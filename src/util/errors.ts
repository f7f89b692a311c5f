/**
 * The one error type that reaches users. It names the file (when there is one) and says what is
 * wrong in one line; the CLI prints `topiary: <file>: <message>` and exits non-zero, with no stack.
 * Anything else that escapes is a bug in Topiary, and is reported as such.
 */
export class TopiaryError extends Error {
  constructor(
    message: string,
    /** The file the problem is in, if any. */
    readonly file?: string,
    /** Process exit code the CLI uses: 2 for bad usage, 1 otherwise. */
    readonly exitCode: number = 1,
  ) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'TopiaryError';
  }
}

/** Thrown for invalid command-line or API requests, before any work starts. */
export class UsageError extends TopiaryError {
  constructor(message: string) {
    super(message, undefined, 2);
    this.name = 'UsageError';
  }
}
