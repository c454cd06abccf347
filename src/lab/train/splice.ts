/**
 * "CE loss recovered": how much next-token cross-entropy rises when the hook's activations are
 * replaced by the SAE's reconstruction, against replacing them with zeros (SAELens' definition):
 *
 *     recovered = (CE_ablated − CE_spliced) / (CE_ablated − CE_clean)
 *
 * 1 means the reconstruction is as good as the real activations for the model's predictions, 0 as
 * bad as deleting them. The passes run in a worker (see splice-worker.ts).
 */
import { SaegateError } from '../../common/errors.js';
import type { Device } from '../../common/ort.js';
import { siblingModule } from '../../common/worker.js';
import { WorkerHost } from '../../common/worker-host.js';
import { buildDecoderGraph } from '../../model/graph.js';
import { allHookPoints, type ModelWeights } from '../../model/types.js';
import type { SaeWeights } from '../../sae/types.js';
import type { SpliceWorkerProtocol } from './splice-protocol.js';

export interface SpliceEvaluationOptions {
  model: ModelWeights;
  sae: SaeWeights;
  /** Token-id sequences (BOS included where the model uses one); each needs ≥ 2 tokens. */
  documents: number[][];
  device?: Device;
  intraOpThreads?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface SpliceEvaluation {
  documents: number;
  /** Next-token predictions scored. */
  targets: number;
  /** Mean next-token cross-entropy (nats) over all targets. */
  ceClean: number;
  ceSpliced: number;
  ceAblated: number;
  /** `ceSpliced − ceClean`. */
  ceIncrease: number;
  /** `(ceAblated − ceSpliced) / (ceAblated − ceClean)`. */
  ceRecovered: number;
  /** FVU of the SAE on these documents' activations (dataset-mean centred). */
  fvu: number;
}

export async function spliceEvaluation(options: SpliceEvaluationOptions): Promise<SpliceEvaluation> {
  const { model, sae } = options;
  const { config } = model;
  const hook = sae.config.hookName;
  const hookPoints = allHookPoints(config);
  if (!hookPoints.includes(hook)) throw new SaegateError('SAEGATE_ERR_SAE_FILE', [sae.config.source, `hook '${hook}' is not a hook point of the model (${hookPoints.join(', ')})`]);
  if (sae.config.dIn !== config.dim) throw new SaegateError('SAEGATE_ERR_SAE_FILE', [sae.config.source, `d_in ${sae.config.dIn} does not match the model's d_model ${config.dim}`]);
  const { architecture, k, applyBDecToInput, normalizeActivations } = sae.config;
  // The worker's reconstruction implements exactly what `saegate sae train` writes.
  if (architecture !== 'topk' || k === null || !applyBDecToInput || normalizeActivations !== 'none') {
    throw new SaegateError('SAEGATE_ERR_SAE_FILE', [sae.config.source, 'the splice evaluation supports TopK SAEs with apply_b_dec_to_input and no input normalisation (what saegate sae train writes)']);
  }
  const documents = options.documents.map((d) => d.slice(0, config.maxSeqLen)).filter((d) => d.length >= 2);
  if (documents.length === 0) throw new SaegateError('SAEGATE_ERR_CONFIG', ['documents', 'no document has two or more tokens to score']);

  const host = await WorkerHost.start<SpliceWorkerProtocol>({
    entry: siblingModule(import.meta.url, 'splice-worker'),
    name: 'splice worker',
    init: () => {
      const graph = buildDecoderGraph(model, { maxSlots: 1 });
      return {
        init: {
          model: graph,
          config,
          hookPoints,
          hook,
          sae: { W_enc: sae.W_enc, b_enc: sae.b_enc, W_dec: sae.W_dec, b_dec: sae.b_dec, dIn: sae.config.dIn, dSae: sae.config.dSae, k },
          device: options.device ?? 'cpu',
          intraOpThreads: options.intraOpThreads,
        },
        transfer: [graph.buffer as ArrayBuffer],
      };
    },
  });
  try {
    const D = config.dim;
    let targets = 0;
    const ce = { clean: 0, spliced: 0, ablated: 0 };
    let sqError = 0;
    let rows = 0;
    const sum = new Float64Array(D);
    let sumSq = 0;
    // Documents go one at a time: the worker runs them serially anyway, and this bounds memory.
    for (let id = 0; id < documents.length; id++) {
      const scores = await host.request({ tokens: documents[id] });
      targets += scores.targets;
      ce.clean += scores.clean * scores.targets;
      ce.spliced += scores.spliced * scores.targets;
      ce.ablated += scores.ablated * scores.targets;
      sqError += scores.sqError;
      const acts = scores.activations;
      for (let r = 0; r < acts.length / D; r++) {
        for (let i = 0; i < D; i++) {
          const v = acts[r * D + i];
          sum[i] += v;
          sumSq += v * v;
        }
        rows++;
      }
      options.onProgress?.(id + 1, documents.length);
    }
    let meanSq = 0;
    for (let i = 0; i < D; i++) meanSq += (sum[i] / rows) ** 2;
    const variance = sumSq - rows * meanSq;
    const ceClean = ce.clean / targets;
    const ceSpliced = ce.spliced / targets;
    const ceAblated = ce.ablated / targets;
    return {
      documents: documents.length,
      targets,
      ceClean,
      ceSpliced,
      ceAblated,
      ceIncrease: ceSpliced - ceClean,
      ceRecovered: (ceAblated - ceSpliced) / (ceAblated - ceClean),
      fvu: sqError / Math.max(variance, 1e-30),
    };
  } finally {
    await host.close();
  }
}
