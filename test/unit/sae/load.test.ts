import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeSafetensors, type SafetensorsWriteTensor } from '../../../src/common/safetensors.js';
import { bindSaeToModel, describeSae, loadSae } from '../../../src/sae/load.js';
import type { SaeArchitecture } from '../../../src/sae/types.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { makeTempDir, removeTempDir } from '../../helpers/fixtures.js';
import { seededUniform } from '../../../src/common/random.js';

const D_IN = 6;
const D_SAE = 10;

/** Uniforms in [-0.5, 0.5) from a seed: deterministic weights so a failure reproduces. */
function seeded(seed: number): () => number {
  const uniform = seededUniform(seed);
  return () => uniform() - 0.5;
}

function randomArray(length: number, seed: number): Float32Array {
  const next = seeded(seed);
  return Float32Array.from({ length }, () => next());
}

type Dtype = SafetensorsWriteTensor['dtype'];

/** The tensors each SAELens architecture stores, with their shapes. */
function saelensTensorShapes(architecture: SaeArchitecture): Record<string, number[]> {
  const shapes: Record<string, number[]> = { W_enc: [D_IN, D_SAE], W_dec: [D_SAE, D_IN], b_dec: [D_IN] };
  if (architecture !== 'gated') shapes.b_enc = [D_SAE];
  if (architecture === 'jumprelu') shapes.threshold = [D_SAE];
  if (architecture === 'gated') Object.assign(shapes, { b_gate: [D_SAE], r_mag: [D_SAE], b_mag: [D_SAE] });
  return shapes;
}

function makeTensors(shapes: Record<string, number[]>, dtype: Dtype): Record<string, SafetensorsWriteTensor> {
  const tensors: Record<string, SafetensorsWriteTensor> = {};
  Object.entries(shapes).forEach(([name, shape], i) => {
    const data = randomArray(shape.reduce((a, b) => a * b, 1), 1000 + i);
    // Thresholds are positive in real files.
    tensors[name] = { dtype, shape, data: name === 'threshold' ? data.map(Math.abs) : data };
  });
  return tensors;
}

interface SaelensFixture {
  architecture?: SaeArchitecture | string;
  dtype?: Dtype;
  /** 'flat' (pre-v6) or 'v6' (model/hook fields under `metadata`). */
  layout?: 'flat' | 'v6';
  cfg?: Record<string, unknown>;
  /** Replace (or, with null, drop) tensors. */
  tensors?: Record<string, SafetensorsWriteTensor | null>;
}

function writeSaelens(dir: string, fixture: SaelensFixture = {}): Record<string, SafetensorsWriteTensor> {
  const architecture = fixture.architecture ?? 'standard';
  const known = ['standard', 'topk', 'jumprelu', 'gated'].includes(architecture) ? (architecture as SaeArchitecture) : 'standard';
  const tensors = makeTensors(saelensTensorShapes(known), fixture.dtype ?? 'F32');
  for (const [name, tensor] of Object.entries(fixture.tensors ?? {})) {
    if (tensor === null) delete tensors[name];
    else tensors[name] = tensor;
  }
  const described = { model_name: 'tiny-llama', hook_name: 'blocks.1.hook_resid_post', prepend_bos: true, context_size: 128 };
  const core: Record<string, unknown> = {
    architecture,
    d_in: D_IN,
    d_sae: D_SAE,
    dtype: 'float32',
    apply_b_dec_to_input: false,
    normalize_activations: 'none',
    ...(architecture === 'topk' ? { activation_fn_kwargs: { k: 3 } } : {}),
  };
  const cfg = fixture.layout === 'v6' ? { ...core, metadata: { ...described, sae_lens_version: '6.5.0' } } : { ...core, ...described };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'cfg.json'), JSON.stringify({ ...cfg, ...fixture.cfg }));
  writeSafetensors(path.join(dir, 'sae_weights.safetensors'), tensors);
  return tensors;
}

