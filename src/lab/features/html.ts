/**
 * Renders a `FeatureReport` as one self-contained static HTML page: inline CSS, inline script, the
 * report embedded as JSON, nothing fetched (a Content-Security-Policy of `default-src 'none'`
 * enforces it). The page is built in the browser from the embedded JSON (`page-assets.ts`), one
 * page of feature cards at a time, so its size on screen does not grow with d_sae.
 *
 * Two layers keep untrusted text (token texts, labels, document ids) inert:
 * - The JSON is embedded with `<`, `>`, `&`, U+2028 and U+2029 written as `\uXXXX` escapes, so no
 *   `</script>` or `<!--` can appear in the data block and end it early; `JSON.parse` reads the
 *   escapes back to the original characters.
 * - The CSP allows only the page's own script and style, by SHA-256 hash; even a script that got
 *   into the document would not run.
 * The browser script then puts data into the DOM with `textContent` only.
 */
import { createHash } from 'node:crypto';
import { err } from '../../common/errors.js';
import type { FeatureReport } from './report.js';
import { pageScript, pageStyle } from './page-assets.js';

/** Options of `renderFeaturePage`. */
export interface FeaturePageOptions {
  /** Feature cards per page. Default 50. */
  pageSize?: number;
  /** Document title. Default `saegate features · <hook name>`. */
  title?: string;
}

/**
 * JSON for a `<script type="application/json">` block: `JSON.stringify` with the characters that
 * could end the block or start an HTML comment escaped. They can only occur inside JSON strings,
 * where `\uXXXX` means the same character.
 */
export function jsonForScriptBlock(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Text for an HTML text node or a double-quoted attribute. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function sha256(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

/** The page's Content-Security-Policy: its own script and style by hash, nothing else. */
export const featurePageCsp = [
  "default-src 'none'",
  `script-src ${sha256(pageScript)}`,
  `style-src ${sha256(pageStyle)}`,
  "img-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');

/** The whole page for `report`, as one HTML string. Throws SAEGATE_ERR_FEATURE_ARGUMENT for a bad `pageSize`. */
export function renderFeaturePage(report: FeatureReport, options: FeaturePageOptions = {}): string {
  const pageSize = options.pageSize ?? 50;
  if (!Number.isInteger(pageSize) || pageSize < 1) throw err('SAEGATE_ERR_FEATURE_ARGUMENT', `pageSize must be a positive integer, got ${pageSize}`);
  const title = options.title ?? `saegate features \u00b7 ${report.sae.hookName}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${escapeHtml(featurePageCsp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="saegate sae features">
<title>${escapeHtml(title)}</title>
<style>${pageStyle}</style>
</head>
<body data-page-size="${pageSize}">
<header id="summary"></header>
<nav id="controls">
<input id="filter" type="search" placeholder="filter: index or label" autocomplete="off" aria-label="filter features by index or label">
<label>sort <select id="sort"><option value="index">index</option><option value="frequency">frequency</option><option value="max">max activation</option></select></label>
<label><input id="hide-dead" type="checkbox"> hide dead</label>
<label><input id="hide-dense" type="checkbox"> hide dense</label>
<button id="prev" type="button">\u2039 prev</button>
<span id="page-info"></span>
<button id="next" type="button">next \u203a</button>
</nav>
<main id="features"><noscript>This page renders its features with JavaScript.</noscript></main>
<script type="application/json" id="report">${jsonForScriptBlock(report)}</script>
<script>${pageScript}</script>
</body>
</html>
`;
}
