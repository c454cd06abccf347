/**
 * A cheap upper bound on one SAE feature's activation, computed from a tapped residual row on the
 * proxy's thread, so that rows a conditional rule cannot fire on need not wait for the SAE.
 *
 * A conditional rule on a feature fires when the feature's activation is above its `above`. Every
 * architecture's activation of feature f is bounded by an affine function of the row, in the
 * space the SAE's graph works in (`src/sae/graph.ts`):
 *
 *   x_n = normalise(x);  x_c = x_n − b_dec (when the SAE applies b_dec to its input);  h = x_c · W_enc[:, f]
 *   standard, TopK: act ≤ max(0, h + b_enc[f])   (equal for standard; TopK keeps it or zeroes it)
 *   JumpReLU:       act = 0 when h + b_enc[f] ≤ threshold[f], else as standard
 *   gated:          act = 0 when h + b_gate[f] ≤ 0, else ≤ max(0, exp(r_mag[f]) · h + b_mag[f])
 *
 * TopK's bound is loose: a feature with a positive pre-activation outside the k largest is 0, and
 * telling that would take the other pre-activations. A rule on a TopK SAE with a low threshold
 * (`above: 0`, "fires when active") therefore lets rows through the screen only when the feature's
 * pre-activation is negative.
 *
 * One dot product of `dIn` per feature and row, where the SAE's own encoder costs `dIn · dSae`. When
 * the bound is at most `above` the rule cannot fire at that row, whatever the SAE computes; only
 * rows whose bound exceeds it (rare for a rule watching for something unusual) need the SAE's
 * answer soon. The bound is computed in double precision; onnxruntime's float32 product differs
 * from it by rounding, so the pre-activation is raised by a margin proportional to
 * `Σ a[i] · |W_enc[i, f]|`, at least 4 × float32's worst-case accumulation error, before the ReLU
 * (so a feature whose pre-activation is clearly negative is screened out at `above = 0`). `a[i]`
 * is x_c[i]'s magnitude *before* the cancellations of centring and of subtracting b_dec,
 * `(|x[i]| + mean|x|) · scale + |b_dec[i]|` (mean|x| only for layer_norm), since float32 rounds
 * those operands, not their difference. A row the graph cannot normalise to float32 accuracy is
 * not screened at all (`mayExceed` is true): a non-finite row; a layer_norm row whose mean's
 * rounding is not small next to its spread (a large common offset, a constant row: the graph's
 * centred row is then mostly rounding, divided by a tiny deviation); a sum of squares that may
 * overflow float32, or (constant_norm_rescale) underflow it
 * (`test/unit/policies/screen.test.ts` checks it against the real graph). An SAE whose graph
 * holds f16 weights gets no screen (`FeatureScreen.forPrecision`): its rounding is not bounded
 * this tightly, so its rows keep waiting for the SAE.
 */
import { f16Values } from '../monitor/projection.js';
import { LAYER_NORM_EPS, MIN_ROW_NORM } from '../sae/graph.js';
import type { SaeWeights } from '../sae/types.js';
import type { ActivationData } from '../tap/messages.js';

/**
 * Smallest relative margin on the bound, times `Σ a[i] · |W_enc[i, f]|` (float32's ε is 1.2e-7 per
 * operation). Wider SAEs get 4 × float32's worst-case accumulation error over dIn + 2 terms,
 * `4 · (dIn + 2) · 2^-24` (1e-4 up to dIn 417; 1.0e-3 at dIn 4096).
 */
const RELATIVE_MARGIN = 1e-4;
/** Absolute margin, for rows whose products all vanish. */
const ABSOLUTE_MARGIN = 1e-6;
/** float32's unit roundoff, 2^-24. */
const F32_UNIT_ROUNDOFF = 2 ** -24;
/**
 * Largest (dIn + 2) · u · mean|x| / (std + eps) of a layer_norm row that is screened: the graph's
 * mean is off by at most (dIn + 2) · u · mean|x|, which shifts its normalised row by at most this
 * (covered by the margin's mean|x| term) and changes its scale by a second-order ~this² / 2.
 */