function writeSparsify(dir: string, options: { cfg?: Record<string, unknown>; tensors?: Record<string, SafetensorsWriteTensor | null> } = {}): Record<string, SafetensorsWriteTensor> {
  const tensors = makeTensors({ 'encoder.weight': [D_SAE, D_IN], 'encoder.bias': [D_SAE], W_dec: [D_SAE, D_IN], b_dec: [D_IN] }, 'F32');
  for (const [name, tensor] of Object.entries(options.tensors ?? {})) {
    if (tensor === null) delete tensors[name];
    else tensors[name] = tensor;
  }
  fs.mkdirSync(dir, { recursive: true });
  const cfg = { expansion_factor: 32, normalize_decoder: true, num_latents: D_SAE, k: 4, multi_topk: false, skip_connection: false, d_in: D_IN, ...options.cfg };
  fs.writeFileSync(path.join(dir, 'cfg.json'), JSON.stringify(cfg));
  writeSafetensors(path.join(dir, 'sae.safetensors'), tensors);
  return tensors;
}

/** What a value stored as `dtype` reads back as: exact for F32, within half-precision rounding otherwise. */
function expectStored(actual: Float32Array | null | undefined, written: SafetensorsWriteTensor): void {
  expect(actual).toBeInstanceOf(Float32Array);
  const values = written.data as Float32Array;
  expect(actual).toHaveLength(values.length);
  // Relative rounding of f16 (11-bit significand) and bf16 (8-bit); |w| < 0.5 so f16 stays normal above 2^-14.
  const tolerance = { F32: 0, F16: 2 ** -11, BF16: 2 ** -8 }[written.dtype];
  values.forEach((v, i) => expect(Math.abs((actual as Float32Array)[i] - v)).toBeLessThanOrEqual(Math.abs(v) * tolerance + (written.dtype === 'F16' ? 2 ** -24 : 0)));
}

let tmp: string;
beforeEach(() => {
  tmp = makeTempDir('saegate-sae-');
});
afterEach(() => {
  removeTempDir(tmp);
});

