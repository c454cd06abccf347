/**
 * Backends without the tap (ARCHITECTURE.md, decision 7): model servers that take steering in a
 * per-request body field but stream no activations. Each backend is one strategy object that
 * writes a request plan's steering terms into a parsed request body, in that server's own format;
 * the proxy (src/proxy/upstream-steering.ts) parses and re-serialises the body around it.
 *
 * What a backend cannot do is said once, per term, by `termProblem`, so that policies are refused
 * when they load (src/policies/compile.ts) rather than failing requests one by one. None of them
 * can run conditional rules: those are evaluated on SAE results, and SAEs need the tap's rows.
 *
 * The formats, and where they are documented (docs/steering.md, "Servers without the tap"):
 * - `reference`: saegate's own model server, the body's `steering` array (src/model/http/schemas.ts,
 *   docs/model-server.md "Steering field"); vectors inline as JSON numbers.
 * - `easysteer`: EasySteer (github.com/ZJU-REAL/EasySteer, a vLLM fork), the body's `steering`
 *   object, a `SteeringSpec` of `vectors` (docs/user-guide/openai-server.md and
 *   docs/user-guide/steering.md, commit 3e242a6). A vector's `source` is a path *on the server* to a
 *   GGUF with `direction.<layer>` tensors (docs/api-reference/algorithms.md, "Native sources"), so
 *   saegate exports each direction once into `--upstream-steering-vector-dir` and refers to it.
 * - `vllm-xargs`: a vLLM plugin (a logits processor or model-runner extension the operator
 *   installs) reading `SamplingParams.extra_args`, which vLLM's OpenAI server fills from the body's
 *   `vllm_xargs` object (docs.vllm.ai/en/latest/features/custom_arguments/). vLLM types its values
 *   as strings or numbers (lists in newer releases only), so the plan travels as one JSON string
 *   under the key `saegate_steering`, vectors as base64 float32 little-endian.
 */
import fs from 'node:fs';
import path from 'node:path';
import { err, SaegateError } from '../common/errors.js';
import { writeAtomically } from '../common/json-file.js';
import { vectorId } from '../tap/codec.js';
import type { SteeringTerm } from '../tap/host.js';
import { toControlVectorGguf } from './formats.js';
import { hookLayer, makeSteeringVector } from './vector.js';

/** `--upstream-steering` values: how steering reaches the model server. */
export const upstreamSteeringModes = ['tap', 'none', 'reference', 'easysteer', 'vllm-xargs'] as const;
export type UpstreamSteeringMode = (typeof upstreamSteeringModes)[number];

/** The body-field modes: steering without activations. */
export type BodySteeringMode = Exclude<UpstreamSteeringMode, 'tap' | 'none'>;

/** True for the modes that write steering into the request body (no tap, so no activations). */
export function isBodySteeringMode(mode: UpstreamSteeringMode): mode is BodySteeringMode {
  return mode !== 'tap' && mode !== 'none';
}

/** The top-level body key each body mode writes. */
export const BODY_FIELD: Readonly<Record<BodySteeringMode, string>> = { reference: 'steering', easysteer: 'steering', 'vllm-xargs': 'vllm_xargs' };

/** The `vllm_xargs` key the vllm-xargs mode writes. */
export const VLLM_XARGS_KEY = 'saegate_steering';

/**
 * Why a steering term (a policy's steer at one hook, over a position range) cannot be expressed
 * by this mode, or null when it can. `tap` and `none` accept everything (the tap host checks
 * hooks against each connected server; `none` sends nothing).
 */
export function termProblem(mode: UpstreamSteeringMode, term: Pick<SteeringTerm, 'hook' | 'fromPosition' | 'untilPosition' | 'span'>): string | null {
  if (mode === 'reference' && term.span !== undefined && (term.fromPosition !== 0 || term.untilPosition !== null)) {
    return `the reference server's steering field takes positions '${term.span}' or an absolute {from, until}, not a window within '${term.span}'`;
  }
  if (mode !== 'easysteer') return null;
  const layer = hookLayer(term.hook);
  if (layer === undefined || !term.hook.endsWith('.hook_resid_post')) {
    return `EasySteer's direct algorithm adds to decoder-layer outputs (blocks.N.hook_resid_post), not '${term.hook}'`;
  }
  if (layer < 1) return `EasySteer vectors are exported as GGUF direction.N, which has no layer 0; '${term.hook}' cannot be sent`;
  if (term.span !== undefined) return `positions '${term.span}' are not sent to EasySteer yet; use positions 'all'`;
  if (term.fromPosition !== 0 || term.untilPosition !== null) {
    // EasySteer selects prompt positions and decode steps separately; saegate's absolute positions
    // would need the prompt's token count, which only the server knows.
    return `EasySteer takes prompt and generation selectors, not absolute positions; only positions 'all' can be sent (got {from: ${term.fromPosition}, until: ${term.untilPosition ?? 'null'}})`;
  }
  return null;
}

