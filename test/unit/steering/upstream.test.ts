/**
 * The body-field backends of `--upstream-steering` against each server's documented request
 * format: the reference server's own zod schema, and zod schemas written from EasySteer's and
 * vLLM's documentation (checked first against an example copied from those docs, in
 * test/fixtures/upstream-steering/, so a schema that refuses the documented example fails here).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { steeringEntrySchema } from '../../../src/model/http/schemas.js';
import { readVectorFile } from '../../../src/steering/formats.js';
import { createBodySteeringBackend, termProblem, VLLM_XARGS_KEY, type VllmXargsPlan } from '../../../src/steering/upstream.js';
import { vectorId } from '../../../src/tap/codec.js';
import type { SteeringTerm } from '../../../src/tap/host.js';
import { expectSaegateError } from '../../helpers/errors.js';

const FIXTURES = path.resolve(import.meta.dirname, '..', '..', 'fixtures', 'upstream-steering');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-upstream-steering-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function fixture(name: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, name), 'utf8')) as Record<string, unknown>;
}

/** Values that are not round numbers, so a float32 → JSON → float32 slip would show. */
function direction(seed: number, width = 16): Float32Array {
  return Float32Array.from({ length: width }, (_, i) => Math.sin(seed * 1.3 + i * 0.77) / 3);
}

function term(hook: string, vector: Float32Array, scale = 2.5, fromPosition = 0, untilPosition: number | null = null): SteeringTerm {
  return { hook, vector, scale, fromPosition, untilPosition };
}

// --- EasySteer, from docs/user-guide/steering.md and openai-server.md (github.com/ZJU-REAL/EasySteer @ 3e242a6) ---
const easySteerApply = z
  .object({
    prompt: z.literal('all').optional(),
    generation: z.literal('all').optional(),
    prompt_tokens: z.array(z.int().min(0)).optional(),
    prompt_positions: z.array(z.int()).optional(),
    prompt_window: z.tuple([z.int(), z.int().nullable()]).optional(),
    generation_tokens: z.array(z.int().min(0)).optional(),
    generation_positions: z.array(z.int().min(0)).optional(),
    generation_window: z.tuple([z.int().min(0), z.int().nullable()]).optional(),
  })
  .strict();
const easySteerVector = z
  .object({
    source: z.string().min(1).optional(),
    data: z.record(z.string(), z.unknown()).optional(),
    algorithm: z.enum(['direct', 'attention_add', 'linear', 'loreft', 'lm_steer', 'erase', 'replace', 'concept_replace', 'moe_router']).default('direct'),
    scale: z.number().default(1),
    layers: z.array(z.int().min(0)).nullable().optional(),
    normalize: z.boolean().default(false),
    apply: easySteerApply,
    params: z.record(z.string(), z.unknown()).optional(),
    name: z.string().nullable().optional(),
  })
  .strict()
  .refine((v) => (v.source === undefined) !== (v.data === undefined), 'exactly one of source and data');
const easySteerSpec = z.object({ vectors: z.array(easySteerVector).min(1), conflict: z.enum(['priority', 'sequential', 'error']).optional(), debug: z.boolean().optional() }).strict();
const easySteerRequest = z.looseObject({ model: z.string(), steering: z.union([easySteerSpec, z.literal(false), z.null()]).optional() });

// --- vLLM, from docs.vllm.ai features/custom_arguments and the OpenAI request models' `vllm_xargs` type ---
const vllmRequest = z.looseObject({ model: z.string(), vllm_xargs: z.record(z.string(), z.union([z.string(), z.number()])).optional() });

const HOOK = 'blocks.6.hook_resid_post';

