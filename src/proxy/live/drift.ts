/**
 * The drift monitor as the live view's chart source: each monitored SAE's JSD score per window
 * (the score of the feature firing distribution, window vs baseline) with its calibrated threshold,
 * and the alerts firing now. Only JSD, so the chart's one y-axis holds comparable series; the other
 * scores stay on /metrics and the admin API. An SAE without a baseline has no score and no series.
 * Reads what the monitor already computed (`readings()` is what a Prometheus scrape reads).
 */
import type { MonitorMetricsSource } from '../../monitor/metrics.js';
import type { LiveDriftSource } from './hub.js';

/** A LiveDriftSource over the monitor service; `now` gives the sample time (epoch ms). */
export function monitorDriftSource(monitor: MonitorMetricsSource, now: () => number = Date.now): LiveDriftSource {
  return {
    snapshot() {
      const series: { name: string; value: number; threshold: number | null }[] = [];
      for (const [key, reading] of monitor.readings()) {
        for (const [window, w] of Object.entries(reading.windows)) {
          if (w.drift === null) continue;
          // The key is monitorKey's `SAE\u0000HOOK`: the NUL would reach the legend as a missing glyph.
          series.push({ name: `${key.replaceAll('\u0000', ' ')} ${window} JSD`, value: w.drift.scores.jsd, threshold: Number.isFinite(w.drift.thresholds.jsd) ? w.drift.thresholds.jsd : null });
        }
      }
      return { atMs: now(), series, alerts: [...monitor.firingAlerts()].sort() };
    },
  };
}
