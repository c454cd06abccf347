import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../../src/common/random.js';
import { firingJsd, psi } from '../../../src/monitor/divergence.js';
import { BaselineRecorder } from '../../../src/monitor/baseline-recorder.js';
import { benjaminiHochberg, featureRateTests, firingRatePValue } from '../../../src/monitor/feature-tests.js';
import { BaselineReference } from '../../../src/monitor/reference.js';
import { SyntheticTraffic } from '../../helpers/monitor-synthetic.js';
import { gammaP, logGamma, poissonLowerTail, poissonUpperTail } from '../../../src/monitor/poisson.js';

/** Brute-force Poisson pmf sums in float64. */
function poissonCdf(k: number, lambda: number): number {
  let term = Math.exp(-lambda);
  let sum = term;
  for (let j = 1; j <= k; j++) {
    term *= lambda / j;
    sum += term;
  }
  return sum;
}

describe('poisson tails', () => {
  it('matches brute-force pmf sums', () => {
    for (const lambda of [0.3, 2, 17.5, 120]) {
      for (const k of [0, 1, 3, 10, 25, 140]) {
        expect(poissonLowerTail(k, lambda)).toBeCloseTo(poissonCdf(k, lambda), 9);
        expect(poissonUpperTail(k, lambda)).toBeCloseTo(k === 0 ? 1 : 1 - poissonCdf(k - 1, lambda), 9);
      }
    }
  });

  it('has log-gamma of integers equal to log factorials, and P(1, x) = 1 − e^−x', () => {
    expect(logGamma(1)).toBeCloseTo(0, 12);
    expect(logGamma(11)).toBeCloseTo(Math.log(3628800), 10);
    expect(gammaP(1, 0.7)).toBeCloseTo(1 - Math.exp(-0.7), 12);
  });

  it('gives p = 1 for a count at its expectation and a tiny p for a tenfold rate', () => {
    expect(firingRatePValue(100, 1000, 0.1, 1)).toBeGreaterThan(0.9);
    expect(firingRatePValue(1000, 1000, 0.1, 1)).toBeLessThan(1e-100);
    // A dispersion of 4 widens the test: 140 firings against 100 expected is significant only without it.
    expect(firingRatePValue(140, 1000, 0.1, 1)).toBeLessThan(0.001);
    expect(firingRatePValue(140, 1000, 0.1, 4)).toBeGreaterThan(0.01);
  });

  it('computes the second tail only when needed, with the p-value of both tails', () => {
    const random = new SeededRandom(11);
    for (let i = 0; i < 2000; i++) {
      const tokens = 1 + Math.floor(random.next() * 5000);
      const rate = 10 ** (-5 + 4 * random.next());
      const dispersion = 1 + 3 * random.next();
      const expected = tokens * rate;
      // Counts below, at and above the expectation, and 0.
      const k = i % 4 === 0 ? 0 : Math.max(0, Math.round(expected * (0.2 + 2 * random.next()) + (random.next() - 0.5) * 6));
      const lambda = expected / dispersion;
      const both = Math.min(1, 2 * Math.min(poissonUpperTail(k / dispersion, lambda), poissonLowerTail(k / dispersion, lambda)));
      const p = firingRatePValue(k, tokens, rate, dispersion);
      expect(Math.abs(p - both), `k ${k} tokens ${tokens} rate ${rate} φ ${dispersion}`).toBeLessThanOrEqual(1e-12 * Math.max(both, 1e-300));
    }
  });
});

describe('featureRateTests', () => {
  it('reports the same top features as a full sort of every tested feature', () => {
    const dSae = 512;
    const recorder = new BaselineRecorder({ dSae });
    const base = new SyntheticTraffic({ dSae, seed: 1 });
    for (let d = 0; d < 200; d++) recorder.addDocument(base.document());
    const reference = new BaselineReference(recorder.toBaseline({ model: 'm', sae: { id: 's', hash: 'h' }, hook: 'h', saegateVersion: '0' }));
    const shifted = new SyntheticTraffic({ dSae, seed: 2, shift: { boostFeatures: 12, boostFactor: 4 } });
    const firingCounts = new Float64Array(dSae);
    let tokens = 0;
    for (let d = 0; d < 30; d++) {
      const doc = shifted.document();
      tokens += doc.rows;
      for (const f of doc.indices) firingCounts[f]++;
    }
    for (const top of [0, 1, 10, 50, dSae]) {
      const result = featureRateTests({ tokens, firingCounts }, reference, { top });
      const ratio = (f: number): number => firingCounts[f] / tokens / ((reference.totals.firingCounts[f] + 0.5) / (reference.totals.tokens + 1));
      const all = Array.from({ length: dSae }, (_, f) => f).filter((f) => result.pValues[f] < 1);
      all.sort((a, b) => result.pValues[a] - result.pValues[b] || Math.abs(Math.log(ratio(b))) - Math.abs(Math.log(ratio(a))) || a - b);
      expect(result.top.map((f) => f.feature)).toEqual(all.slice(0, top));
      if (top === 10) expect(result.top[0].pValue).toBeLessThan(1e-6);
    }
  });
});

