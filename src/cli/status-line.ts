/**
 * A one-line status for long commands: redrawn in place on a terminal (at most ten times a
 * second), silent otherwise, so logs piped to a file hold only the `log()` lines.
 */
export class StatusLine {
  readonly interactive: boolean;
  private drawn = false;
  private lastDraw = 0;

  constructor(private readonly stream: NodeJS.WriteStream) {
    this.interactive = stream.isTTY === true;
  }

  /** Replaces the status line (terminals only). */
  draw(text: string): void {
    if (!this.interactive) return;
    const now = performance.now();
    if (now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const width = this.stream.columns > 0 ? this.stream.columns - 1 : 120;
    this.stream.write(`\r${text.slice(0, width)}\x1b[K`);
    this.drawn = true;
  }

  /** Prints a permanent line (above the status line on a terminal). */
  log(text: string): void {
    this.clear();
    this.stream.write(`${text}\n`);
  }

  clear(): void {
    if (this.drawn) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }
}
