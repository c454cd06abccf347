/**
 * Loader for llama2.c's legacy (v0) checkpoint format, the one `run.c` reads:
 *
 *     7 × int32 LE: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *     float32 LE weights, each group for all layers back to back:
 *       token_embedding [vocab, dim]
 *       rms_att [layers, dim], wq [layers, dim, dim], wk/wv [layers, kv_dim, dim],
 *       wo [layers, dim, dim], rms_ffn [layers, dim], w1 [layers, hidden, dim],
 *       w2 [layers, dim, hidden], w3 [layers, hidden, dim], rms_final [dim],
 *       freq_cis_real, freq_cis_imag [seq_len, head_size / 2] each (skipped),
 *       wcls [vocab, dim] only when vocab_size is negative (untied classifier).
 *
 * The file has no magic number, so the size check is what tells a checkpoint from anything else:
 * the file must be exactly as long as its header says. Each tensor is read straight into its own
 * Float32Array with a positional read, so loading never holds the file twice.
 */
import fs from 'node:fs';
import { err, SaegateError } from '../../common/errors.js';
import type { LayerWeights, ModelConfig, ModelWeights } from '../types.js';
import { architectureProblem, firstNonFinite } from './checks.js';

const HEADER_BYTES = 7 * 4;
/** `ak42` little-endian: the magic of llama2.c's later, versioned export formats. */
const VERSIONED_MAGIC = 0x616b3432;

/** The seven header fields as stored; `vocabSize` is negative when the classifier is untied. */
export interface Llama2cHeader {
  /** d_model. */
  dim: number;
  /** SwiGLU inner width. */
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  /** Vocabulary size; negative when the file ends with a separate classifier. */
  vocabSize: number;
  /** Context length (also the row count of the stored RoPE tables). */
  seqLen: number;
}

/** Float counts of each weight group in file order, for a header that passed validation. */
function layout(header: Llama2cHeader): { name: string; floats: number }[] {
  const { dim, hiddenDim, nLayers, nHeads, nKvHeads, seqLen } = header;
  const vocab = Math.abs(header.vocabSize);
  const headSize = dim / nHeads;
  const kvDim = nKvHeads * headSize;
  const groups = [
    { name: 'token_embedding', floats: vocab * dim },
    { name: 'rms_att', floats: nLayers * dim },
    { name: 'wq', floats: nLayers * dim * dim },
    { name: 'wk', floats: nLayers * kvDim * dim },
    { name: 'wv', floats: nLayers * kvDim * dim },
    { name: 'wo', floats: nLayers * dim * dim },
    { name: 'rms_ffn', floats: nLayers * dim },
    { name: 'w1', floats: nLayers * hiddenDim * dim },
    { name: 'w2', floats: nLayers * dim * hiddenDim },
    { name: 'w3', floats: nLayers * hiddenDim * dim },
    { name: 'rms_final', floats: dim },
    { name: 'freq_cis_real', floats: (seqLen * headSize) / 2 },
    { name: 'freq_cis_imag', floats: (seqLen * headSize) / 2 },
  ];
  if (header.vocabSize < 0) groups.push({ name: 'wcls', floats: vocab * dim });
  return groups;
}

/** Exact size in bytes of a v0 checkpoint with this header. */
export function llama2cFileBytes(header: Llama2cHeader): number {
  return HEADER_BYTES + 4 * layout(header).reduce((sum, group) => sum + group.floats, 0);
}

/** The model config a header describes (RMSNorm eps 1e-5 and RoPE base 10000, as run.c hardcodes). */
export function llama2cConfig(header: Llama2cHeader): ModelConfig {
  return {
    dim: header.dim,
    hiddenDim: header.hiddenDim,
    nLayers: header.nLayers,
    nHeads: header.nHeads,
    nKvHeads: header.nKvHeads,
    vocabSize: Math.abs(header.vocabSize),
    maxSeqLen: header.seqLen,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeStyle: 'interleaved',
    tiedEmbeddings: header.vocabSize > 0,
  };
}