/** One backend: writes a plan's terms into a parsed JSON body. */
export interface BodySteeringBackend {
  readonly mode: BodySteeringMode;
  /**
   * The JSON text of `body` (a parsed top-level object, left as it was) with `terms` in the
   * server's field, which comes last. Throws SAEGATE_ERR_STEERING (400) when the client's body
   * already holds a value there that cannot be combined with them.
   */
  serialize(body: Readonly<Record<string, unknown>>, terms: readonly SteeringTerm[]): string;
}

/**
 * `body` as JSON with `key` replaced by the JSON text `valueJson`, spliced in last. Vectors are
 * large and the same from one request to the next: their JSON is made once (memo below) and
 * spliced, instead of JSON.stringify printing thousands of numbers per request (at d_model 4096
 * that alone was ~1 ms on the event loop; test/bench/upstream-steering.ts).
 */
function withField(body: Readonly<Record<string, unknown>>, key: string, valueJson: string): string {
  const others: Record<string, unknown> = { ...body };
  delete others[key];
  const rest = JSON.stringify(others);
  return `${rest.length === 2 ? '{' : `${rest.slice(0, -1)},`}${JSON.stringify(key)}:${valueJson}}`;
}

/** Options of {@link createBodySteeringBackend}. */
export interface BodySteeringOptions {
  /** easysteer: directory the GGUF files are written to, seen by the server at the same path. */
  vectorDir?: string | null;
}

/** The backend of a body mode. Throws SAEGATE_ERR_CONFIG when easysteer lacks a usable vector directory. */
export function createBodySteeringBackend(mode: BodySteeringMode, options: BodySteeringOptions = {}): BodySteeringBackend {
  if (mode === 'reference') return new ReferenceBackend();
  if (mode === 'vllm-xargs') return new VllmXargsBackend();
  const dir = options.vectorDir ?? null;
  if (dir === null) throw err('SAEGATE_ERR_CONFIG', 'upstreamSteeringVectorDir', "--upstream-steering easysteer needs --upstream-steering-vector-dir: EasySteer reads vectors from files on the server");
  return new EasySteerBackend(path.resolve(dir));
}

function conflict(field: string, detail: string): SaegateError {
  return new SaegateError('SAEGATE_ERR_STEERING', [`the request body already has '${field}' (${detail}); saegate writes that field for the policies that matched, so send the request without it`], { param: field });
}

/** Memoises a per-vector encoding: terms reuse one Float32Array per policy set (tap/host.ts says so). */
function memo<T>(encode: (values: Float32Array) => T): (values: Float32Array) => T {
  const cache = new WeakMap<Float32Array, T>();
  return (values) => {
    let value = cache.get(values);
    if (value === undefined) {
      value = encode(values);
      cache.set(values, value);
    }
    return value;
  };
}

/**
 * The reference server's `steering` array. Its entries add up in the engine, exactly as tap plan
 * terms do, so a client's own entries are kept and the plan's are appended after them.
 */
class ReferenceBackend implements BodySteeringBackend {
  readonly mode = 'reference' as const;
  // float32 → double is exact and JSON prints the shortest double that round-trips, so the server
  // rebuilds the same float32 values.
  private readonly vectorJson = memo((values) => JSON.stringify(Array.from(values)));

  serialize(body: Readonly<Record<string, unknown>>, terms: readonly SteeringTerm[]): string {
    const existing = body.steering;
    if (existing !== undefined && existing !== null && !Array.isArray(existing)) throw conflict('steering', 'not an array');
    const entries = Array.isArray(existing) ? existing.map((entry) => JSON.stringify(entry)) : [];
    for (const term of terms) {
      // A whole span is the reference server's own 'prompt'/'generated' (termProblem refuses windows in one).
      const positions = JSON.stringify(term.span ?? { from: term.fromPosition, until: term.untilPosition });
      entries.push(`{"hook":${JSON.stringify(term.hook)},"vector":${this.vectorJson(term.vector)},"scale":${JSON.stringify(term.scale)},"positions":${positions}}`);
    }
    return withField(body, 'steering', `[${entries.join(',')}]`);
  }
}

/**
 * EasySteer's `steering` SteeringSpec. One VectorSpec per term, `source` a GGUF exported once per
 * (hook, direction) under a content-hash name. Several vectors stack with `conflict: "sequential"`
 * (its default, "priority", would keep only the first at a position; saegate's terms add up), which
 * EasySteer serves when started with `--steer-multi-vector`. A client's own spec is refused: its
 * conflict policy would decide how the two combine.
 */
