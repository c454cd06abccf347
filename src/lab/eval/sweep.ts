/**
 * The settings `eval steer` compares: one (`--hook`, `--scale`) or a grid (`--sweep
 * layers=1,2,3,scales=-0.5,-1`), and the choice of the best under a side-effect budget.
 */
import { z } from 'zod';
import type { SettingComparison } from './steer.js';

/** One steering setting: a hook of the vector and the scale it is applied at. */
export interface Setting {
  hook: string;
  scale: number;
}

/** A parsed `--sweep`: layers (each `blocks.L.hook_resid_post`) and scales. */
export interface SweepSpec {
  layers: number[];
  scales: number[];
}

const number = z.coerce.number().refine(Number.isFinite, 'a finite number');

/** `layers=1,2,scales=-0.5,-1` (either key first): distinct values in the order given. */
export const sweepSchema = z
  .string()
  .regex(/^(layers=\d+(,\d+)*,scales=[^=]+|scales=[^=]+,layers=\d+(,\d+)*)$/)
  .transform((s, context): SweepSpec => {
    const layersText = /layers=(\d+(?:,\d+)*)/.exec(s)![1];
    const scalesText = /scales=([^=]+?)(?:,layers=|$)/.exec(s)![1];
    const scales: number[] = [];
    for (const part of scalesText.split(',')) {
      const parsed = number.safeParse(part);
      if (!parsed.success || part.trim() === '') {
        context.addIssue({ code: 'custom', message: `scales: '${part}' is not a number` });
        return z.NEVER;
      }
      scales.push(parsed.data);
    }
    return { layers: [...new Set(layersText.split(',').map(Number))], scales: [...new Set(scales)] };
  });

/** The grid of a sweep, layer-major. */
export function sweepSettings(spec: SweepSpec): Setting[] {
  return spec.layers.flatMap((layer) => spec.scales.map((scale) => ({ hook: `blocks.${layer}.hook_resid_post`, scale })));
}

/** A setting and how it compared with the unsteered model. */
export interface SettingResult extends Setting, SettingComparison {}

/**
 * The best setting within `ceBudget` nats of control ΔCE (point estimate) whose retain check held:
 * the lowest steered target rate, then the smaller ΔCE. null when none qualifies.
 */
export function bestSetting(results: readonly SettingResult[], ceBudget: number): SettingResult | null {
  let best: SettingResult | null = null;
  for (const r of results) {
    if ((r.control?.deltaCe.value ?? 0) > ceBudget || r.retain?.held === false) continue;
    if (
      best === null ||
      r.target.after.value < best.target.after.value ||
      (r.target.after.value === best.target.after.value && (r.control?.deltaCe.value ?? 0) < (best.control?.deltaCe.value ?? 0))
    ) {
      best = r;
    }
  }
  return best;
}
