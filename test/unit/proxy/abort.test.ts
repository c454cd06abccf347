/** The bytes of a policy abort's ending (src/proxy/abort.ts) and the SSE event-boundary tracking the forwarder uses. */
import { describe, expect, it } from 'vitest';
import { abortedAppliedValue, abortResponseBody, abortStreamEnding, endsEvent, eventEnd, pushTail } from '../../../src/proxy/abort.js';

const upstreamChunk = Buffer.from('data: {"id":"cmpl-42","object":"text_completion","created":1700000000,"model":"m","choices":[{"index":0,"text":"Hi"}]}\n\n');

describe('policy abort endings', () => {
  it('adds abort=POLICY to x-saegate-applied, keeping it a safe header value', () => {
    expect(abortedAppliedValue('none', { policy: 'p@2' })).toBe('abort=p@2');
    expect(abortedAppliedValue('policy=p@2, steering=plan-1', { policy: 'p@2' })).toBe('policy=p@2, steering=plan-1, abort=p@2');
    expect(abortedAppliedValue('none', { policy: 'a b\r\nx: y' })).toBe('abort=a_b__x:_y');
    expect(abortedAppliedValue('none', { policy: '' })).toBe('abort=_');
  });

  it('ends a completions stream with one content_filter chunk per choice, reusing the upstream id and created', () => {
    const body = Buffer.from(JSON.stringify({ model: 'stories', prompt: 'x', n: 2, stream: true }));
    const text = abortStreamEnding({ route: 'completions', requestId: 'r1', body, firstChunk: upstreamChunk, nowSeconds: 5 }, 'abort=p@1');
    const [data, done, comment, rest] = text.split('\n\n');
    expect(JSON.parse(data.slice('data: '.length))).toEqual({
      id: 'cmpl-42',
      object: 'text_completion',
      created: 1700000000,
      model: 'stories',
      choices: [
        { index: 0, text: '', logprobs: null, finish_reason: 'content_filter' },
        { index: 1, text: '', logprobs: null, finish_reason: 'content_filter' },
      ],
    });
    expect([done, comment, rest]).toEqual(['data: [DONE]', ': x-saegate-applied=abort=p@1', '']);
  });

  it('falls back to the request id, the clock and the upstream model when it has no chunk or no readable body', () => {
    const body = abortResponseBody({ route: 'chat_completions', requestId: 'r2', body: Buffer.from('not json'), firstChunk: null, nowSeconds: 77 });
    expect(JSON.parse(body)).toEqual({
      id: 'saegate-r2',
      object: 'chat.completion',
      created: 77,
      model: '',
      choices: [{ index: 0, message: { role: 'assistant', content: '' }, logprobs: null, finish_reason: 'content_filter' }],
    });
    const fromChunk = JSON.parse(abortResponseBody({ route: 'completions', requestId: 'r3', body: null, firstChunk: upstreamChunk, nowSeconds: 1 })) as { model: string };
    expect(fromChunk.model).toBe('m');
  });
});

describe('SSE event boundaries', () => {
  const after = (text: string, tail = 0x0a0a): number => pushTail(tail, Buffer.from(text));

  it('knows whether a stream stands between events, LF or CRLF, across chunk splits', () => {
    expect(endsEvent(0x0a0a)).toBe(true); // the start of a stream
    expect(endsEvent(after('data: x\n\n'))).toBe(true);
    expect(endsEvent(after('data: x\r\n\r\n'))).toBe(true);
    expect(endsEvent(after('data: x\n'))).toBe(false);
    expect(endsEvent(after('data: x'))).toBe(false);
    expect(endsEvent(after('\n', after('data: x\n')))).toBe(true); // the blank line in its own chunk
    expect(endsEvent(after('\n', after('data: x\r\n\r')))).toBe(true);
  });

  it('finds the end of the event in progress in the next chunk', () => {
    expect(eventEnd(after('data: {"a"'), Buffer.from(':1}\n\ndata: more\n\n'))).toBe(5);
    expect(eventEnd(after('data: {"a"'), Buffer.from(':1}\r\n\r\ndata: more'))).toBe(7);
    expect(eventEnd(after('data: x\n'), Buffer.from('\ndata: y\n\n'))).toBe(1);
    expect(eventEnd(after('data: {"a"'), Buffer.from(':1}\n'))).toBe(-1);
  });
});
