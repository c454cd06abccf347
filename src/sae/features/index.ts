export { FeatureAccumulator, type FeatureAccumulatorOptions, type FeatureDocument, type FeatureReportMeta, type FeatureToken } from './accumulator.js';
export { featurePageCsp, renderFeaturePage, type FeaturePageOptions } from './html.js';
export { applyLabels, parseFeatureLabels, readFeatureLabels, type FeatureLabel, type FeatureLabels, type FeatureLabelsOptions } from './labels.js';
export {
  FEATURE_REPORT_VERSION,
  readFeatureReport,
  writeFeatureReport,
  type FeatureEntry,
  type FeatureExample,
  type FeatureHistogram,
  type FeatureReport,
  type FeatureReportExampleSettings,
  type FeatureReportSae,
} from './report.js';
