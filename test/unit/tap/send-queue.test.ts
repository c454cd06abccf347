import { describe, expect, it } from 'vitest';
import { type ActivationRows } from '../../../src/tap/builders.js';
import { decodeMessage } from '../../../src/tap/codec.js';
import { SendQueue, type FrameSocket } from '../../../src/tap/send-queue.js';

/** A socket that keeps what it is handed; `bufferedAmount` is set by the test (the kernel's backlog). */
class RecordingSocket implements FrameSocket {
  bufferedAmount = 0;
  readonly frames: Uint8Array[] = [];
  send(frame: Uint8Array): void {
    this.frames.push(frame);
  }
}

function rows(count: number, first = 0): ActivationRows {
  return {
    hookIndex: 0,
    dtype: 'f32',
    dModel: 4,
    requestIds: Array.from({ length: count }, () => 'r1'),
    positions: Int32Array.from({ length: count }, (_, i) => first + i),
    data: new Float32Array(count * 4).fill(1),
  };
}

function dropped(frame: Uint8Array): number {
  const msg = decodeMessage(frame);
  if (msg.type !== 'activations') throw new Error(`expected activations, got ${msg.type}`);
  return msg.droppedRowsSinceLastFrame;
}

describe('SendQueue', () => {
  it('drops a frame that would exceed the budget, counts its rows, and reports them in the next frame that fits', () => {
    const socket = new RecordingSocket();
    const queue = new SendQueue(1000);
    expect(queue.sendRows(socket, rows(2))).toBe(true);
    socket.bufferedAmount = 990;
    expect(queue.sendRows(socket, rows(3))).toBe(false);
    expect(queue.sendRows(socket, rows(4))).toBe(false);
    socket.bufferedAmount = 0;
    expect(queue.sendRows(socket, rows(1))).toBe(true);
    expect(socket.frames.map(dropped)).toEqual([0, 7]);
    expect(queue.stats).toMatchObject({ framesSent: 2, rowsSent: 3, rowsDropped: { queue_full: 7, disconnected: 0 } });
    expect(queue.stats.bytesSent).toBe(socket.frames[0].byteLength + socket.frames[1].byteLength);
    // Reported once: the next frame starts from zero.
    queue.sendRows(socket, rows(1));
    expect(dropped(socket.frames[2])).toBe(0);
  });

  it('counts rows offered while disconnected apart and never reports them', () => {
    const socket = new RecordingSocket();
    const queue = new SendQueue(1000);
    expect(queue.dropDisconnected(5)).toBe(false);
    queue.sendRows(socket, rows(1));
    expect(dropped(socket.frames[0])).toBe(0);
    expect(queue.stats.rowsDropped).toEqual({ queue_full: 0, disconnected: 5 });
  });

  it('forgets unreported drops when the connection ends', () => {
    const socket = new RecordingSocket();
    const queue = new SendQueue(1000);
    socket.bufferedAmount = 1000;
    queue.sendRows(socket, rows(3));
    queue.connectionEnded();
    socket.bufferedAmount = 0;
    queue.sendRows(socket, rows(1));
    expect(dropped(socket.frames[0])).toBe(0);
    expect(queue.stats.rowsDropped.queue_full).toBe(3);
  });

  it('keeps control frames while disconnected, within the budget, and sends them first and in order after the welcome', () => {
    const queue = new SendQueue(10);
    const a = new Uint8Array([1, 2, 3, 4]);
    const b = new Uint8Array([5, 6, 7, 8]);
    const c = new Uint8Array([9, 10, 11, 12]);
    expect(queue.sendControl(null, a)).toBe(true);
    expect(queue.sendControl(null, b)).toBe(true);
    expect(queue.sendControl(null, c)).toBe(false);
    expect(queue.queuedBytes(null)).toBe(8);
    expect(queue.stats.messagesDropped).toBe(1);
    const socket = new RecordingSocket();
    socket.bufferedAmount = 5;
    expect(queue.queuedBytes(socket)).toBe(13);
    queue.flushOutbox(socket);
    expect(socket.frames).toEqual([a, b]);
    expect(queue.queuedBytes(null)).toBe(0);
    expect(queue.sendControl(socket, c)).toBe(true);
    expect(socket.frames).toEqual([a, b, c]);
    expect(queue.stats).toMatchObject({ framesSent: 3, bytesSent: 12, messagesDropped: 1 });
  });

  it('counts queued bytes against the activation budget', () => {
    const queue = new SendQueue(200);
    queue.sendControl(null, new Uint8Array(150));
    const socket = new RecordingSocket();
    expect(queue.sendRows(socket, rows(4))).toBe(false);
    expect(queue.stats.rowsDropped.queue_full).toBe(4);
    queue.clearOutbox();
    expect(queue.sendRows(socket, rows(4))).toBe(true);
  });
});
