/**
 * Seeded random Llama weights for tests and benchmarks: any shape, no files, the same numbers for
 * the same seed and config on every machine.
 *
 * Initialisation follows what trained models look like rather than what training starts from
 * exactly: matrices N(0, 0.02) (Hugging Face's initializer_range), RMSNorm gains 1 + N(0, 0.05).
 * With those scales activations stay O(1) after each norm, attention is soft but not uniform, and
 * logits spread over a few units, so greedy decoding is well away from ties and float32 engines
 * agree with a float64 reference.
 */
import { err } from '../../common/errors.js';
import type { LayerWeights, ModelConfig, ModelWeights } from '../types.js';
import { architectureProblem } from './checks.js';

/** Re-exported so a synthetic model's weights and tokenizer come from one import. */
export { syntheticTokenizer } from '../tokenizer/synthetic.js';

/** Options of `syntheticWeights`: any ModelConfig field (defaults below) plus the seed. */
export interface SyntheticModelOptions extends Partial<ModelConfig> {
  /** PRNG seed; the same seed and config give bit-identical weights. */
  seed: number;
  /** Standard deviation of matrix entries. Default 0.02. */
  initStd?: number;
}

/** Defaults: a small 2-layer model (d_model 64, 4 heads, vocab 512, context 256). */
export const syntheticDefaults: Readonly<ModelConfig> = {
  dim: 64,
  hiddenDim: 176,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 4,
  vocabSize: 512,
  maxSeqLen: 256,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropeStyle: 'interleaved',
  tiedEmbeddings: true,
};

/** mulberry32 seeded through splitmix32: tiny, fast, and good enough to look like noise. */
class Random {
  #state: number;

  constructor(seed: number) {
    // splitmix32 scrambles small consecutive seeds into unrelated starting states.
    let z = (seed + 0x9e3779b9) | 0;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    this.#state = (z ^ (z >>> 16)) | 0;
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /**
   * Fills `out` with mean + std · N(0, 1) by Marsaglia's polar method: two normals per accepted pair
   * of uniforms and no trigonometry, which makes it about half again as fast as Box–Muller here.
   */
  fillNormal(out: Float32Array, mean: number, std: number): Float32Array {
    for (let i = 0; i < out.length; ) {
      let u: number;
      let v: number;
      let s: number;
      do {
        u = this.nextU32() / 2147483648 - 1;
        v = this.nextU32() / 2147483648 - 1;
        s = u * u + v * v;
      } while (s >= 1 || s === 0);
      const f = std * Math.sqrt((-2 * Math.log(s)) / s);
      out[i++] = mean + u * f;
      if (i < out.length) out[i++] = mean + v * f;
    }
    return out;
  }
}

/**
 * Builds seeded random weights. SAEGATE_ERR_MODEL_CONFIG when the config is inconsistent (e.g. dim
 * not a multiple of nHeads). d_model 512 × 8 layers × vocab 4096 takes well under a second.
 */
export function syntheticWeights(options: SyntheticModelOptions): ModelWeights {
  const { seed, initStd = 0.02, ...overrides } = options;
  const config: ModelConfig = { ...syntheticDefaults, ...overrides };
  if (overrides.nKvHeads === undefined) config.nKvHeads = config.nHeads;
  const problem = architectureProblem(config);
  if (problem) throw err('SAEGATE_ERR_MODEL_CONFIG', 'synthetic', problem);
  if (!Number.isSafeInteger(seed)) throw err('SAEGATE_ERR_MODEL_CONFIG', 'synthetic', `seed ${seed} is not an integer`);

  const random = new Random(seed);
  const { dim, hiddenDim, vocabSize } = config;
  const kvDim = (config.nKvHeads * dim) / config.nHeads;
  const matrix = (rows: number, cols: number): Float32Array => random.fillNormal(new Float32Array(rows * cols), 0, initStd);
  const norm = (): Float32Array => random.fillNormal(new Float32Array(dim), 1, 0.05);

  const tokenEmbedding = matrix(vocabSize, dim);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    layers.push({
      attnNorm: norm(),
      wq: matrix(dim, dim),
      wk: matrix(kvDim, dim),
      wv: matrix(kvDim, dim),
      wo: matrix(dim, dim),
      ffnNorm: norm(),
      w1: matrix(hiddenDim, dim),
      w2: matrix(dim, hiddenDim),
      w3: matrix(hiddenDim, dim),
    });
  }
  const finalNorm = norm();
  const classifier = config.tiedEmbeddings ? null : matrix(vocabSize, dim);
  return { config, tokenEmbedding, layers, finalNorm, classifier };
}