function readHeader(path: string, fd: number, fileBytes: number): Llama2cHeader {
  if (fileBytes < HEADER_BYTES) {
    throw err('SAEGATE_ERR_MODEL_FILE', path, `file has ${fileBytes} bytes, shorter than the ${HEADER_BYTES}-byte llama2.c header`);
  }
  const bytes = Buffer.alloc(HEADER_BYTES);
  fs.readSync(fd, bytes, 0, HEADER_BYTES, 0);
  if (bytes.readUInt32LE(0) === VERSIONED_MAGIC) {
    throw err('SAEGATE_ERR_MODEL_FILE', path, `llama2.c export version ${bytes.readInt32LE(4)} is not supported; export with --version 0 (legacy)`);
  }
  const fields = Array.from({ length: 7 }, (_, i) => bytes.readInt32LE(i * 4));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen] = fields;
  const header: Llama2cHeader = { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen };
  // vocab_size 0 would pass the sign trick below as "tied"; reject it with the other dims.
  const problem = vocabSize === 0 ? 'vocab_size 0 is not a positive integer' : architectureProblem(llama2cConfig(header));
  if (problem) throw err('SAEGATE_ERR_MODEL_FILE', path, `nonsensical header [${fields.join(', ')}]: ${problem}`);
  return header;
}

/** Reads `count` little-endian floats at byte `position` into a fresh array (aligned by construction). */
function readFloats(fd: number, position: number, count: number): Float32Array {
  const values = new Float32Array(count);
  const bytes = new Uint8Array(values.buffer);
  const chunk = 1 << 30;
  for (let done = 0; done < bytes.length; ) {
    const got = fs.readSync(fd, bytes, done, Math.min(chunk, bytes.length - done), position + done);
    if (got === 0) throw new Error(`unexpected end of file at byte ${position + done}`);
    done += got;
  }
  return values;
}

/**
 * Loads a llama2.c v0 checkpoint. SAEGATE_ERR_MODEL_FILE when the file is shorter than the header,
 * the header is nonsensical, the size differs from what the header implies (truncated or trailing
 * bytes; the message gives both sizes), or a tensor holds NaN/Inf (the message names it).
 */
export function loadLlama2cWeights(path: string): ModelWeights {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (cause) {
    throw err('SAEGATE_ERR_MODEL_FILE', path, `cannot open: ${(cause as Error).message}`);
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw err('SAEGATE_ERR_MODEL_FILE', path, 'not a regular file');
    const fileBytes = stat.size;
    const header = readHeader(path, fd, fileBytes);
    const expected = llama2cFileBytes(header);
    if (fileBytes !== expected) {
      const what = fileBytes < expected ? 'truncated' : 'trailing bytes after the weights';
      throw err('SAEGATE_ERR_MODEL_FILE', path, `${what}: the header implies ${expected} bytes but the file has ${fileBytes}`);
    }
    const config = llama2cConfig(header);
    const { dim, hiddenDim, nLayers, vocabSize } = config;
    const kvDim = (config.nKvHeads * dim) / config.nHeads;

    let position = HEADER_BYTES;
    const take = (name: string, count: number): Float32Array => {
      const values = readFloats(fd, position, count);
      position += count * 4;
      const bad = firstNonFinite(values);
      if (bad >= 0) throw err('SAEGATE_ERR_MODEL_FILE', path, `tensor ${name} has a non-finite value (${values[bad]}) at element ${bad}`);
      return values;
    };
    const perLayer = (name: string, count: number): Float32Array[] => Array.from({ length: nLayers }, (_, l) => take(`layers.${l}.${name}`, count));

    const tokenEmbedding = take('token_embedding', vocabSize * dim);
    const attnNorm = perLayer('rms_att', dim);
    const wq = perLayer('wq', dim * dim);
    const wk = perLayer('wk', kvDim * dim);
    const wv = perLayer('wv', kvDim * dim);
    const wo = perLayer('wo', dim * dim);
    const ffnNorm = perLayer('rms_ffn', dim);
    const w1 = perLayer('w1', hiddenDim * dim);
    const w2 = perLayer('w2', dim * hiddenDim);
    const w3 = perLayer('w3', hiddenDim * dim);
    const finalNorm = take('rms_final', dim);
    // The RoPE tables are recomputed at run time (run.c ignores them too).
    position += 2 * 4 * ((config.maxSeqLen * (dim / config.nHeads)) / 2);
    const classifier = config.tiedEmbeddings ? null : take('wcls', vocabSize * dim);

    const layers: LayerWeights[] = Array.from({ length: nLayers }, (_, l) => ({
      attnNorm: attnNorm[l],
      wq: wq[l],
      wk: wk[l],
      wv: wv[l],
      wo: wo[l],
      ffnNorm: ffnNorm[l],
      w1: w1[l],
      w2: w2[l],
      w3: w3[l],
    }));
    return { config, tokenEmbedding, layers, finalNorm, classifier };
  } catch (error) {
    if (error instanceof SaegateError) throw error;
    // I/O errors (EIO, a file shrinking under us) and failed allocations of huge tensors.
    throw new SaegateError('SAEGATE_ERR_MODEL_FILE', [path, (error as Error).message], { cause: error });
  } finally {
    fs.closeSync(fd);
  }
}
