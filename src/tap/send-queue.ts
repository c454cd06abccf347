/**
 * Flow control of the tap client (docs/tap-protocol.md §6): everything the client sends goes
 * through here, synchronously and bounded, because the decode loop of a model server must never
 * wait for saegate.
 *
 * - Activation frames go out only while the bytes already waiting (the socket's
 *   `bufferedAmount` plus this queue's own outbox) leave room under `maxQueueBytes`; otherwise the
 *   rows are dropped, counted, and reported in the next frame's `droppedRowsSinceLastFrame`. The
 *   frame is measured before it is built, so under overload the copy and f16 conversion are
 *   skipped entirely.
 * - Tokens, ends and plan acks are small and carry state saegate needs, so flow control never
 *   drops them; while disconnected they wait in the outbox (bounded by the same budget) and go out,
 *   in order, after the next welcome.
 */
import { ActivationFrameBuilder, type ActivationRows } from './builders.js';

/** Where frames go: the open, welcomed socket (a `ws` WebSocket fits). */
export interface FrameSocket {
  /** Bytes handed to the socket and not yet written. */
  readonly bufferedAmount: number;
  send(frame: Uint8Array): void;
}

export type TapDropReason = 'queue_full' | 'disconnected';

/** What the send queue counts (part of `TapClientStats`). */
export interface SendQueueStats {
  /** Frames handed to the socket (all message types). */
  framesSent: number;
  /** Activation rows handed to the socket. */
  rowsSent: number;
  /** Bytes handed to the socket. */
  bytesSent: number;
  /** Activation rows dropped, by reason. */
  rowsDropped: Record<TapDropReason, number>;
  /** Tokens, end and plan_ack messages dropped because the client was closed or its queue was full while disconnected. */
  messagesDropped: number;
}

export class SendQueue {
  private readonly maxQueueBytes: number;
  private readonly builder = new ActivationFrameBuilder();
  // Control frames waiting for a welcome, in order.
  private readonly outbox: Uint8Array[] = [];
  private outboxBytes = 0;
  private pendingDroppedRows = 0;
  private readonly counters: SendQueueStats = {
    framesSent: 0,
    rowsSent: 0,
    bytesSent: 0,
    rowsDropped: { queue_full: 0, disconnected: 0 },
    messagesDropped: 0,
  };

  /** @param maxQueueBytes bytes that may wait (socket buffer + outbox) before rows are dropped. */
  constructor(maxQueueBytes: number) {
    this.maxQueueBytes = maxQueueBytes;
  }

  /** Frames handed to the socket so far (stats.framesSent without the snapshot). */
  get framesSent(): number {
    return this.counters.framesSent;
  }

  /** A snapshot of the counters. */
  get stats(): SendQueueStats {
    return { ...this.counters, rowsDropped: { ...this.counters.rowsDropped } };
  }

  /** Bytes waiting to be sent: `socket`'s buffer plus the outbox. */
  queuedBytes(socket: FrameSocket | null): number {
    return (socket?.bufferedAmount ?? 0) + this.outboxBytes;
  }

  /** Hands a frame to the socket and counts it. */
  write(socket: FrameSocket, frame: Uint8Array): void {
    socket.send(frame);
    this.counters.framesSent++;
    this.counters.bytesSent += frame.byteLength;
  }

  /** Counts rows offered while not connected (not reported to saegate: it knows). Returns false. */
  dropDisconnected(rowCount: number): false {
    this.counters.rowsDropped.disconnected += rowCount;
    return false;
  }

  /**
   * Sends `rows` as one activations frame if it fits the budget, else drops and counts them as
   * 'queue_full' for the next frame to report. Returns whether the rows were sent.
   */
  sendRows(socket: FrameSocket, rows: ActivationRows): boolean {
    const rowCount = rows.requestIds.length;
    const frameBytes = this.builder.measure(rows);
    if (this.queuedBytes(socket) + frameBytes > this.maxQueueBytes) {
      this.pendingDroppedRows += rowCount;
      this.counters.rowsDropped.queue_full += rowCount;
      return false;
    }
    const frame = this.builder.build(rows, this.pendingDroppedRows);
    this.pendingDroppedRows = 0;
    this.write(socket, frame);
    this.counters.rowsSent += rowCount;
    return true;
  }

  /**
   * Sends a control frame (tokens, end, plan_ack) now, or keeps it for the next welcome when
   * `socket` is null. Returns false only when it was dropped: the outbox is over budget.
   */
  sendControl(socket: FrameSocket | null, frame: Uint8Array): boolean {
    if (socket !== null) {
      this.write(socket, frame);
      return true;
    }
    if (this.outboxBytes + frame.byteLength > this.maxQueueBytes) {
      this.counters.messagesDropped++;
      return false;
    }
    this.outbox.push(frame);
    this.outboxBytes += frame.byteLength;
    return true;
  }

  /** Counts a control message refused because the client is closing. */
  dropControl(): void {
    this.counters.messagesDropped++;
  }

  /** After a welcome: what was produced while disconnected goes first, in order. */
  flushOutbox(socket: FrameSocket): void {
    for (const frame of this.outbox) this.write(socket, frame);
    this.clearOutbox();
  }

  /** A connection ended: its drop count means nothing to the next session's frames. */
  connectionEnded(): void {
    this.pendingDroppedRows = 0;
  }

  /** Forgets the outbox (the client is closing). */
  clearOutbox(): void {
    this.outbox.length = 0;
    this.outboxBytes = 0;
  }
}
