/**
 * Progress for long work, drawn on one line of stderr when it is a terminal (stdout stays clean for
 * --json); silent otherwise, so logs and pipes get only results.
 */
export class Progress {
  private readonly started = performance.now();
  private readonly enabled: boolean;
  private lastDraw = 0;

  constructor(
    private readonly label: string,
    stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.enabled = stream.isTTY === true;
    this.stream = stream;
  }
  private readonly stream: NodeJS.WriteStream;

  update(done: number, total: number, detail = ''): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (done < total && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const elapsed = (now - this.started) / 1000;
    const eta = done > 0 ? (elapsed / done) * (total - done) : NaN;
    const width = 24;
    const filled = Math.round((done / Math.max(total, 1)) * width);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const timing = `${elapsed.toFixed(0)}s` + (done < total && Number.isFinite(eta) ? `, ~${eta.toFixed(0)}s left` : '');
    this.stream.write(`\r\x1b[2K${this.label} ${bar} ${done}/${total} ${detail} (${timing})`);
  }

  /** Writes a line of its own without breaking the bar. */
  log(message: string): void {
    if (this.enabled) this.stream.write('\r\x1b[2K');
    this.stream.write(message + '\n');
  }

  done(): void {
    if (this.enabled) this.stream.write('\n');
  }
}