class EasySteerBackend implements BodySteeringBackend {
  readonly mode = 'easysteer' as const;
  private readonly files = new Map<string, string>();

  constructor(private readonly dir: string) {
    try {
      fs.mkdirSync(dir, { recursive: true });
      fs.accessSync(dir, fs.constants.W_OK);
    } catch (error) {
      throw err('SAEGATE_ERR_CONFIG', 'upstreamSteeringVectorDir', `${dir} is not a writable directory (${(error as Error).message})`);
    }
  }

  /** Path of the GGUF holding `values` at `hook`, written the first time it is needed. */
  vectorFile(hook: string, values: Float32Array): string {
    const id = `${hook}:${this.ids(values)}`;
    let file = this.files.get(id);
    if (file === undefined) {
      const layer = hookLayer(hook) ?? 0;
      file = path.join(this.dir, `saegate-${this.ids(values).slice(0, 32)}-L${layer}.gguf`);
      // The name is the content, so a file left by an earlier run (or another saegate) is reused.
      if (!fs.existsSync(file)) {
        const bytes = toControlVectorGguf(file, makeSteeringVector('<plan>', new Map([[hook, values]]), { method: 'manual' }));
        try {
          writeAtomically(file, (temp) => fs.writeFileSync(temp, bytes));
        } catch (error) {
          throw err('SAEGATE_ERR_CONFIG', 'upstreamSteeringVectorDir', `cannot write ${file}: ${(error as Error).message}`);
        }
      }
      this.files.set(id, file);
    }
    return file;
  }

  private readonly ids = memo(vectorId);

  serialize(body: Readonly<Record<string, unknown>>, terms: readonly SteeringTerm[]): string {
    const existing = body.steering;
    if (existing !== undefined && existing !== null) throw conflict('steering', existing === false ? 'false: steering explicitly off' : 'a SteeringSpec of its own');
    const vectors = terms.map((term) => {
      const problem = termProblem('easysteer', term);
      // Policies are checked when they load; a plan from elsewhere (a custom PlanResolver) is not.
      if (problem !== null) throw new SaegateError('SAEGATE_ERR_STEERING', [problem], { param: 'steering' });
      return {
        source: this.vectorFile(term.hook, term.vector),
        algorithm: 'direct',
        scale: term.scale,
        layers: [hookLayer(term.hook) as number],
        normalize: false,
        apply: { prompt: 'all', generation: 'all' },
      };
    });
    return withField(body, 'steering', JSON.stringify(vectors.length > 1 ? { vectors, conflict: 'sequential' } : { vectors }));
  }
}

/** The JSON carried in `vllm_xargs.saegate_steering` (docs/steering.md). */
export interface VllmXargsPlan {
  version: 1;
  terms: { hook: string; layer: number | null; scale: number; from: number; until: number | null; id: string; dModel: number; vectorF32Base64: string }[];
}

/** `vllm_xargs.saegate_steering`: the plan as one JSON string; other xargs keys are kept. */
class VllmXargsBackend implements BodySteeringBackend {
  readonly mode = 'vllm-xargs' as const;
  // Base64 needs no JSON escaping, inside the plan or inside the string that carries it.
  private readonly encoded = memo((values) => ({ id: vectorId(values), base64: Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64') }));

  serialize(body: Readonly<Record<string, unknown>>, terms: readonly SteeringTerm[]): string {
    const existing = body.vllm_xargs;
    if (existing !== undefined && existing !== null && (typeof existing !== 'object' || Array.isArray(existing))) throw conflict('vllm_xargs', 'not an object');
    const xargs = (existing ?? {}) as Record<string, unknown>;
    if (xargs[VLLM_XARGS_KEY] !== undefined) throw conflict(`vllm_xargs.${VLLM_XARGS_KEY}`, 'set by the client');
    // The plan's JSON (a VllmXargsPlan) is carried as a JSON string value, so it is written here
    // already escaped for that string: the small fields through JSON.stringify twice, the base64
    // (which needs no escaping at either level) spliced as it is.
    const planTerms = terms.map((term) => {
      const { id, base64 } = this.encoded(term.vector);
      const fields = JSON.stringify({ hook: term.hook, layer: hookLayer(term.hook) ?? null, scale: term.scale, from: term.fromPosition, until: term.untilPosition, ...(term.span !== undefined && { span: term.span }), id, dModel: term.vector.length });
      return `${JSON.stringify(fields.slice(0, -1)).slice(1, -1)},\\"vectorF32Base64\\":\\"${base64}\\"}`;
    });
    const planString = `"{\\"version\\":1,\\"terms\\":[${planTerms.join(',')}]}"`;
    return withField(body, 'vllm_xargs', withField(xargs, VLLM_XARGS_KEY, planString));
  }
}
