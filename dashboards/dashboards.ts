/**
 * saegate's Grafana dashboards as code, built with Grafana's TypeScript SDK
 * (@grafana/grafana-foundation-sdk). `generate.ts` writes them to `json/` for import; a test
 * checks the committed JSON is what this file builds and evaluates every query against a real
 * Prometheus (test/integration/prometheus-rules.test.ts). docs/dashboards.md describes each panel.
 *
 * Every panel says in its description what it shows and what a bad value looks like, because the
 * person reading it at 3 a.m. has not read docs/monitor.md.
 */
import * as common from '@grafana/grafana-foundation-sdk/common';
import { DashboardBuilder, DatasourceVariableBuilder, QueryVariableBuilder, ThresholdsConfigBuilder, ThresholdsMode, VariableRefresh, type Dashboard, type DataSourceRef } from '@grafana/grafana-foundation-sdk/dashboard';
import { DataqueryBuilder, PromQueryFormat } from '@grafana/grafana-foundation-sdk/prometheus';
import { PanelBuilder as StatPanelBuilder } from '@grafana/grafana-foundation-sdk/stat';
import { PanelBuilder as TablePanelBuilder } from '@grafana/grafana-foundation-sdk/table';
import { PanelBuilder as TimeseriesPanelBuilder } from '@grafana/grafana-foundation-sdk/timeseries';

/** Every panel queries the Prometheus chosen in the `datasource` variable. */
const DATASOURCE: DataSourceRef = { type: 'prometheus', uid: '${datasource}' };

interface Query {
  readonly expr: string;
  /** Grafana legend template, e.g. `{{sae}} {{window}}`. */
  readonly legend: string;
}

interface PanelSpec {
  readonly title: string;
  /** What the panel shows and what a bad value means. */
  readonly description: string;
  readonly queries: readonly Query[];
  /** Grafana unit id. Default `short`. */
  readonly unit?: string;
  /** Draw a red dashed line at this value (the line a healthy series stays under). */
  readonly redAbove?: number;
  /** Grid width out of 24. Default 12. */
  readonly width?: number;
}

function targets(queries: readonly Query[], instant = false): DataqueryBuilder[] {
  return queries.map((q, i) => {
    const target = new DataqueryBuilder().expr(q.expr).legendFormat(q.legend).refId(String.fromCharCode(65 + i)).datasource(DATASOURCE);
    return instant ? target.instant() : target.range();
  });
}

function thresholds(redAbove: number | undefined): ThresholdsConfigBuilder {
  const steps: { value: number | null; color: string }[] = [{ value: null, color: 'green' }];
  if (redAbove !== undefined) steps.push({ value: redAbove, color: 'red' });
  return new ThresholdsConfigBuilder().mode(ThresholdsMode.Absolute).steps(steps);
}

function timeseries(spec: PanelSpec): TimeseriesPanelBuilder {
  const panel = new TimeseriesPanelBuilder()
    .title(spec.title)
    .description(spec.description)
    .datasource(DATASOURCE)
    .targets(targets(spec.queries))
    .unit(spec.unit ?? 'short')
    .span(spec.width ?? 12)
    .height(8)
    .thresholds(thresholds(spec.redAbove));
  if (spec.redAbove !== undefined) panel.thresholdsStyle(new common.GraphThresholdsStyleConfigBuilder().mode(common.GraphThresholdsStyleMode.Dashed));
  return panel;
}

function stat(spec: PanelSpec): StatPanelBuilder {
  return new StatPanelBuilder()
    .title(spec.title)
    .description(spec.description)
    .datasource(DATASOURCE)
    .targets(targets(spec.queries, true))
    .unit(spec.unit ?? 'short')
    .span(spec.width ?? 6)
    .height(5)
    .thresholds(thresholds(spec.redAbove));
}

function table(spec: PanelSpec): TablePanelBuilder {
  return new TablePanelBuilder()
    .title(spec.title)
    .description(spec.description)
    .datasource(DATASOURCE)
    .targets(targets(spec.queries, true).map((t) => t.format(PromQueryFormat.Table)))
    .span(spec.width ?? 12)
    .height(6);
}

function datasourceVariable(): DatasourceVariableBuilder {
  return new DatasourceVariableBuilder('datasource').label('Prometheus').type('prometheus').description('The Prometheus that scrapes the saegate sidecars.');
}

