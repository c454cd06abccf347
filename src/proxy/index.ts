export { buildProxyApp, type ProxyApp, type ProxyAppOptions } from './app.js';
export {
  CONFIG_FILE_ENV,
  envName,
  flagName,
  isLoopbackHost,
  proxyConfigKeys,
  proxyOptions,
  readConfigFile,
  redactConfig,
  resolveProxyConfig,
  type ConfigSources,
  type ProxyConfig,
  type ProxyConfigKey,
} from './config.js';
export { EMPTY_PLAN, appliedValue, emptyPlanResolver, type PlanRequest, type PlanResolver, type RequestPlan, type SteeringTerm } from './plan.js';
export { readRequestFields, type RequestFields } from './request-fields.js';
export { checkTapExposure, startProxy, type ProxyServer, type StartProxyOptions } from './server.js';
export { CountingSink, type ActivationSink, type CountingSinkOptions, type RequestRowCounts, type TapSource } from './sink.js';
export { TapHub, type SubscribeResult, type TapConnectionSummary, type TapHubOptions } from './tap-hub.js';
export { APPLIED_HEADER, PLAN_ID_HEADER, REQUEST_ID_HEADER } from './headers.js';