const LAYER_NORM_MAX_MEAN_ERROR = 1e-3;
/** Sums of squares screened: inside float32's normal range with room for accumulation. */
const MAX_SUM_OF_SQUARES = 2 ** 120;
const MIN_SUM_OF_SQUARES = 2 ** -100;

interface FeatureTerms {
  /** W_enc's column f, contiguous. */
  column: Float64Array;
  /** Scale on h: 1, or exp(r_mag[f]) for gated SAEs. */
  scale: number;
  /** Offset: b_enc[f], or b_mag[f] for gated SAEs. */
  offset: number;
  /**
   * The feature is 0 unless `h + gateOffset > gateAbove`: JumpReLU's `pre > threshold[f]`
   * (gateOffset b_enc[f], gateAbove threshold[f]), gated SAEs' `h + b_gate[f] > 0`. Null for
   * standard and TopK SAEs.
   */
  gate: { offset: number; above: number } | null;
}

export class FeatureScreen {
  private readonly features = new Map<number, FeatureTerms>();
  /** x_c of the row last prepared. */
  private readonly xc: Float64Array;
  /** a: x_c's magnitudes before cancellation, for the margin (see the module comment). */
  private readonly xa: Float64Array;
  private prepared = false;
  /** False when the graph's float32 normalisation of the prepared row is not reliable: no screening. */
  private screenable = false;

  /** Relative margin of this SAE's bounds (see RELATIVE_MARGIN). */
  private readonly relativeMargin: number;

  private constructor(private readonly sae: SaeWeights) {
    this.relativeMargin = Math.max(RELATIVE_MARGIN, 4 * (sae.config.dIn + 2) * F32_UNIT_ROUNDOFF);
    this.xc = new Float64Array(sae.config.dIn);
    this.xa = new Float64Array(sae.config.dIn);
  }

  /** A screen for an SAE encoded with weights of this precision: null for f16 (see the module comment). */
  static forPrecision(sae: SaeWeights, precision: 'f32' | 'f16'): FeatureScreen | null {
    return precision === 'f32' ? new FeatureScreen(sae) : null;
  }

  get dIn(): number {
    return this.sae.config.dIn;
  }

  /** Reads row `row` of `rows` (`dIn` wide) for the next `mayExceed` calls. */
  prepare(rows: ActivationData, row: number): void {
    const { config, b_dec } = this.sae;
    const d = config.dIn;
    const offset = row * d;
    const xc = this.xc;
    if (rows.dtype === 'f32') {
      for (let i = 0; i < d; i++) xc[i] = rows.data[offset + i];
    } else {
      const table = f16Values();
      for (let i = 0; i < d; i++) xc[i] = table[rows.data[offset + i]];
    }
    this.prepared = true;
    this.screenable = false;
    let meanAbs = 0;
    for (let i = 0; i < d; i++) meanAbs += Math.abs(xc[i]);
    meanAbs /= d;
    // Infinity or NaN anywhere (the sum is then not finite), or values whose sums overflow float32.
    if (!(meanAbs * d <= MAX_SUM_OF_SQUARES)) return;
    let scale = 1;
    let shift = 0;
    let spread = 0;
    switch (config.normalizeActivations) {
      case 'none':
        break;
      case 'constant_norm_rescale': {
        let sum = 0;
        for (let i = 0; i < d; i++) sum += xc[i] * xc[i];
        // A zero row is exact (the graph's floor keeps it zero); a sum of squares that float32
        // flushes or rounds coarsely (subnormals) or overflows would meet the floor or Infinity.
        if (sum > MAX_SUM_OF_SQUARES || (sum > 0 && sum < MIN_SUM_OF_SQUARES)) return;
        scale = Math.sqrt(d) / Math.max(Math.sqrt(sum), MIN_ROW_NORM);
        break;
      }
      case 'layer_norm': {
        let mean = 0;
        for (let i = 0; i < d; i++) mean += xc[i];
        mean /= d;
        let sum = 0;
        for (let i = 0; i < d; i++) sum += (xc[i] - mean) ** 2;
        if (sum > MAX_SUM_OF_SQUARES) return;
        shift = mean;
        scale = 1 / (Math.sqrt(sum / (d - 1)) + LAYER_NORM_EPS);
        if ((d + 2) * F32_UNIT_ROUNDOFF * meanAbs * scale > LAYER_NORM_MAX_MEAN_ERROR) return;
        spread = meanAbs;
        break;
      }
      case 'expected_average_only_in':
        if (config.scalingFactor !== null) scale = config.scalingFactor;
        break;
    }
    const subtract = config.applyBDecToInput;
    const xa = this.xa;
    const absScale = Math.abs(scale);
    for (let i = 0; i < d; i++) {
      const b = subtract ? b_dec[i] : 0;
      xa[i] = (Math.abs(xc[i]) + spread) * absScale + Math.abs(b);
      xc[i] = (xc[i] - shift) * scale - b;
    }
    this.screenable = true;
  }