/** A multi-value label filter read from `metric`; `All` matches every value. */
function labelVariable(name: string, metric: string, description: string): QueryVariableBuilder {
  return new QueryVariableBuilder(name)
    .label(name)
    .description(description)
    .datasource(DATASOURCE)
    .query(`label_values(${metric}, ${name})`)
    .refresh(VariableRefresh.OnTimeRangeChanged)
    .multi(true)
    .includeAll(true)
    .allValue('.*');
}

function dashboard(uid: string, title: string, description: string): DashboardBuilder {
  return new DashboardBuilder(title)
    .uid(uid)
    .description(description)
    .tags(['saegate'])
    .editable()
    .timezone('browser')
    .refresh('30s')
    .time({ from: 'now-3h', to: 'now' })
    .withVariable(datasourceVariable());
}

/** Numbers panels 1..n in order (Grafana wants unique ids; the SDK leaves them unset). */
function numbered(built: Dashboard): Dashboard {
  let id = 1;
  for (const panel of built.panels ?? []) panel.id = id++;
  return built;
}

const SAE = 'model=~"$model", sae=~"$sae", hook=~"$hook"';
const SAE_WINDOW = `${SAE}, window=~"$window"`;

function withSaeVariables(builder: DashboardBuilder, metric: string): DashboardBuilder {
  return builder
    .withVariable(labelVariable('model', metric, 'Served model name.'))
    .withVariable(labelVariable('sae', metric, 'SAE id.'))
    .withVariable(labelVariable('hook', metric, 'Hook point the SAE reads.'));
}

export function driftOverview(): Dashboard {
  const builder = withSaeVariables(dashboard('saegate-drift-overview', 'saegate / Drift overview', 'Drift scores against the baseline, their calibrated thresholds, and the fleet view.'), 'saegate_drift_window_tokens')
    .withVariable(labelVariable('window', 'saegate_drift_window_tokens', 'Sliding window (1m, 5m, 1h).'))
    .withPanel(
      timeseries({
        title: 'Drift score / calibrated threshold',
        description:
          'Each drift score divided by its threshold, calibrated at the window size for a 1 % false-alarm rate. Below 1 (the red line) is normal traffic; above 1 is an alarm; staying above 1 in the 5m and 1h windows means the traffic really differs from the baseline (new users, a prompt change, a model or SAE swap).',
        queries: [{ expr: `saegate_drift_score{${SAE_WINDOW}} / saegate_drift_threshold{${SAE_WINDOW}}`, legend: '{{sae}} {{statistic}} {{window}}' }],
        redAbove: 1,
        width: 24,
      }),
    )
    .withPanel(
      timeseries({
        title: 'Drift scores',
        description:
          'Raw scores: jsd (feature firing JSD, bits, 0–1), l0_psi, fvu_psi, projection_psi (population stability index) and mean_fvu. Compare with the thresholds panel; a score that grows without its threshold moving is drift, one that tracks a falling window size is sampling noise.',
        queries: [{ expr: `saegate_drift_score{${SAE_WINDOW}}`, legend: '{{sae}} {{statistic}} {{window}}' }],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Calibrated thresholds',
        description: 'The threshold each score is compared with. It falls as the window fills; a high, flat threshold means the window holds few tokens and small drifts cannot be seen.',
        queries: [{ expr: `saegate_drift_threshold{${SAE_WINDOW}}`, legend: '{{sae}} {{statistic}} {{window}}' }],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Tokens per window',
        description: 'Rows (tokens) each window holds now. 0 means no traffic reaches the monitor (scores are 0 and cannot alarm): check the tap and the SAE pipeline.',
        queries: [{ expr: `saegate_drift_window_tokens{${SAE_WINDOW}}`, legend: '{{sae}} {{window}}' }],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Features flagged (Benjamini–Hochberg)',
        description: 'Features whose firing rate in the window differs from the baseline at a 5 % false-discovery rate. A handful now and then is noise; tens to hundreds, sustained, is a shift in what the model is processing.',
        queries: [{ expr: `saegate_drift_flagged_features{${SAE_WINDOW}}`, legend: '{{sae}} {{window}}' }],
      }),
    )
    .withPanel(
      stat({
        title: 'Monitor alerts firing',
        description: 'Alerts the monitor itself evaluates, 1 while firing. Anything above 0 deserves a look at the panels above.',
        queries: [{ expr: 'sum by (alert, severity) (saegate_alert_firing)', legend: '{{alert}} ({{severity}})' }],
        redAbove: 1,
        width: 12,
      }),
    )
    .withPanel(
      stat({
        title: 'Baseline loaded',
        description: 'Per SAE, 1 when a baseline is loaded. 0 means no drift scores at all for that SAE: record or install a baseline.',
        queries: [{ expr: `min by (sae, hook) (saegate_baseline_loaded{${SAE}})`, legend: '{{sae}} {{hook}}' }],
        width: 12,
      }),
    )
    .withPanel(
      table({
        title: 'Baselines in use',
        description: 'The baseline each SAE is scored against and its size in tokens. Different baseline ids across pods of one model mean pods judge drift differently.',
        queries: [{ expr: `saegate_baseline_info{${SAE}}`, legend: '{{instance}}' }],
        width: 24,
      }),
    )
    .withPanel(
      timeseries({
        title: 'Fleet: fraction of pods drifting (5m)',
        description:
          'Across every saegate sidecar, the fraction whose 5m window has any score above its threshold (recording rule). One pod drifting is local (one tenant, one bad client); most pods drifting is a global change in traffic or a model/SAE change.',
        queries: [{ expr: 'model_sae_hook:saegate_pods_drifting:ratio{model=~"$model", sae=~"$sae", hook=~"$hook"}', legend: '{{model}} {{sae}}' }],
        unit: 'percentunit',
        redAbove: 0.5,
      }),
    )
    .withPanel(
      timeseries({
        title: 'Fleet: worst pod, score / threshold',
        description: 'The highest score/threshold ratio over all pods, per statistic and window, with the pod it comes from. Above 1 somewhere in the fleet; compare with the fraction of pods drifting.',
        queries: [{ expr: 'saegate:drift_worst_pod:ratio{model=~"$model", sae=~"$sae", hook=~"$hook", window=~"$window"}', legend: '{{instance}} {{statistic}} {{window}}' }],
        redAbove: 1,
      }),
    );
  return numbered(builder.build());
}

