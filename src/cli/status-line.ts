/** Where a long command reports: a redrawn progress line, and permanent lines. */
export interface Status {
  /** True when `draw` shows anything (a terminal). */
  readonly interactive: boolean;
  /** Replaces the progress line. */
  draw(text: string): void;
  /** A permanent line. */
  log(text: string): void;
  /** Removes the progress line. */
  clear(): void;
}

/**
 * How a lab command (`model sample`, `sae train`, `sae features`) reports when another command
 * runs it in-process, as the demo's first start does. Default: its own StatusLine on stderr and
 * paths as written.
 */
export interface ToolReporting {
  /** Receives the command's progress and its lines. */
  status?: Status;
  /**
   * Maps a path the command writes into its reports and lines: the demo builds in a work
   * directory that is renamed into the cache afterwards, and the reports name the final place.
   */
  finalPath?: (file: string) => string;
}

/**
 * A one-line status for long commands: redrawn in place on a terminal (at most ten times a
 * second), silent otherwise, so logs piped to a file hold only the `log()` lines.
 */
export class StatusLine implements Status {
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

/**
 * One phase of a quiet run: its progress drawn on `line` after a label (`[2/3] training the SAE:
 * …`), and the lines the phase logs kept in `logged` instead of printed, for the caller to show
 * when the phase fails.
 */
export class QuietPhase implements Status {
  readonly logged: string[] = [];

  constructor(
    private readonly line: StatusLine,
    private readonly label: string,
  ) {}

  get interactive(): boolean {
    return this.line.interactive;
  }

  draw(text: string): void {
    this.line.draw(`${this.label}: ${text}`);
  }

  log(text: string): void {
    this.logged.push(text);
  }

  clear(): void {
    this.line.clear();
  }
}
