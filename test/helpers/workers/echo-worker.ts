/**
 * A tiny real worker for the WorkerHost tests (test/unit/common/worker-host.test.ts): it speaks the
 * host envelope through `serveWorker` and does nothing but what a test asks of it. It lives under
 * test/helpers because test/fixtures is outside the typecheck.
 */
import { threadId } from 'node:worker_threads';
import { SaegateError } from '../../../src/common/errors.js';
import { serveWorker } from '../../../src/common/worker-port.js';

export interface EchoInit {
  /** Fail the handshake: with a SaegateError of this code, or a plain Error when 'plain'. */
  fail?: 'SAEGATE_ERR_CONFIG' | 'plain';
}

export type EchoRequest =
  /** Answers with every value doubled, in the request's own (transferred) buffer. */
  | { type: 'double'; values: Float32Array }
  /** Answers only when a `release` notice with the same key arrives. */
  | { type: 'hold'; key: string }
  /** Throws a SaegateError with this message. */
  | { type: 'fail'; message: string }
  /** Ends the thread at once with this exit code. */
  | { type: 'exit'; code: number };

export interface EchoResponse {
  /** The request's own tag, so a test can see which answer it got. */
  tag: string;
  values: Float32Array | null;
  threadId: number;
}

export type EchoNotice = { type: 'release'; key: string } | { type: 'ping'; value: number };

export type EchoEvent = { type: 'pong'; value: number };

export interface EchoProtocol {
  init: EchoInit;
  request: EchoRequest;
  response: EchoResponse;
  notice: EchoNotice;
  event: EchoEvent;
}

const held = new Map<string, () => void>();

const worker = serveWorker<EchoProtocol>({
  init(init) {
    if (init.fail === 'plain') throw new Error('plain init failure');
    if (init.fail) throw new SaegateError(init.fail, ['echo', 'refused by the test']);
  },
  async request(body) {
    switch (body.type) {
      case 'double': {
        for (let i = 0; i < body.values.length; i++) body.values[i] *= 2;
        return { body: { tag: 'double', values: body.values, threadId }, transfer: [body.values.buffer as ArrayBuffer] };
      }
      case 'hold':
        await new Promise<void>((resolve) => held.set(body.key, resolve));
        return { body: { tag: body.key, values: null, threadId } };
      case 'fail':
        throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [body.message]);
      case 'exit':
        process.exit(body.code);
    }
  },
  notice(body) {
    if (body.type === 'release') held.get(body.key)?.();
    else worker.emit({ type: 'pong', value: body.value });
  },
});