export function watchedFeatures(): Dashboard {
  const builder = withSaeVariables(dashboard('saegate-watched-features', 'saegate / Watched features', 'Firing rates and activations of the features the monitor watches.'), 'saegate_feature_firing_rate')
    .withVariable(labelVariable('window', 'saegate_feature_firing_rate', 'Sliding window (1m, 5m, 1h).'))
    .withVariable(labelVariable('label', 'saegate_feature_firing_rate', 'Watched feature, by its label.'));
  const FEATURE = `${SAE}, label=~"$label"`;
  builder
    .withPanel(
      timeseries({
        title: 'Firing rate',
        description: 'Fraction of tokens on which each watched feature is active. Watched features are usually ones a policy cares about (a topic, a refusal, a jailbreak pattern): a rise is more of that content in the traffic.',
        queries: [{ expr: `saegate_feature_firing_rate{${FEATURE}, window=~"$window"}`, legend: '{{label}} ({{feature}}) {{window}}' }],
        unit: 'percentunit',
        width: 24,
      }),
    )
    .withPanel(
      timeseries({
        title: 'Mean activation when active',
        description: 'Mean activation of each watched feature over the tokens where it fired. Rising activation at a steady rate means the same content, more strongly; steering that targets the feature should pull it down.',
        queries: [{ expr: `saegate_feature_mean_activation{${FEATURE}, window=~"$window"}`, legend: '{{label}} ({{feature}}) {{window}}' }],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Firing rate, last minute vs last hour',
        description: 'The 1m firing rate over the 1h rate. Around 1 is steady; far above 1 is a burst of the feature starting now; far below is the feature disappearing (for example after a prompt change).',
        queries: [{ expr: `saegate_feature_firing_rate{${FEATURE}, window="1m"} / ignoring(window) saegate_feature_firing_rate{${FEATURE}, window="1h"}`, legend: '{{label}} ({{feature}})' }],
        redAbove: 3,
      }),
    );
  return numbered(builder.build());
}