describe('divergences', () => {
  it('JSD is 0 for equal counts, ≈0 for large proportional counts, 1 bit for disjoint support, and symmetric', () => {
    expect(firingJsd(Float64Array.of(1e4, 2e4, 3e4), Float64Array.of(1e5, 2e5, 3e5))).toBeLessThan(1e-12);
    expect(firingJsd(Float64Array.of(1, 2, 3), Float64Array.of(1, 2, 3))).toBe(0);
    expect(firingJsd(Float64Array.of(1e6, 0), Float64Array.of(0, 1e6))).toBeCloseTo(1, 6);
    const a = Float64Array.of(5, 1, 0, 3);
    const b = Float64Array.of(1, 1, 4, 3);
    expect(firingJsd(a, b)).toBeCloseTo(firingJsd(b, a), 14);
    // Against float64 reference with the documented ε = 0.01.
    const p = [...a].map((x) => (x + 0.01) / (9 + 0.04));
    const q = [...b].map((x) => (x + 0.01) / (9 + 0.04));
    const reference = p.reduce((s, pi, i) => {
      const m = (pi + q[i]) / 2;
      return s + 0.5 * pi * Math.log2(pi / m) + 0.5 * q[i] * Math.log2(q[i] / m);
    }, 0);
    expect(firingJsd(a, b)).toBeCloseTo(reference, 12);
  });

  it('PSI follows Σ (a − b) ln(a / b) over half-count-smoothed proportions', () => {
    const a = Float64Array.of(10, 0, 30);
    const b = Float64Array.of(20, 20, 20);
    const pa = [10.5 / 41.5, 0.5 / 41.5, 30.5 / 41.5];
    const pb = [20.5 / 61.5, 20.5 / 61.5, 20.5 / 61.5];
    expect(psi(a, b)).toBeCloseTo(pa.reduce((s, x, i) => s + (x - pb[i]) * Math.log(x / pb[i]), 0), 12);
    expect(psi(b, b)).toBe(0);
    expect(psi(new Float64Array(3), b)).toBe(0);
  });

  it('PSI ignores bins empty on both sides, so one-bin histograms score 0 whatever their totals', () => {
    expect(psi(Float64Array.of(0, 256, 0, 0), Float64Array.of(0, 77962, 0, 0))).toBe(0);
    // Exactly 0, not ~1e-32 from rounding (n = 24 against 11757 gave 1.2e-32, above a calibrated threshold of 0).
    for (const total of [11757, 77962]) for (let n = 1; n < 400; n++) expect(psi(Float64Array.of(0, n, 0, 0), Float64Array.of(0, total, 0, 0))).toBe(0);
    // Extra empty bins change nothing; a row in a new bin is what raises the score.
    const a = Float64Array.of(10, 0, 30);
    const b = Float64Array.of(20, 20, 20);
    expect(psi(Float64Array.of(10, 0, 0, 30, 0), Float64Array.of(20, 20, 0, 20, 0))).toBeCloseTo(psi(a, b), 12);
    expect(psi(Float64Array.of(1, 255, 0), Float64Array.of(0, 77962, 0))).toBeGreaterThan(0);
  });
});

describe('benjaminiHochberg', () => {
  it('rejects the k smallest p-values with p₍ₖ₎ ≤ k·q/m and adjusts them', () => {
    const result = benjaminiHochberg(Float64Array.of(0.01, 0.04, 0.03, 0.005, 0.2), 0.05);
    expect(result.rejected).toBe(4);
    expect(result.pThreshold).toBe(0.04);
    expect([...result.qValues].map((v) => Number(v.toFixed(6)))).toEqual([0.025, 0.05, 0.05, 0.025, 0.2]);
  });

  it('keeps the false discovery proportion at about q on average, with all nulls and with some signals', () => {
    const random = new SeededRandom(11);
    const m = 1000;
    const q = 0.1;
    let anyFalseUnderGlobalNull = 0;
    let fdpSum = 0;
    let truePositives = 0;
    const reps = 200;
    for (let rep = 0; rep < reps; rep++) {
      const nulls = new Float64Array(m);
      for (let i = 0; i < m; i++) nulls[i] = random.next();
      if (benjaminiHochberg(nulls, q).rejected > 0) anyFalseUnderGlobalNull++;
      // 100 signals with p-values ~ U(0,1)^8 (small), 900 nulls.
      const mixed = new Float64Array(m);
      for (let i = 0; i < m; i++) mixed[i] = i < 100 ? random.next() ** 8 * 1e-3 : random.next();
      const { qValues, rejected } = benjaminiHochberg(mixed, q);
      let falses = 0;
      for (let i = 100; i < m; i++) if (qValues[i] <= q) falses++;
      for (let i = 0; i < 100; i++) if (qValues[i] <= q) truePositives++;
      fdpSum += rejected === 0 ? 0 : falses / rejected;
    }
    // Under the global null BH's FWER equals q (0.1): about 20 of 200, well below 35.
    expect(anyFalseUnderGlobalNull).toBeLessThan(35);
    // FDR = q·m0/m = 0.09 in expectation.
    expect(fdpSum / reps).toBeLessThan(0.12);
    expect(truePositives / (100 * reps)).toBeGreaterThan(0.9);
  });
});