  /**
   * Whether feature `feature`'s activation may be above `above` at the prepared row; false only
   * when it cannot be. An index outside the SAE never fires (its value reads as 0), so it is
   * screened as 0. At a row that is not screened (see the module comment) every feature may.
   */
  mayExceed(feature: number, above: number): boolean {
    if (!this.prepared) throw new Error('FeatureScreen.mayExceed before prepare');
    if (!Number.isInteger(feature) || feature < 0 || feature >= this.sae.config.dSae) return 0 > above;
    if (!this.screenable) return true;
    const terms = this.terms(feature);
    const { xc, xa } = this;
    const { column } = terms;
    let h = 0;
    let magnitude = 0;
    for (let i = 0; i < xc.length; i++) {
      h += xc[i] * column[i];
      magnitude += xa[i] * Math.abs(column[i]);
    }
    const { gate } = terms;
    // A closed gate zeroes the feature: then its value is 0, whatever the magnitude path says.
    if (gate !== null && h + gate.offset + (magnitude + Math.abs(gate.offset)) * this.relativeMargin + ABSOLUTE_MARGIN <= gate.above) return 0 > above;
    const margin = (Math.abs(terms.scale) * magnitude + Math.abs(terms.offset)) * this.relativeMargin + ABSOLUTE_MARGIN;
    // The margin bounds the rounding of the pre-activation, so it goes inside the ReLU: an
    // activation is never below 0, and a pre-activation below −margin rules out any `above` ≥ 0.
    // Written as "not at most" so that a NaN bound (say, from NaN weights) lets the row through.
    return !(Math.max(0, terms.scale * h + terms.offset + margin) <= above);
  }

  private terms(feature: number): FeatureTerms {
    let terms = this.features.get(feature);
    if (terms === undefined) {
      const { W_enc, b_enc, gated, config } = this.sae;
      const { dIn, dSae } = config;
      const column = new Float64Array(dIn);
      for (let i = 0; i < dIn; i++) column[i] = W_enc[i * dSae + feature];
      const { threshold } = this.sae;
      if (config.architecture === 'gated' && gated !== null) {
        terms = { column, scale: Math.exp(gated.r_mag[feature]), offset: gated.b_mag[feature], gate: { offset: gated.b_gate[feature], above: 0 } };
      } else {
        const gate = config.architecture === 'jumprelu' && threshold !== null ? { offset: b_enc[feature], above: threshold[feature] } : null;
        terms = { column, scale: 1, offset: b_enc[feature], gate };
      }
      this.features.set(feature, terms);
    }
    return terms;
  }
}