describe('loadSae: SAELens format', () => {
  describe.each(['standard', 'topk', 'jumprelu', 'gated'] as const)('%s architecture', (architecture) => {
    it('loads the config and every tensor exactly as written', () => {
      const dir = path.join(tmp, architecture);
      const written = writeSaelens(dir, { architecture });
      const sae = loadSae(dir);
      expect(sae.config).toEqual({
        architecture,
        format: 'saelens',
        dIn: D_IN,
        dSae: D_SAE,
        hookName: 'blocks.1.hook_resid_post',
        modelName: 'tiny-llama',
        applyBDecToInput: false,
        normalizeActivations: 'none',
        k: architecture === 'topk' ? 3 : null,
        scalingFactor: null,
        dtype: 'f32',
        source: dir,
      });
      expect(sae.W_enc).toEqual(written.W_enc.data);
      expect(sae.W_dec).toEqual(written.W_dec.data);
      expect(sae.b_dec).toEqual(written.b_dec.data);
      if (architecture === 'gated') {
        // Gated SAEs store no b_enc; the loader fills zeros so the field is always [d_sae].
        expect(sae.b_enc).toEqual(new Float32Array(D_SAE));
        expect(sae.gated?.b_gate).toEqual(written.b_gate.data);
        expect(sae.gated?.r_mag).toEqual(written.r_mag.data);
        expect(sae.gated?.b_mag).toEqual(written.b_mag.data);
      } else {
        expect(sae.b_enc).toEqual(written.b_enc.data);
        expect(sae.gated).toBeNull();
      }
      if (architecture === 'jumprelu') expect(sae.threshold).toEqual(written.threshold.data);
      else expect(sae.threshold).toBeNull();
    });
  });

  describe.each(['F16', 'BF16'] as const)('%s weights', (dtype) => {
    it('converts every tensor to f32 within the dtype rounding and records the file dtype', () => {
      const written = writeSaelens(tmp, { architecture: 'jumprelu', dtype });
      const sae = loadSae(tmp);
      expect(sae.config.dtype).toBe(dtype.toLowerCase());
      expectStored(sae.W_enc, written.W_enc);
      expectStored(sae.b_enc, written.b_enc);
      expectStored(sae.W_dec, written.W_dec);
      expectStored(sae.b_dec, written.b_dec);
      expectStored(sae.threshold, written.threshold);
      // Rounding happened: a half-precision file cannot hold these random f32 values exactly.
      expect(sae.W_enc).not.toEqual(written.W_enc.data);
    });
  });

  it('reads model and hook names nested under metadata in the v6 layout', () => {
    writeSaelens(tmp, { architecture: 'topk', layout: 'v6', cfg: { k: 5, activation_fn_kwargs: undefined } });
    const sae = loadSae(tmp);
    expect(sae.config.hookName).toBe('blocks.1.hook_resid_post');
    expect(sae.config.modelName).toBe('tiny-llama');
    expect(sae.config.k).toBe(5);
  });

  it('reads the pre-v6 hook_point spelling and defaults architecture, apply_b_dec_to_input and normalisation as SAELens does', () => {
    writeSaelens(tmp, { cfg: { architecture: undefined, hook_name: undefined, hook_point: 'blocks.0.hook_resid_pre', apply_b_dec_to_input: undefined, normalize_activations: undefined } });
    const { config } = loadSae(tmp);
    expect(config.architecture).toBe('standard');
    expect(config.hookName).toBe('blocks.0.hook_resid_pre');
    expect(config.applyBDecToInput).toBe(true);
    expect(config.normalizeActivations).toBe('none');
  });

  it.each([
    [true, 'expected_average_only_in'],
    [false, 'none'],
    ['constant_norm_rescale', 'constant_norm_rescale'],
    ['layer_norm', 'layer_norm'],
  ] as const)('maps normalize_activations %j to %s', (value, expected) => {
    writeSaelens(tmp, { cfg: { normalize_activations: value } });
    expect(loadSae(tmp).config.normalizeActivations).toBe(expected);
  });

  it('keeps the expected-average scaling factor the cfg carries', () => {
    writeSaelens(tmp, { cfg: { normalize_activations: 'expected_average_only_in', scaling_factor: 0.25 } });
    expect(loadSae(tmp).config.scalingFactor).toBe(0.25);
  });

  it('lets the caller override the hook name in the file', () => {
    writeSaelens(tmp);
    expect(loadSae(tmp, { hookName: 'blocks.3.hook_resid_post' }).config.hookName).toBe('blocks.3.hook_resid_post');
  });

  it('derives a JumpReLU threshold from log_threshold when the file has no threshold', () => {
    const logThreshold = randomArray(D_SAE, 7);
    writeSaelens(tmp, { architecture: 'jumprelu', tensors: { threshold: null, log_threshold: { dtype: 'F32', shape: [D_SAE], data: logThreshold } } });
    const threshold = loadSae(tmp).threshold as Float32Array;
    logThreshold.forEach((v, i) => expect(threshold[i]).toBeCloseTo(Math.exp(v), 6));
  });

  it('accepts an all-ones finetuning scaling_factor tensor, which changes nothing', () => {
    writeSaelens(tmp, { tensors: { scaling_factor: { dtype: 'F32', shape: [D_SAE], data: new Float32Array(D_SAE).fill(1) } } });
    expect(loadSae(tmp).config.dSae).toBe(D_SAE);
  });
});

