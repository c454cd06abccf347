/**
 * Shapes shared by the model runtime's parts: architecture config, weights, tokenizers and hook
 * points. Weight matrices follow PyTorch's `nn.Linear` layout: `[out_features, in_features]`,
 * row-major, so `y = x · Wᵀ`. llama2.c and Hugging Face checkpoints both store them this way.
 */

/** How RoPE pairs the dimensions of a head. */
export type RopeStyle =
  /** Pairs (0,1), (2,3), … — Meta's original layout and llama2.c's. */
  | 'interleaved'
  /** Pairs (i, i + head_dim/2) — Hugging Face's `rotate_half` layout. */
  | 'half';

export interface ModelConfig {
  /** Residual stream width (d_model). */
  dim: number;
  /** SwiGLU inner width. */
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  /** Key/value heads; `nHeads` must be a multiple (grouped-query attention). */
  nKvHeads: number;
  vocabSize: number;
  /** Context length: prompt plus generated tokens per sequence. */
  maxSeqLen: number;
  /** RMSNorm epsilon. Default 1e-5. */
  normEps: number;
  /** RoPE base. Default 10000. */
  ropeTheta: number;
  ropeStyle: RopeStyle;
  /** True when the classifier shares the token embedding matrix. */
  tiedEmbeddings: boolean;
}

export interface LayerWeights {
  /** [dim] */
  attnNorm: Float32Array;
  /** [nHeads·headDim, dim] */
  wq: Float32Array;
  /** [nKvHeads·headDim, dim] */
  wk: Float32Array;
  /** [nKvHeads·headDim, dim] */
  wv: Float32Array;
  /** [dim, nHeads·headDim] */
  wo: Float32Array;
  /** [dim] */
  ffnNorm: Float32Array;
  /** Gate projection [hiddenDim, dim]. */
  w1: Float32Array;
  /** Down projection [dim, hiddenDim]. */
  w2: Float32Array;
  /** Up projection [hiddenDim, dim]. */
  w3: Float32Array;
}

export interface ModelWeights {
  config: ModelConfig;
  /** [vocabSize, dim] */
  tokenEmbedding: Float32Array;
  layers: LayerWeights[];
  /** [dim] */
  finalNorm: Float32Array;
  /** [vocabSize, dim]; null when tied to the embedding. */
  classifier: Float32Array | null;
}

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  /** Token ids that end generation. */
  readonly eosIds: readonly number[];
  /** Encodes text; `addBos` prepends the BOS token when the tokenizer has one. */
  encode(text: string, options?: { addBos?: boolean }): number[];
  /** Decodes ids to text. Incomplete UTF-8 at the end decodes to U+FFFD. */
  decode(ids: readonly number[]): string;
  /** Chat template (Jinja) shipped with the tokenizer, if any. */
  readonly chatTemplate: string | null;
  /**
   * Text of the BOS/EOS special tokens for chat templates (`{{ bos_token }}`, `{{ eos_token }}`),
   * e.g. `<s>` and `</s>`; `decode()` drops special tokens, so it cannot supply them. Absent when
   * the tokenizer has no textual form for them.
   */
  readonly bosToken?: string | null;
  readonly eosToken?: string | null;
}

/** A loaded model: weights, tokenizer and where they came from. */
export interface LoadedModel {
  weights: ModelWeights;
  tokenizer: Tokenizer | null;
  /** Model name for the API: the weight file's base name unless given. */
  name: string;
  source: string;
}

/** TransformerLens hook names this runtime exposes. */
export type HookKind = 'hook_resid_pre' | 'hook_resid_post';

export function hookName(layer: number, kind: HookKind): string {
  return `blocks.${layer}.${kind}`;
}

/** Every hook point of a model, in forward order. */
export function allHookPoints(config: Pick<ModelConfig, 'nLayers'>): string[] {
  const names: string[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    names.push(hookName(l, 'hook_resid_pre'), hookName(l, 'hook_resid_post'));
  }
  return names;
}

const hookPattern = /^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post)$/;

/** Parses a hook name; null when it is not one of ours. */
export function parseHookName(name: string): { layer: number; kind: HookKind } | null {
  const m = hookPattern.exec(name);
  if (!m) return null;
  return { layer: Number(m[1]), kind: m[2] as HookKind };
}

export function headDim(config: Pick<ModelConfig, 'dim' | 'nHeads'>): number {
  return config.dim / config.nHeads;
}
