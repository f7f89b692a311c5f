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
    super(oneLine(file ? `${file}: ${message}` : message));
    this.name = 'TopiaryError';
  }
}

/**
 * Control characters (newlines, terminal escapes) escaped as \uXXXX: messages quote names read
 * from files (GGUF keys, tensor names), and a hostile file must not be able to break the one-line
 * error or write to the terminal through them.
 */
function oneLine(message: string): string {
  return message.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Thrown for invalid command-line or API requests, before any work starts. */
export class UsageError extends TopiaryError {
  constructor(message: string) {
    super(message, undefined, 2);
    this.name = 'UsageError';
  }
}
