/** The training report `saegate sae train` writes beside each SAE: `report.json` and `report.md`. */
import fs from 'node:fs';
import path from 'node:path';
import type { TrainConfig, TrainProgress } from './protocol.js';
import type { SpliceEvaluation } from './splice.js';

export interface TrainReport {
  version: 1;
  createdAt: string;
  sae: { directory: string; hookName: string; model: string | null; dIn: number; dSae: number; k: number };
  data: {
    /** Where the rows came from: a corpus through a model server, or an activations file. */
    source: string;
    trainRows: number;
    heldOutRows: number;
    /** Documents on each side of the split (null for an activations file). */
    trainDocuments: number | null;
    heldOutDocuments: number | null;
  };
  config: TrainConfig;
  training: {
    seconds: number;
    rowsPerSecond: number;
    resumedAtStep: number;
    /** The last progress point: FVU / L0 / dead fraction on the final training batches. */
    final: TrainProgress;
    history: TrainProgress[];
  };
  heldOut: {
    rows: number;
    fvu: number;
    l0: number;
    /** Latents that never fired on the held-out rows. */
    deadFraction: number;
    /** Latents firing on more than 10% of held-out rows. */
    denseFraction: number;
  };
  /** Null when no model was in-process to splice into (e.g. `--upstream`), with the reason. */
  splice: SpliceEvaluation | null;
  spliceSkipped: string | null;
}

export interface FrontierReport {
  version: 1;
  createdAt: string;
  hookName: string;
  model: string | null;
  dSae: number;
  points: { k: number; directory: string; heldOutFvu: number; l0: number; deadFraction: number; ceIncrease: number | null; ceRecovered: number | null; seconds: number }[];
}

const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
const num = (x: number, digits = 4): string => x.toFixed(digits);

export function trainReportMarkdown(r: TrainReport): string {
  const lines = [
    `# TopK SAE ${r.sae.dIn} → ${r.sae.dSae}, k = ${r.sae.k}, at \`${r.sae.hookName}\``,
    '',
    `Model: ${r.sae.model ?? 'unknown'} · data: ${r.data.source} · written ${r.createdAt}`,
    '',
    '## Held-out evaluation',
    '',
    '| metric | value |',
    '|---|---|',
    `| rows | ${r.heldOut.rows} |`,
    `| FVU (Σ‖x − x̂‖² / Σ‖x − mean‖²) | ${num(r.heldOut.fvu)} |`,
    `| L0 (active latents per row) | ${num(r.heldOut.l0, 2)} |`,
    `| dead latents (never fired on held-out rows) | ${pct(r.heldOut.deadFraction)} |`,
    `| dense latents (fire on > 10% of rows) | ${pct(r.heldOut.denseFraction)} |`,
  ];
  if (r.splice) {
    const s = r.splice;
    lines.push(
      `| next-token CE, clean | ${num(s.ceClean)} nats |`,
      `| next-token CE, SAE spliced in | ${num(s.ceSpliced)} nats (+${num(s.ceIncrease)}) |`,
      `| next-token CE, hook zero-ablated | ${num(s.ceAblated)} nats |`,
      `| CE loss recovered | ${pct(s.ceRecovered)} |`,
      '',
      `The splice replaces the activations at the hook with the SAE's reconstruction on ${s.documents} held-out documents (${s.targets} next-token predictions) and measures the model's cross-entropy; "recovered" is (CE ablated − CE spliced) / (CE ablated − CE clean).`,
    );
  } else {
    lines.push('', `CE loss recovered: not measured (${r.spliceSkipped ?? 'no model'}).`);
  }
  lines.push(
    '',
    '## Training',
    '',
    `${r.config.steps} steps of ${r.config.batchRows} rows (${r.data.trainRows} training rows${r.data.trainDocuments !== null ? ` from ${r.data.trainDocuments} documents` : ''}), ${num(r.training.seconds, 1)} s, ${Math.round(r.training.rowsPerSecond)} rows/s${r.training.resumedAtStep > 0 ? `, resumed at step ${r.training.resumedAtStep}` : ''}.`,
    '',
    `Adam lr ${r.config.lr} (warm-up ${r.config.warmupSteps} steps, linear decay over the last ${pct(r.config.decayFraction)}), AuxK k_aux = ${r.config.kAux} × ${num(r.config.auxCoef)}, dead after ${r.config.deadAfterRows} rows without firing, seed ${r.config.seed}.`,
    '',
    '| step | loss | FVU (train batches) | L0 | dead | AuxK ‖e − ê‖²/‖e‖² | lr | rows/s |',
    '|---|---|---|---|---|---|---|---|',
    ...r.training.history.map((p) => `| ${p.step} | ${num(p.loss)} | ${num(p.fvu)} | ${num(p.l0, 2)} | ${pct(p.deadFraction)} | ${num(p.auxFvu, 3)} | ${p.lr.toExponential(2)} | ${Math.round(p.rowsPerSecond)} |`),
    '',
  );
  return lines.join('\n');
}

export function frontierMarkdown(r: FrontierReport): string {
  return [
    `# FVU–L0 frontier: TopK SAEs with ${r.dSae} latents at \`${r.hookName}\``,
    '',
    `Model: ${r.model ?? 'unknown'} · written ${r.createdAt}. Every SAE was trained on the same rows and evaluated on the same held-out rows.`,
    '',
    '| k | held-out FVU | L0 | dead | CE increase (nats) | CE recovered | train s | directory |',
    '|---|---|---|---|---|---|---|---|',
    ...r.points.map(
      (p) =>
        `| ${p.k} | ${num(p.heldOutFvu)} | ${num(p.l0, 2)} | ${pct(p.deadFraction)} | ${p.ceIncrease === null ? '–' : num(p.ceIncrease)} | ${p.ceRecovered === null ? '–' : pct(p.ceRecovered)} | ${num(p.seconds, 1)} | ${p.directory} |`,
    ),
    '',
  ].join('\n');
}

/** Writes `report.json` and `report.md` into `dir`. */
export function writeReport(dir: string, json: object, markdown: string): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'report.json'), `${JSON.stringify(json, null, 2)}\n`);
  fs.writeFileSync(path.join(dir, 'report.md'), markdown);
}
