/**
 * Checks every weight loader applies: the architecture's numbers make sense together, and the
 * weights are finite. Kept in one place so a llama2.c file, a Hugging Face directory and a
 * synthetic model are held to the same rules.
 */
import type { ModelConfig } from '../types.js';

/**
 * Index of the first NaN or ±Inf in `values`, or -1 when all are finite.
 *
 * The scan is the cheap part of loading: `v * 0` is 0 for every finite v and NaN otherwise, so one
 * branch-free accumulation per element answers "all finite?" and only a tensor that fails pays for
 * the second pass that finds the index.
 */
export function firstNonFinite(values: Float32Array): number {
  let acc = 0;
  for (let i = 0; i < values.length; i++) acc += values[i] * 0;
  if (acc === 0) return -1;
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}

/**
 * Describes what is wrong with an architecture, or returns null when it is usable: positive sizes,
 * whole heads, a whole number of query heads per key/value head, and an even head size (RoPE
 * rotates pairs of dimensions).
 */
export function architectureProblem(config: ModelConfig): string | null {
  const positive: [string, number][] = [
    ['dim', config.dim],
    ['hiddenDim', config.hiddenDim],
    ['nLayers', config.nLayers],
    ['nHeads', config.nHeads],
    ['nKvHeads', config.nKvHeads],
    ['vocabSize', config.vocabSize],
    ['maxSeqLen', config.maxSeqLen],
  ];
  for (const [name, value] of positive) {
    if (!Number.isSafeInteger(value) || value <= 0) return `${name} ${value} is not a positive integer`;
  }
  if (config.dim % config.nHeads !== 0) return `dim ${config.dim} is not a multiple of nHeads ${config.nHeads}`;
  if (config.nHeads % config.nKvHeads !== 0) return `nHeads ${config.nHeads} is not a multiple of nKvHeads ${config.nKvHeads}`;
  if ((config.dim / config.nHeads) % 2 !== 0) return `head size ${config.dim / config.nHeads} is odd; RoPE needs pairs of dimensions`;
  if (!(config.normEps > 0) || !Number.isFinite(config.normEps)) return `normEps ${config.normEps} is not a positive number`;
  if (!(config.ropeTheta > 0) || !Number.isFinite(config.ropeTheta)) return `ropeTheta ${config.ropeTheta} is not a positive number`;
  return null;
}