describe('loadSae: sparsify format', () => {
  it('loads a TopK SAE and transposes encoder.weight [d_sae, d_in] into W_enc [d_in, d_sae]', () => {
    const dir = path.join(tmp, 'layers.6');
    const written = writeSparsify(dir);
    const sae = loadSae(dir);
    expect(sae.config).toEqual({
      architecture: 'topk',
      format: 'sparsify',
      dIn: D_IN,
      dSae: D_SAE,
      hookName: 'blocks.6.hook_resid_post',
      modelName: null,
      applyBDecToInput: true,
      normalizeActivations: 'none',
      k: 4,
      scalingFactor: null,
      dtype: 'f32',
      source: dir,
    });
    const encoder = written['encoder.weight'].data as Float32Array;
    for (let latent = 0; latent < D_SAE; latent++) {
      for (let i = 0; i < D_IN; i++) expect(sae.W_enc[i * D_SAE + latent]).toBe(encoder[latent * D_IN + i]);
    }
    expect(sae.b_enc).toEqual(written['encoder.bias'].data);
    expect(sae.W_dec).toEqual(written.W_dec.data);
    expect(sae.b_dec).toEqual(written.b_dec.data);
  });

  it('takes d_in from the tensor shapes and d_sae from d_in × expansion_factor when the cfg gives neither', () => {
    const dir = path.join(tmp, 'layers.2.mlp');
    const expansion = D_SAE / 2;
    const shapes = { 'encoder.weight': [D_SAE, 2], 'encoder.bias': [D_SAE], W_dec: [D_SAE, 2], b_dec: [2] };
    writeSparsify(dir, { cfg: { d_in: undefined, num_latents: 0, expansion_factor: expansion }, tensors: makeTensors(shapes, 'F32') });
    const { config } = loadSae(dir);
    expect(config.dIn).toBe(2);
    expect(config.dSae).toBe(D_SAE);
    expect(config.hookName).toBe('blocks.2.hook_mlp_out');
  });

  it('uses the hook name the caller passes for a directory that does not name a layer', () => {
    const dir = path.join(tmp, 'my-sae');
    writeSparsify(dir);
    expect(loadSae(dir, { hookName: 'blocks.0.hook_resid_post' }).config.hookName).toBe('blocks.0.hook_resid_post');
  });

  it('refuses a directory that names no layer when no hook name is passed', () => {
    const dir = path.join(tmp, 'my-sae');
    writeSparsify(dir);
    expectSaegateError(() => loadSae(dir), 'SAEGATE_ERR_SAE_FILE', dir, "'my-sae'", 'pass the hook name');
  });

  it('refuses a transcoder', () => {
    const dir = path.join(tmp, 'layers.1');
    writeSparsify(dir, { cfg: { transcode: true } });
    expectSaegateError(() => loadSae(dir), 'SAEGATE_ERR_SAE_FILE', path.join(dir, 'cfg.json'), 'transcode');
  });

  it('refuses an encoder whose shape does not match the cfg', () => {
    const dir = path.join(tmp, 'layers.1');
    writeSparsify(dir, { cfg: { num_latents: D_SAE + 2 } });
    expectSaegateError(() => loadSae(dir), 'SAEGATE_ERR_SAE_FILE', path.join(dir, 'sae.safetensors'), "'encoder.weight'", `[${D_SAE}, ${D_IN}]`, `expected [${D_SAE + 2}, ${D_IN}]`);
  });
});

describe('loadSae: bad inputs', () => {
  const cfgFile = (): string => path.join(tmp, 'cfg.json');
  const weightsFile = (): string => path.join(tmp, 'sae_weights.safetensors');

  it('names the directory when it holds neither weights file', () => {
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', tmp, 'sae_weights.safetensors', 'sae.safetensors');
  });

  it('names the directory when it does not exist', () => {
    const missing = path.join(tmp, 'nope');
    expectSaegateError(() => loadSae(missing), 'SAEGATE_ERR_SAE_FILE', missing, 'does not exist');
  });

  it('names cfg.json when it is missing', () => {
    writeSaelens(tmp);
    fs.rmSync(cfgFile());
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', cfgFile(), 'cannot read');
  });

  it('names cfg.json when it is not JSON', () => {
    writeSaelens(tmp);
    fs.writeFileSync(cfgFile(), '{"d_in": 6,');
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', cfgFile(), 'not valid JSON');
  });

  it('names the field when a cfg value has the wrong type', () => {
    writeSaelens(tmp, { cfg: { d_sae: 'ten' } });
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', cfgFile(), "field 'd_sae'");
  });

  it('names an unknown architecture and lists the supported ones', () => {
    writeSaelens(tmp, { architecture: 'batchtopk_matryoshka' });
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', cfgFile(), "architecture 'batchtopk_matryoshka'", 'standard, topk, jumprelu, gated');
  });

  it('names an unknown normalize_activations value', () => {
    writeSaelens(tmp, { cfg: { normalize_activations: 'sqrt_d_model' } });
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', cfgFile(), "normalize_activations 'sqrt_d_model'", 'layer_norm');
  });

  it('refuses a TopK SAE without k', () => {
    writeSaelens(tmp, { architecture: 'topk', cfg: { activation_fn_kwargs: {} } });
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', cfgFile(), "'topk' needs 'k'");
  });

  it('refuses a cfg without a hook name', () => {
    writeSaelens(tmp, { cfg: { hook_name: undefined } });
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', cfgFile(), "'hook_name' is missing");
  });

  it.each([
    ['standard', 'b_enc'],
    ['jumprelu', 'threshold'],
    ['gated', 'r_mag'],
    ['standard', 'W_dec'],
  ] as const)('names the missing tensor (%s SAE without %s)', (architecture, tensor) => {
    writeSaelens(tmp, { architecture, tensors: { [tensor]: null } });
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', weightsFile(), `missing tensor '${tensor}'`);
  });

  it.each([
    ['W_enc', [D_SAE, D_IN], `[${D_IN}, ${D_SAE}]`],
    ['W_dec', [D_IN, D_SAE], `[${D_SAE}, ${D_IN}]`],
    ['b_enc', [D_SAE + 1], `[${D_SAE}]`],
    ['b_dec', [1, D_IN], `[${D_IN}]`],
  ] as const)('names the tensor, its shape and the expected shape when %s is %j', (tensor, shape, expected) => {
    const data = randomArray(shape.reduce((a, b) => a * b, 1), 3);
    writeSaelens(tmp, { tensors: { [tensor]: { dtype: 'F32', shape: [...shape], data } } });
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', weightsFile(), `'${tensor}'`, `shape [${shape.join(', ')}]`, `expected ${expected}`);
  });

  it.each([NaN, Infinity])('names the tensor holding a non-finite weight (%s)', (bad) => {
    const data = randomArray(D_SAE * D_IN, 4);
    data[17] = bad;
    writeSaelens(tmp, { tensors: { W_dec: { dtype: 'F32', shape: [D_SAE, D_IN], data } } });
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', weightsFile(), "tensor 'W_dec'", 'non-finite', 'index 17');
  });

  it('refuses a finetuning scaling_factor that is not all ones', () => {
    writeSaelens(tmp, { tensors: { scaling_factor: { dtype: 'F32', shape: [D_SAE], data: new Float32Array(D_SAE).fill(2) } } });
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAE_FILE', weightsFile(), 'scaling_factor');
  });

  it('reports a truncated weights file as a safetensors error naming it', () => {
    writeSaelens(tmp);
    const bytes = fs.readFileSync(weightsFile());
    fs.writeFileSync(weightsFile(), bytes.subarray(0, bytes.length - 8));
    expectSaegateError(() => loadSae(tmp), 'SAEGATE_ERR_SAFETENSORS', weightsFile());
  });
});