describe('reference backend', () => {
  const backend = createBodySteeringBackend('reference');

  it("writes entries the reference server's own schema accepts, with bit-exact float32 values after JSON", () => {
    const vector = direction(1);
    const wire = JSON.parse(backend.serialize({ model: 'm', prompt: 'p' }, [term(HOOK, vector, 3, 2, 9)])) as { steering: unknown[]; prompt: string };
    expect(wire.prompt).toBe('p');
    const entries = z.array(steeringEntrySchema).parse(wire.steering);
    expect(entries).toEqual([{ hook: HOOK, vector: expect.any(Array), scale: 3, positions: { from: 2, until: 9 } }]);
    expect(Float32Array.from(entries[0].vector)).toEqual(vector);
  });

  it("keeps the client's own steering entries and appends the plan's", () => {
    const own = { layer: 1, vector: [1, 2], scale: 1 };
    const body = JSON.parse(backend.serialize({ model: 'm', steering: [own] }, [term(HOOK, direction(2))])) as { steering: unknown[] };
    expect(body.steering[0]).toEqual(own);
    expect(body.steering).toHaveLength(2);
  });

  it('keeps every other field as it was, nested fields of the same name included, and handles an empty body', () => {
    const body = { model: 'm', messages: [{ role: 'user', content: 'x', steering: 'nested' }], n: 1, logit_bias: { '5': -1 } };
    const out = JSON.parse(backend.serialize(body, [term(HOOK, direction(11))])) as Record<string, unknown>;
    expect({ ...out, steering: undefined }).toEqual({ ...body, steering: undefined });
    expect(Object.keys(out)).toEqual(['model', 'messages', 'n', 'logit_bias', 'steering']);
    expect(body).not.toHaveProperty('steering');
    expect(Object.keys(JSON.parse(backend.serialize({}, [term(HOOK, direction(11))])) as object)).toEqual(['steering']);
  });

  it('refuses a client steering field that is not an array', () => {
    expectSaegateError(() => backend.serialize({ model: 'm', steering: { x: 1 } }, [term(HOOK, direction(3))]), 'SAEGATE_ERR_STEERING', "'steering'", 'not an array');
  });
});

describe('easysteer backend', () => {
  const vectorDir = path.join(dir, 'vectors');
  const backend = createBodySteeringBackend('easysteer', { vectorDir });

  it('the schema written from the docs accepts the documented example (fixture)', () => {
    expect(easySteerRequest.safeParse(fixture('easysteer-openai-server.json')).success).toBe(true);
    expect(easySteerRequest.safeParse({ model: 'm', steering: { vectors: [{ source: 'a.gguf', apply: {}, bogus: 1 }] } }).success).toBe(false);
  });

  it('writes a SteeringSpec of direct GGUF sources that the documented schema accepts, exporting each direction once', () => {
    const vector = direction(4);
    const body = fixture('easysteer-openai-server.json');
    delete body.steering;
    const parsed = easySteerRequest.parse(JSON.parse(backend.serialize(body, [term(HOOK, vector, 4)])));
    expect(parsed.messages).toEqual(body.messages);
    const spec = parsed.steering as z.infer<typeof easySteerSpec>;
    expect(spec.vectors).toHaveLength(1);
    expect(spec.conflict).toBeUndefined();
    const [v] = spec.vectors;
    expect(v).toMatchObject({ algorithm: 'direct', scale: 4, layers: [6], normalize: false, apply: { prompt: 'all', generation: 'all' } });
    expect(path.dirname(v.source as string)).toBe(path.resolve(vectorDir));
    // The file is llama.cpp/EasySteer GGUF direction.6, read back to the same values at the hook.
    const file = readVectorFile(v.source as string);
    expect([...file.hooks.keys()]).toEqual([HOOK]);
    expect(file.hooks.get(HOOK)).toEqual(vector);
    const mtime = fs.statSync(v.source as string).mtimeMs;
    const again = JSON.parse(backend.serialize({ model: 'm' }, [term(HOOK, vector, 1)])) as Record<string, unknown>;
    expect((again.steering as { vectors: { source: string }[] }).vectors[0].source).toBe(v.source);
    expect(fs.statSync(v.source as string).mtimeMs).toBe(mtime);
  });

  it('stacks several terms with conflict "sequential" (saegate terms add up)', () => {
    const body = JSON.parse(backend.serialize({ model: 'm' }, [term(HOOK, direction(5)), term('blocks.2.hook_resid_post', direction(6), -1)])) as Record<string, unknown>;
    const spec = easySteerSpec.parse(body.steering);
    expect(spec.conflict).toBe('sequential');
    expect(spec.vectors.map((v) => v.layers)).toEqual([[6], [2]]);
    expect(spec.vectors[0].source).not.toBe(spec.vectors[1].source);
  });

  it.each([
    ['a spec of its own', { vectors: [] }, 'a SteeringSpec of its own'],
    ['false', false, 'steering explicitly off'],
  ])("refuses a client steering field (%s) instead of guessing how EasySteer's conflict policy combines them", (_name, steering, fragment) => {
    expectSaegateError(() => backend.serialize({ model: 'm', steering }, [term(HOOK, direction(7))]), 'SAEGATE_ERR_STEERING', fragment);
  });

  it('refuses terms EasySteer cannot express, naming why', () => {
    expectSaegateError(() => backend.serialize({ model: 'm' }, [term('blocks.6.hook_resid_pre', direction(8))]), 'SAEGATE_ERR_STEERING', 'hook_resid_pre');
    expect(termProblem('easysteer', { hook: 'blocks.0.hook_resid_post', fromPosition: 0, untilPosition: null })).toMatch(/no layer 0/);
    expect(termProblem('easysteer', { hook: HOOK, fromPosition: 3, untilPosition: null })).toMatch(/only positions 'all'/);
    expect(termProblem('easysteer', { hook: HOOK, fromPosition: 0, untilPosition: null })).toBeNull();
    expect(termProblem('reference', { hook: 'hook_embed', fromPosition: 3, untilPosition: 5 })).toBeNull();
  });

  it('refuses to start without a vector directory, or with one it cannot write', () => {
    expectSaegateError(() => createBodySteeringBackend('easysteer'), 'SAEGATE_ERR_CONFIG', 'upstreamSteeringVectorDir');
    const file = path.join(dir, 'a-file');
    fs.writeFileSync(file, '');
    expectSaegateError(() => createBodySteeringBackend('easysteer', { vectorDir: file }), 'SAEGATE_ERR_CONFIG', file);
  });
});

