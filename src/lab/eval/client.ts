/**
 * The HTTP side of `eval steer`: completions and prompt log-probabilities from the reference model
 * server (or any server that takes its per-request `steering` body field and answers
 * `echo` + `logprobs` with `max_tokens: 0`; docs/model-server.md). Steering goes in the body, so
 * nothing here needs the tap; a request id (`x-request-id`) lets a conditional evaluation find the
 * rows the in-process engine computed for the request (condition.ts). Answers are checked with zod; a failure names the upstream and what
 * the request was for.
 */
import { Agent, request } from 'undici';
import { z } from 'zod';
import { err, SaegateError } from '../../common/errors.js';
import { describeUpstreamError } from '../../proxy/errors.js';
import { completionsUrl, parseFailure } from '../collect/upstream.js';

/** One entry of the body's `steering` field: `+ scale × vector` at `hook` over `positions`. */
export interface SteeringEntry {
  hook: string;
  scale: number;
  vector: Float32Array;
  /**
   * Token positions steered. `all` (the default) includes the prompt; `{from, until}` steers
   * absolute positions [from, until) (0 = BOS; no `until` = to the end), as a conditional rule that
   * fired at `from − 1` does.
   */
  positions: 'all' | 'prompt' | 'generated' | { from: number; until?: number };
}

/** A completion request's sampling. */
export interface GenerateRequest {
  prompt: string;
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  seed: number;
  steering: readonly SteeringEntry[];
  /** Sent as `x-request-id` (the engine's request id, which tap rows carry). Default: the server's own. */
  requestId?: string;
}

const completionSchema = z.object({ choices: z.array(z.object({ text: z.string() })).min(1) });
const logprobsSchema = z.object({
  choices: z.array(z.object({ logprobs: z.object({ token_logprobs: z.array(z.number().nullable()) }) })).min(1),
});

export interface EvalClientOptions {
  /** Base URL of the model server, with or without `/v1`. */
  upstream: string;
  /** The `model` of every request. */
  model: string;
  /** Sockets at most (requests in flight). */
  connections: number;
  signal?: AbortSignal;
}

export class EvalClient {
  private readonly url: string;
  private readonly agent: Agent;
  /** Vectors serialised once: every request of a setting sends the same numbers. */
  private readonly vectorJson = new WeakMap<Float32Array, number[]>();

  constructor(private readonly options: EvalClientOptions) {
    this.url = completionsUrl(options.upstream);
    this.agent = new Agent({ connections: options.connections });
  }

  private steeringField(steering: readonly SteeringEntry[]): unknown[] {
    return steering.map((s) => {
      let values = this.vectorJson.get(s.vector);
      if (values === undefined) {
        values = Array.from(s.vector);
        this.vectorJson.set(s.vector, values);
      }
      return { hook: s.hook, scale: s.scale, positions: s.positions, vector: values };
    });
  }

  private async post(body: Record<string, unknown>, label: string, requestId?: string): Promise<unknown> {
    let status: number;
    let text: string;
    try {
      const response = await request(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(requestId !== undefined && { 'x-request-id': requestId }) },
        body: JSON.stringify({ model: this.options.model, ...body }),
        signal: this.options.signal,
        dispatcher: this.agent,
      });
      status = response.statusCode;
      text = await response.body.text();
    } catch (error) {
      if (this.options.signal?.aborted) throw this.options.signal.reason;
      if (error instanceof SaegateError) throw error;
      throw err('SAEGATE_ERR_EVAL_UPSTREAM', this.options.upstream, label, `no response: ${describeUpstreamError(error)}`);
    }
    if (status !== 200) {
      const failure = parseFailure(status, text);
      throw err('SAEGATE_ERR_EVAL_UPSTREAM', this.options.upstream, label, `HTTP ${status}${failure.code === null ? '' : ` ${failure.code}`}: ${failure.message}`);
    }
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw err('SAEGATE_ERR_EVAL_UPSTREAM', this.options.upstream, label, `the answer is not JSON: ${text.slice(0, 200)}`);
    }
  }

  private parse<T>(schema: z.ZodType<T>, value: unknown, label: string): T {
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw err('SAEGATE_ERR_EVAL_UPSTREAM', this.options.upstream, label, `unexpected answer: ${parsed.error.issues[0]?.message ?? 'invalid'} at ${parsed.error.issues[0]?.path.join('.') ?? ''}`);
    return parsed.data;
  }

  /** The completion's text (without the prompt). `label` names the request in errors. */
  async generate(req: GenerateRequest, label: string): Promise<string> {
    const body = {
      prompt: req.prompt,
      max_tokens: req.maxTokens,
      temperature: req.temperature,
      seed: req.seed,
      ...(req.steering.length > 0 && { steering: this.steeringField(req.steering) }),
    };
    return this.parse(completionSchema, await this.post(body, label, req.requestId), label).choices[0].text;
  }

  /** log p(token i | tokens before it) for every prompt token that has a prediction (BOS has none). */
  async promptLogprobs(prompt: string, steering: readonly SteeringEntry[], label: string, requestId?: string): Promise<number[]> {
    const body = { prompt, max_tokens: 0, echo: true, logprobs: 0, ...(steering.length > 0 && { steering: this.steeringField(steering) }) };
    const answer = this.parse(logprobsSchema, await this.post(body, label, requestId), label);
    return answer.choices[0].logprobs.token_logprobs.filter((x): x is number => x !== null);
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