describe('bindSaeToModel', () => {
  const hookPoints = ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post', 'blocks.1.hook_resid_pre', 'blocks.1.hook_resid_post'];

  it('binds an SAE whose width and hook match the model', () => {
    writeSaelens(tmp);
    const sae = loadSae(tmp);
    const bound = bindSaeToModel(sae, { dModel: D_IN, hookPoints });
    expect(bound.hookPoint).toBe('blocks.1.hook_resid_post');
    expect(bound.sae).toBe(sae);
  });

  it("refuses an SAE whose d_in differs from the model's d_model, naming both", () => {
    writeSaelens(tmp);
    expectSaegateError(() => bindSaeToModel(loadSae(tmp), { dModel: 64, hookPoints }), 'SAEGATE_ERR_SAE_FILE', tmp, `d_in ${D_IN}`, 'd_model 64');
  });

  it('refuses an SAE whose hook the model lacks, listing the hooks it has', () => {
    writeSaelens(tmp, { cfg: { hook_name: 'blocks.7.hook_resid_post' } });
    expectSaegateError(() => bindSaeToModel(loadSae(tmp), { dModel: D_IN, hookPoints }), 'SAEGATE_ERR_SAE_FILE', "'blocks.7.hook_resid_post'", 'blocks.1.hook_resid_post');
  });
});

describe('describeSae', () => {
  it('summarises format, architecture, sizes, hook, model and preprocessing on separate lines', () => {
    writeSaelens(tmp, { architecture: 'topk', dtype: 'BF16', cfg: { apply_b_dec_to_input: true } });
    const lines = describeSae(loadSae(tmp)).split('\n');
    expect(lines).toContain(`source:                ${tmp}`);
    expect(lines).toContain('format:                saelens');
    expect(lines).toContain('architecture:          topk (k = 3)');
    expect(lines).toContain(`d_in × d_sae:          ${D_IN} × ${D_SAE}`);
    expect(lines).toContain('hook:                  blocks.1.hook_resid_post');
    expect(lines).toContain('model:                 tiny-llama');
    expect(lines).toContain('apply_b_dec_to_input:  true');
    expect(lines).toContain('normalize_activations: none');
    expect(lines.some((l) => l.startsWith('dtype in file:         bf16'))).toBe(true);
  });
});