describe('vllm-xargs backend', () => {
  const backend = createBodySteeringBackend('vllm-xargs');

  it("keeps the documented example's own vllm_xargs and adds one string key the documented type accepts", () => {
    const fromDocs = fixture('vllm-custom-arguments.json');
    expect(vllmRequest.safeParse(fromDocs).success).toBe(true);
    const vector = direction(9, 40);
    const parsed = vllmRequest.parse(JSON.parse(backend.serialize(fromDocs, [term(HOOK, vector, -2, 1, 7), term('hook_embed', vector, 0.5)])));
    expect(parsed.prompt).toBe(fromDocs.prompt);
    expect(Object.keys(parsed.vllm_xargs ?? {})).toEqual(['your_custom_arg', VLLM_XARGS_KEY]);
    expect(parsed.vllm_xargs?.your_custom_arg).toBe(67);
    const plan = JSON.parse(parsed.vllm_xargs?.[VLLM_XARGS_KEY] as string) as VllmXargsPlan;
    expect(plan.version).toBe(1);
    expect(plan.terms.map(({ vectorF32Base64: _omit, ...rest }) => rest)).toEqual([
      { hook: HOOK, layer: 6, scale: -2, from: 1, until: 7, id: vectorId(vector), dModel: 40 },
      { hook: 'hook_embed', layer: null, scale: 0.5, from: 0, until: null, id: vectorId(vector), dModel: 40 },
    ]);
    const bytes = Buffer.from(plan.terms[0].vectorF32Base64, 'base64');
    expect(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)).toEqual(vector);
  });

  it('creates vllm_xargs when absent and refuses a client value under its key', () => {
    const body = JSON.parse(backend.serialize({ model: 'm' }, [term(HOOK, direction(10))])) as Record<string, unknown>;
    expect(Object.keys(body.vllm_xargs as object)).toEqual([VLLM_XARGS_KEY]);
    expectSaegateError(() => backend.serialize({ model: 'm', vllm_xargs: { [VLLM_XARGS_KEY]: 'x' } }, [term(HOOK, direction(10))]), 'SAEGATE_ERR_STEERING', `vllm_xargs.${VLLM_XARGS_KEY}`);
    expectSaegateError(() => backend.serialize({ model: 'm', vllm_xargs: [1] }, [term(HOOK, direction(10))]), 'SAEGATE_ERR_STEERING', 'not an object');
  });
});
