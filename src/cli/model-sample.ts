/**
 * `saegate model sample`: a prompt corpus sampled from the model itself, seeded and reproducible.
 * Wires the model loader, a LocalEngine (its own worker thread), the sampler and the atomic writer;
 * prints progress (TTY only) and a one-line summary on stderr, leaving stdout empty.
 */
import { SaegateError } from '../common/errors.js';
import { decimal, integer, parseCommand, text, usageText, type CommandSpec } from '../common/options.js';
import { sampleCorpus, type SampledDocument } from '../lab/corpus/sample.js';
import { AtomicFileWriter } from '../lab/corpus/write.js';
import { LocalEngine } from '../model/engine.js';
import { loadModel } from '../model/load.js';
import { StatusLine, type ToolReporting } from './status-line.js';
import { defaultModel } from './default-model.js';

const modelSampleOptions = {
  out: { type: text('FILE'), required: true, help: 'output .jsonl; written to a temporary file, then renamed' },
  model: {
    type: text('FILE|DIR'),
    defaultText: 'as for demo',
    help: '$SAEGATE_DEMO_MODEL, else ../shared/models/stories260K, else a seeded synthetic model; any model that model serve takes',
  },
  tokenizer: { type: text('FILE'), defaultText: 'beside the model', help: 'tokenizer file' },
  n: { type: integer(1, 100_000_000), default: 2000, help: 'documents' },
  seed: { type: integer(0), default: 0, help: "base seed; document i samples with a seed derived from it and i" },
  maxTokens: { type: integer(1), default: 256, help: 'most tokens generated per document; with the prompt it must fit the context' },
  temperature: { type: decimal({ min: 0, max: 100 }, 'T'), default: 1, help: 'sampling temperature (0 = greedy: every document the same)' },
  topP: { type: decimal({ above: 0, max: 1 }, 'P'), default: 1, help: 'nucleus mass in (0, 1] (1 = off)' },
  prompt: { type: text('TEXT', { allowEmpty: true }), default: '', help: "text every document starts from ('' = BOS alone)" },
  concurrency: { type: integer(1, 1024), default: 8, help: 'documents generated at once, batched on the engine (its KV-cache slots)' },
  threads: { type: integer(1, 256), defaultText: 'one per core', help: 'onnxruntime intra-op threads' },
} as const;

export const modelSampleCommand = {
  name: 'model sample',
  synopsis: 'saegate model sample --out FILE [options]',
  description:
    'Generates a prompt corpus by sampling the model: --n documents, each from --prompt with its own\n' +
    "seed derived from --seed and the document's index, written as JSONL in document order:\n" +
    '  {"id": 0, "text": "...", "tokens": 57, "finish_reason": "stop"}\n' +
    'The same flags give a byte-identical file whatever --concurrency is (docs/corpus.md).',
  options: modelSampleOptions,
} as const satisfies CommandSpec<typeof modelSampleOptions>;

/** One JSONL line; key order is fixed so equal documents give equal bytes. */
function documentLine(document: SampledDocument): string {
  return `${JSON.stringify({ id: document.id, text: document.text, tokens: document.tokens, finish_reason: document.finishReason })}\n`;
}

function usageError(message: string): SaegateError {
  return new SaegateError('SAEGATE_ERR_CLI_USAGE', [`${message}\n\n${usageText(modelSampleCommand)}`]);
}

/**
 * Stops sampling on SIGINT/SIGTERM (the temporary file is removed, any existing --out is left as
 * it was); a second signal exits at once. Returns the uninstaller.
 */
function abortOnSignals(controller: AbortController, onSignal: (signal: NodeJS.Signals) => void): () => void {
  const handler = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) process.exit(130);
    onSignal(signal);
    controller.abort();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}

/**
 * Writes the corpus; resolves false when a signal interrupted it (nothing written, exit code 130
 * set). `reporting` redirects its progress and summary line (the demo's quiet first start).
 */
export async function modelSample(argv: string[], reporting: ToolReporting = {}): Promise<boolean> {
  const flags = parseCommand(modelSampleCommand, argv);
  // Before the model loads, so a bad --out fails in milliseconds.
  const writer = await AtomicFileWriter.open(flags.out);
  let engine: LocalEngine | null = null;
  const controller = new AbortController();
  let interruptedBy: NodeJS.Signals | null = null;
  const uninstall = abortOnSignals(controller, (signal) => (interruptedBy = signal));
  const progress = reporting.status ?? new StatusLine(process.stderr);
  const finalPath = reporting.finalPath ?? ((file: string) => file);
  try {
    const modelSource = flags.model ?? defaultModel();
    const model = await loadModel({ model: modelSource, tokenizer: flags.tokenizer });
    const tokenizer = model.tokenizer;
    if (!tokenizer) throw new SaegateError('SAEGATE_ERR_TOKENIZER_FILE', [modelSource, 'no tokenizer found beside the model; pass --tokenizer']);
    const promptTokens = tokenizer.encode(flags.prompt, { addBos: true });
    if (promptTokens.length === 0) throw usageError(`--prompt: the tokenizer has no BOS token, so an empty prompt gives the model nothing to start from; pass --prompt TEXT`);
    const context = model.weights.config.maxSeqLen;
    if (promptTokens.length + flags.maxTokens > context) {
      throw usageError(`--max-tokens: ${flags.maxTokens} plus the prompt's ${promptTokens.length} tokens exceeds the model's context of ${context} tokens`);
    }
    engine = await LocalEngine.create({
      weights: model.weights,
      maxBatch: Math.min(flags.concurrency, flags.n),
      samplableVocab: tokenizer.vocabSize,
      intraOpThreads: flags.threads,
    });
    const summary = await sampleCorpus({
      engine,
      tokenizer,
      promptTokens,
      documents: flags.n,
      seed: flags.seed,
      maxTokens: flags.maxTokens,
      // Read back as a prompt (collection, feature reports ask for one more token), a document's
      // text must encode within the context less one; cut back the few that decode to longer text.
      maxTextTokens: context - 1,
      temperature: flags.temperature,
      topP: flags.topP,
      concurrency: flags.concurrency,
      onDocument: (document) => writer.write(documentLine(document)),
      onProgress: (p) => progress.draw(`sampling ${p.documents}/${p.total} documents, ${p.tokens} tokens, ${p.elapsedMs > 0 ? Math.round((p.tokens * 1000) / p.elapsedMs) : 0} tokens/s`),
      signal: controller.signal,
    });
    await writer.commit();
    progress.clear();
    const seconds = summary.elapsedMs / 1000;
    const rate = seconds > 0 ? Math.round(summary.tokens / seconds) : 0;
    progress.log(
      `saegate model sample: ${summary.documents} documents from ${model.name} (${summary.empty} empty; ${summary.stopped} ended with EOS or BOS, ${summary.truncated} at --max-tokens${summary.shortened > 0 ? `, ${summary.shortened} of them cut back to fit the context when encoded again` : ''}), ` +
        `${summary.tokens} tokens in ${seconds.toFixed(1)} s (${rate} tokens/s) → ${finalPath(writer.target)}`,
    );
    return true;
  } catch (error) {
    progress.clear();
    await writer.abort();
    if (interruptedBy === null) throw error;
    progress.log(`${interruptedBy}: interrupted; ${flags.out} was not written`);
    process.exitCode = 130;
    return false;
  } finally {
    uninstall();
    await engine?.close();
  }
}