export function saeHealth(): Dashboard {
  const HOOK = 'hook=~"$hook"';
  const builder = withSaeVariables(dashboard('saegate-sae-health', 'saegate / SAE health', 'Sparsity and reconstruction of the SAEs, and rows lost in the pipeline.'), 'saegate_sae_l0_count')
    .withPanel(
      timeseries({
        title: 'L0: active latents per token',
        description: 'Median and 90th percentile of active latents per token. It should stay near the value the SAE was trained at; a jump or collapse means inputs unlike the training data (or a wrong SAE for this hook).',
        queries: [
          { expr: `histogram_quantile(0.5, sum by (le, sae, hook) (rate(saegate_sae_l0_bucket{${SAE}}[$__rate_interval])))`, legend: 'p50 {{sae}}' },
          { expr: `histogram_quantile(0.9, sum by (le, sae, hook) (rate(saegate_sae_l0_bucket{${SAE}}[$__rate_interval])))`, legend: 'p90 {{sae}}' },
        ],
      }),
    )
    .withPanel(
      timeseries({
        title: 'FVU: reconstruction error',
        description: 'Mean fraction of variance the SAE fails to reconstruct, and its 90th percentile. Low and steady is healthy; rising FVU means the SAE no longer explains the activations: out-of-distribution inputs or a model/SAE mismatch, and the features it reports are less trustworthy.',
        queries: [
          { expr: `sum by (sae, hook) (rate(saegate_sae_fvu_sum{${SAE}}[$__rate_interval])) / sum by (sae, hook) (rate(saegate_sae_fvu_count{${SAE}}[$__rate_interval]))`, legend: 'mean {{sae}}' },
          { expr: `histogram_quantile(0.9, sum by (le, sae, hook) (rate(saegate_sae_fvu_bucket{${SAE}}[$__rate_interval])))`, legend: 'p90 {{sae}}' },
        ],
        redAbove: 0.5,
      }),
    )
    .withPanel(
      timeseries({
        title: 'Rows encoded per second',
        description: 'Activation rows the SAE encoded per second, per hook. It follows token throughput; a drop to 0 with traffic flowing means the tap or the SAE pipeline stopped.',
        queries: [{ expr: `sum by (hook) (rate(saegate_sae_rows_encoded_total{${HOOK}}[$__rate_interval]))`, legend: '{{hook}}' }],
        unit: 'cps',
      }),
    )
    .withPanel(
      timeseries({
        title: 'Rows dropped per second, by reason',
        description: 'Rows the SAE pipeline did not encode (queue_full, sampled, worker_exited, encode_failed, bad_width) and rows the monitor did not count (monitor_*). sampled under load is by design; anything else above 0 is lost data and biases drift scores.',
        queries: [
          { expr: `sum by (hook, reason) (rate(saegate_sae_rows_dropped_total{${HOOK}}[$__rate_interval]))`, legend: '{{hook}} {{reason}}' },
          { expr: `sum by (hook, reason) (rate(saegate_monitor_rows_dropped_total{${SAE}}[$__rate_interval]))`, legend: '{{hook}} monitor_{{reason}}' },
        ],
        unit: 'cps',
      }),
    )
    .withPanel(
      timeseries({
        title: 'Rows queued for the SAE',
        description: 'Rows waiting for the SAE worker pool. Near 0 is healthy; a queue that keeps growing means the SAE cannot keep up and rows will be sampled or dropped.',
        queries: [{ expr: `sum by (hook) (saegate_sae_queued_rows{${HOOK}})`, legend: '{{hook}}' }],
      }),
    )
    .withPanel(
      timeseries({
        title: 'SAE latency (p99)',
        description: 'Time a batch spends with the worker pool and from first row to delivered result. Rising latency with steady traffic means the workers are saturated.',
        queries: [
          { expr: `histogram_quantile(0.99, sum by (le, hook) (rate(saegate_sae_encode_seconds_bucket{${HOOK}}[$__rate_interval])))`, legend: 'encode {{hook}}' },
          { expr: `histogram_quantile(0.99, sum by (le, hook) (rate(saegate_sae_result_latency_seconds_bucket{${HOOK}}[$__rate_interval])))`, legend: 'result {{hook}}' },
        ],
        unit: 's',
      }),
    )
    .withPanel(
      stat({
        title: 'SAE worker restarts (1h)',
        description: 'SAE worker threads replaced after a crash or exit in the last hour. Should be 0; restarts lose the rows of the batch in flight.',
        queries: [{ expr: `sum by (hook) (increase(saegate_sae_worker_restarts_total{${HOOK}}[1h]))`, legend: '{{hook}}' }],
        redAbove: 1,
        width: 12,
      }),
    )
    .withPanel(
      stat({
        title: 'Monitor rows per second',
        description: 'Encoded rows reaching the drift monitor. It should match rows encoded; a gap means the monitor is behind or not subscribed.',
        queries: [{ expr: `sum by (sae, hook) (rate(saegate_monitor_rows_total{${SAE}}[$__rate_interval]))`, legend: '{{sae}} {{hook}}' }],
        unit: 'cps',
        width: 12,
      }),
    );
  return numbered(builder.build());
}

