/**
 * Server-sent events on a raw Node response (the route has called `reply.hijack()`).
 *
 * Backpressure: the engine has no per-request pause, so tokens keep coming while a slow client
 * drains its socket. Once `write()` returns false nothing more is written until 'drain'; frames
 * produced meanwhile are appended to one backlog string and written in a single call on 'drain'.
 * The backlog is bounded by the request's max_tokens, and a few hundred bytes per token is far
 * cheaper to hold than to stall the shared decode batch for one reader.
 */
import type { ServerResponse } from 'node:http';

/** Headers as fastify's `reply.getHeaders()` returns them. */
export type HeaderValues = Readonly<Record<string, string | number | readonly string[] | undefined>>;

/** One SSE stream; frames are written in call order. */
export class SseWriter {
  private backlog = '';
  private blocked = false;
  private ending = false;
  private readonly drainWaiters: Array<() => void> = [];

  /** Writes the 200 status line and the event-stream headers, plus `headers` (x-request-id, …). */
  constructor(
    private readonly res: ServerResponse,
    headers: HeaderValues,
  ) {
    for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value);
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      // Reverse proxies (nginx) buffer responses by default, which would batch the token stream.
      'x-accel-buffering': 'no',
    });
    res.on('drain', this.onDrain);
    res.once('close', this.onClose);
  }

  /** True when the client is gone or the stream was ended. */
  get closed(): boolean {
    return this.ending || this.res.destroyed;
  }

  /** `data: <json>\n\n` */
  data(payload: unknown): void {
    this.write(`data: ${JSON.stringify(payload)}\n\n`);
  }

  /** `event: <name>\ndata: <json>\n\n` */
  event(name: string, payload: unknown): void {
    this.write(`event: ${name}\ndata: ${JSON.stringify(payload)}\n\n`);
  }

  /** OpenAI's end-of-stream sentinel, `data: [DONE]\n\n`. */
  done(): void {
    this.write('data: [DONE]\n\n');
  }

  /** Waits for the backlog to reach the socket, then ends the response. Resolves early when the client is gone. */
  async end(): Promise<void> {
    if (this.ending) return;
    while (this.blocked && !this.res.destroyed) await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    this.ending = true;
    this.res.off('drain', this.onDrain);
    if (this.res.destroyed) return;
    await new Promise<void>((resolve) => {
      this.res.end(resolve);
      // end()'s callback does not run when the socket dies first.
      this.res.once('close', resolve);
    });
  }

  private write(frame: string): void {
    if (this.closed) return;
    if (this.blocked) {
      this.backlog += frame;
      return;
    }
    if (!this.res.write(frame)) this.blocked = true;
  }

  private readonly onDrain = (): void => {
    this.blocked = false;
    if (this.backlog !== '') {
      const pending = this.backlog;
      this.backlog = '';
      if (!this.res.write(pending)) {
        this.blocked = true;
        return;
      }
    }
    this.wakeWaiters();
  };

  private readonly onClose = (): void => {
    this.blocked = false;
    this.backlog = '';
    this.wakeWaiters();
  };

  private wakeWaiters(): void {
    for (const wake of this.drainWaiters.splice(0)) wake();
  }
}
