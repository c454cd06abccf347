/**
 * A plain node:http server standing in for a model server in proxy tests: each test sets what it
 * answers (`stub.handle`), and the stub records every request it got, body bytes included, so a
 * test can check what saegate forwarded.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StubRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
  /** Resolves when the request's connection closed before the stub ended its response. */
  aborted: Promise<void>;
}

export type StubHandler = (request: StubRequest, res: http.ServerResponse) => void;

export interface StubUpstream {
  url: string;
  server: http.Server;
  requests: StubRequest[];
  /** What the stub answers; replace per test. Default: 200 `{}`. */
  handle: StubHandler;
  close(): Promise<void>;
}

export async function startStub(): Promise<StubUpstream> {
  const stub: StubUpstream = {
    url: '',
    server: http.createServer(),
    requests: [],
    handle: (_request, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    },
    close: () =>
      new Promise<void>((resolve) => {
        stub.server.closeAllConnections();
        stub.server.close(() => resolve());
      }),
  };
  stub.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const aborted = new Promise<void>((resolve) => {
        res.on('close', () => {
          if (!res.writableFinished) resolve();
        });
      });
      const request: StubRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks), aborted };
      stub.requests.push(request);
      stub.handle(request, res);
    });
  });
  await new Promise<void>((resolve) => stub.server.listen(0, '127.0.0.1', resolve));
  stub.url = `http://127.0.0.1:${(stub.server.address() as AddressInfo).port}`;
  return stub;
}

/** An SSE chunk in OpenAI's shape. */
export function sseChunk(text: string, index = 0): string {
  return `data: ${JSON.stringify({ id: 'cmpl-stub', object: 'text_completion', created: 1, model: 'stub', choices: [{ index, text, finish_reason: null }] })}\n\n`;
}

/** Reads a fetch Response body to the end as text, or the error that ended it. */
export async function readBody(response: Response): Promise<{ text: string; error: Error | null }> {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    return { text, error: null };
  } catch (error) {
    return { text, error: error as Error };
  }
}