export function proxyAndTap(): Dashboard {
  const INSTANCE = 'instance=~"$instance"';
  const builder = dashboard('saegate-proxy-tap', 'saegate / Proxy and tap', 'What the proxy adds to each request, upstream health, and the tap stream from the model server.')
    .withVariable(labelVariable('instance', 'saegate_requests_total', 'saegate sidecar (scrape target).'))
    .withPanel(
      timeseries({
        title: 'Requests per second, by route and status',
        description: 'Requests answered. 5xx statuses are saegate or upstream failures; 499 is clients giving up (often a symptom of latency).',
        queries: [{ expr: `sum by (route, status) (rate(saegate_requests_total{${INSTANCE}}[$__rate_interval]))`, legend: '{{route}} {{status}}' }],
        unit: 'reqps',
      }),
    )
    .withPanel(
      timeseries({
        title: 'Request and upstream duration (p99)',
        description: 'Whole-request and upstream time. When the two move together the model server is slow; when only the request line rises, saegate is adding time (see overhead).',
        queries: [
          { expr: `histogram_quantile(0.99, sum by (le, route) (rate(saegate_request_duration_seconds_bucket{${INSTANCE}}[$__rate_interval])))`, legend: 'request {{route}}' },
          { expr: `histogram_quantile(0.99, sum by (le, route) (rate(saegate_upstream_duration_seconds_bucket{${INSTANCE}}[$__rate_interval])))`, legend: 'upstream {{route}}' },
        ],
        unit: 's',
      }),
    )
    .withPanel(
      timeseries({
        title: 'saegate overhead (p50, p99)',
        description: 'Time saegate adds to a request (request minus upstream duration). Should be a few milliseconds; a rising p99 points at a blocked event loop or slow plan resolution.',
        queries: [
          { expr: `histogram_quantile(0.5, sum by (le) (rate(saegate_overhead_seconds_bucket{${INSTANCE}}[$__rate_interval])))`, legend: 'p50' },
          { expr: `histogram_quantile(0.99, sum by (le) (rate(saegate_overhead_seconds_bucket{${INSTANCE}}[$__rate_interval])))`, legend: 'p99' },
        ],
        unit: 's',
        redAbove: 0.05,
      }),
    )
    .withPanel(
      timeseries({
        title: 'Streaming: time to first token and inter-token gap (p99)',
        description: 'For streams, arrival to first chunk and the gap between chunks. Rising gaps mean the model server is overloaded or saegate is back-pressured.',
        queries: [
          { expr: `histogram_quantile(0.99, sum by (le) (rate(saegate_time_to_first_token_seconds_bucket{${INSTANCE}}[$__rate_interval])))`, legend: 'first token' },
          { expr: `histogram_quantile(0.99, sum by (le) (rate(saegate_inter_token_seconds_bucket{${INSTANCE}}[$__rate_interval])))`, legend: 'inter-token' },
        ],
        unit: 's',
      }),
    )
    .withPanel(
      timeseries({
        title: 'In flight',
        description: 'Requests and streams being served now. A plateau at the stream limit means clients are queued or refused.',
        queries: [
          { expr: `sum(saegate_requests_in_flight{${INSTANCE}})`, legend: 'requests' },
          { expr: `sum(saegate_active_streams{${INSTANCE}})`, legend: 'streams' },
        ],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Upstream failures, retries and stream aborts',
        description: 'Failed upstream exchanges by kind, retried attempts by reason, and streams cut short by side. Any sustained upstream failure rate is the model server or the network; client aborts alone are usually users.',
        queries: [
          { expr: `sum by (kind) (rate(saegate_upstream_failures_total{${INSTANCE}}[$__rate_interval]))`, legend: 'failure {{kind}}' },
          { expr: `sum by (reason) (rate(saegate_upstream_retries_total{${INSTANCE}}[$__rate_interval]))`, legend: 'retry {{reason}}' },
          { expr: `sum by (side) (rate(saegate_stream_aborts_total{${INSTANCE}}[$__rate_interval]))`, legend: 'abort {{side}}' },
        ],
        unit: 'reqps',
      }),
    )
    .withPanel(
      timeseries({
        title: 'Steering plans by outcome',
        description: 'Requests whose plan asked for steering: sent, skipped (no model server could apply it; forwarded unsteered) or refused (fail-closed, 503). skipped or refused above 0 means steering is not being applied.',
        queries: [{ expr: `sum by (outcome) (rate(saegate_steering_plans_total{${INSTANCE}}[$__rate_interval]))`, legend: '{{outcome}}' }],
        unit: 'reqps',
      }),
    )
    .withPanel(
      timeseries({
        title: 'Conditional steering: trigger lag in steps (p50, p99)',
        description:
          'Decode steps from the token whose SAE row fired a conditional steer to the first step the model server steered (1 = the very next step; estimated from the tap, docs/policies.md). A rising lag means the SAE path (tap, micro-batcher, workers) is falling behind generation: steering lands later in every response.',
        queries: [
          { expr: `histogram_quantile(0.5, sum by (le) (rate(saegate_policy_trigger_lag_steps_bucket{${INSTANCE}}[$__rate_interval])))`, legend: 'p50' },
          { expr: `histogram_quantile(0.99, sum by (le) (rate(saegate_policy_trigger_lag_steps_bucket{${INSTANCE}}[$__rate_interval])))`, legend: 'p99' },
        ],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Tap: rows and bytes received',
        description: 'Activation rows and bytes per second from the model servers. Should track generated tokens × hooks; 0 with traffic means no model server is connected.',
        queries: [
          { expr: `sum(rate(saegate_tap_rows_total{${INSTANCE}}[$__rate_interval]))`, legend: 'rows/s' },
          { expr: `sum(rate(saegate_tap_bytes_total{${INSTANCE}}[$__rate_interval]))`, legend: 'bytes/s' },
        ],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Tap: rows dropped, by reason',
        description: 'Rows lost on the tap: model_server (its send queue was full) or sink (the SAE pipeline refused them). Above 0 means drift is computed on a sample of the traffic.',
        queries: [{ expr: `sum by (reason) (rate(saegate_tap_rows_dropped_total{${INSTANCE}}[$__rate_interval]))`, legend: '{{reason}}' }],
        unit: 'cps',
      }),
    )
    .withPanel(
      timeseries({
        title: 'Tap: connections and errors',
        description: 'Model-server connections open, and malformed frames, protocol errors and auth failures per second. Errors above 0 mean a version mismatch, a broken client or a wrong token.',
        queries: [
          { expr: `sum(saegate_tap_connections{${INSTANCE}})`, legend: 'connections' },
          { expr: `sum(rate(saegate_tap_malformed_frames_total{${INSTANCE}}[$__rate_interval]))`, legend: 'malformed/s' },
          { expr: `sum(rate(saegate_tap_protocol_errors_total{${INSTANCE}}[$__rate_interval]))`, legend: 'protocol errors/s' },
          { expr: `sum(rate(saegate_tap_auth_failures_total{${INSTANCE}}[$__rate_interval]))`, legend: 'auth failures/s' },
        ],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Event-loop lag (p99)',
        description: "The sidecar's event-loop delay. Above 10 ms everything saegate does is delayed by that much: look for CPU starvation or a synchronous hot spot.",
        queries: [{ expr: `max by (instance) (nodejs_eventloop_lag_p99_seconds{${INSTANCE}})`, legend: '{{instance}}' }],
        unit: 's',
        redAbove: 0.01,
        width: 24,
      }),
    );
  return numbered(builder.build());
}

/** File name (without `.json`) → dashboard, in the order docs/dashboards.md lists them. */
export function allDashboards(): Record<string, Dashboard> {
  return {
    'drift-overview': driftOverview(),
    'watched-features': watchedFeatures(),
    'sae-health': saeHealth(),
    'proxy-tap': proxyAndTap(),
  };
}

/** The importable JSON of a dashboard, as `generate.ts` writes it. */
export function dashboardJson(built: Dashboard): string {
  return `${JSON.stringify(built, null, 2)}\n`;
}
