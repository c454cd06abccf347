/**
 * The CSS and browser script inlined into the feature page (`html.ts`). The script is plain
 * ES2020 in a string, not a TypeScript function serialised with `toString()`: test runners and
 * bundlers rewrite functions (coverage counters, `__name` helpers) into code that would not run on
 * its own in a browser.
 *
 * The script renders only the current page of features (50 by default), so the DOM stays small
 * for a 16k-latent SAE. Every piece of report data reaches the DOM through `textContent`, `title`,
 * `dataset` or a CSSOM property — never through `innerHTML` — because token texts, labels and
 * document ids are untrusted.
 *
 * Neither string may contain `</script` or `</style` (a unit test checks); they are inlined as is.
 */

export const pageStyle = `
:root { color-scheme: light; --fg: #1d1d1f; --muted: #6b6b70; --line: #e3e3e6; --accent: #ff7a00; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #f6f6f7; }
#summary { padding: 16px 24px 10px; background: #fff; border-bottom: 1px solid var(--line); }
#summary h1 { margin: 0 0 8px; font-size: 20px; font-weight: 600; }
dl { margin: 0; }
.stats { display: flex; flex-wrap: wrap; gap: 4px 22px; }
.stat { display: flex; gap: 6px; }
.stat dt { color: var(--muted); }
.stat dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
#controls { position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; align-items: center; gap: 10px 16px; padding: 8px 24px; background: #fff; border-bottom: 1px solid var(--line); }
#filter { width: 240px; padding: 4px 8px; font: inherit; }
#page-info { color: var(--muted); font-variant-numeric: tabular-nums; }
#features { display: grid; gap: 12px; padding: 12px 24px 32px; }
.empty { color: var(--muted); }
.feature { padding: 10px 14px; background: #fff; border: 1px solid var(--line); border-radius: 6px; }
.feature-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px; }
.feature-head h2 { margin: 0; font-size: 16px; font-variant-numeric: tabular-nums; }
.label { font-weight: 600; overflow-wrap: anywhere; }
.badge { padding: 1px 6px; border-radius: 3px; font-size: 11px; font-weight: 600; text-transform: uppercase; color: #fff; }
.badge.dead { background: #8a8a8f; }
.badge.dense { background: #c0392b; }
.tag { padding: 1px 7px; border-radius: 10px; font-size: 11px; background: #e8ecff; }
.notes { margin: 4px 0; color: var(--muted); white-space: pre-wrap; }
.feature-body { display: flex; flex-wrap: wrap; gap: 6px 24px; align-items: flex-end; margin: 4px 0 6px; }
.feature-stats { display: flex; flex-wrap: wrap; gap: 4px 18px; }
.histogram { width: 192px; margin: 0; }
.hist { display: flex; gap: 1px; height: 32px; border-bottom: 1px solid var(--muted); }
.bin { flex: 1; display: flex; align-items: flex-end; }
.fill { width: 100%; background: var(--accent); }
.hist-axis { display: flex; justify-content: space-between; font-size: 10px; color: var(--muted); }
.example { display: grid; grid-template-columns: 64px minmax(0, 1fr) minmax(0, 1fr); align-items: baseline; padding: 2px 0; border-top: 1px dotted var(--line); }
.meta { padding-right: 10px; font-size: 12px; text-align: right; color: var(--muted); font-variant-numeric: tabular-nums; }
.ctx { display: flex; overflow: hidden; font: 13px/1.6 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; white-space: pre; }
.ctx.before { justify-content: flex-end; }
.tok { flex: none; white-space: pre; border-radius: 2px; }
.tok.ws { color: var(--muted); }
.tok.marked { font-weight: 700; text-decoration: underline; text-decoration-thickness: 2px; outline: 1px solid var(--accent); }
.none { margin: 4px 0; color: var(--muted); }
`;

export const pageScript = String.raw`
'use strict';
(() => {
  const report = JSON.parse(document.getElementById('report').textContent);
  const features = report.features;
  const pageSize = Number(document.body.dataset.pageSize) || 50;
  const byId = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(x) {
    if (x === 0) return '0';
    const a = Math.abs(x);
    if (a >= 1e4 || a < 1e-3) return x.toExponential(2);
    return String(Number(x.toPrecision(4)));
  }

  function pct(x) {
    if (x === 0) return '0%';
    const p = x * 100;
    return (p >= 0.01 ? String(Number(p.toPrecision(3))) : p.toExponential(1)) + '%';
  }

  // Whitespace must stay visible: a newline token is otherwise an invisible line break.
  function shown(text) {
    if (text === '') return '\u2205';
    return text.replace(/\r\n|[\n\r\u2028\u2029]/g, '\u21b5').replace(/\t/g, '\u2192');
  }

  function stat(list, field, name, value) {
    const item = el('div', 'stat');
    item.dataset.field = field;
    item.append(el('dt', '', name), el('dd', '', value));
    list.append(item);
  }

  function renderSummary() {
    const sae = report.sae;
    const header = byId('summary');
    header.append(el('h1', '', 'SAE features \u00b7 ' + sae.hookName));
    const list = el('dl', 'stats');
    stat(list, 'sae', 'SAE', sae.path);
    stat(list, 'architecture', 'architecture', sae.architecture + (sae.k ? ' (k = ' + sae.k + ')' : ''));
    stat(list, 'shape', 'd_in \u00d7 d_sae', sae.dIn + ' \u00d7 ' + sae.dSae);
    stat(list, 'hook', 'hook', sae.hookName);
    stat(list, 'model', 'model', report.model);
    stat(list, 'corpus', 'corpus', report.corpus.path + ' \u00b7 ' + report.corpus.documents + ' documents \u00b7 ' + report.corpus.tokens + ' tokens');
    stat(list, 'dead', 'dead', report.summary.dead + ' (' + pct(report.summary.dead / sae.dSae) + ')');
    stat(list, 'dense', 'dense', report.summary.dense + ' (frequency > ' + pct(report.denseThreshold) + ')');
    stat(list, 'meanL0', 'mean L0', fmt(report.summary.meanL0));
    stat(list, 'created', 'created', report.createdAt);
    header.append(list);
  }

  function histogram(feature) {
    const counts = feature.histogram.counts;
    const tallest = Math.max.apply(null, counts);
    const width = feature.histogram.max / counts.length;
    const bars = el('div', 'hist');
    counts.forEach((n, i) => {
      const bin = el('div', 'bin');
      bin.title = fmt(i * width) + '\u2013' + fmt((i + 1) * width) + ': ' + n;
      const fill = el('div', 'fill');
      fill.style.height = (tallest === 0 || n === 0 ? 0 : Math.max(4, (100 * n) / tallest)) + '%';
      bin.append(fill);
      bars.append(bin);
    });
    const axis = el('div', 'hist-axis');
    axis.append(el('span', '', '0'), el('span', '', fmt(feature.histogram.max)));
    const figure = el('figure', 'histogram');
    figure.append(bars, axis);
    return figure;
  }

  function examples(feature) {
    const box = el('div', 'examples');
    if (feature.examples.length === 0) {
      box.append(el('p', 'none', feature.dead ? 'Never fired on the corpus.' : 'No examples kept.'));
      return box;
    }
    const scale = feature.maxActivation > 0 ? feature.maxActivation : 1;
    for (const example of feature.examples) {
      const line = el('div', 'example');
      line.dataset.document = example.document;
      line.dataset.position = String(example.position);
      const meta = el('span', 'meta', fmt(example.activation));
      meta.title = example.document + ' @ token ' + example.position;
      // The activating token starts the right half, so it lines up down the card; the left half is
      // right-aligned and loses its earliest tokens first when narrow (its tooltip keeps them).
      const before = el('span', 'ctx before');
      const after = el('span', 'ctx after');
      example.tokens.forEach((text, i) => {
        const act = example.activations[i];
        const display = shown(text);
        let className = i === example.marked ? 'tok marked' : 'tok';
        if (display !== text) className += ' ws';
        const tok = el('span', className, display);
        tok.dataset.act = String(act);
        if (act > 0) tok.style.backgroundColor = 'rgba(255, 122, 0, ' + Math.min(1, act / scale).toFixed(3) + ')';
        tok.title = 'activation ' + fmt(act) + ' \u00b7 ' + JSON.stringify(text);
        (i < example.marked ? before : after).append(tok);
      });
      line.append(meta, before, after);
      box.append(line);
    }
    return box;
  }

  function card(feature) {
    const section = el('section', 'feature');
    section.dataset.index = String(feature.index);
    section.id = 'feature-' + feature.index;
    const head = el('header', 'feature-head');
    head.append(el('h2', 'index', '#' + feature.index));
    if (feature.label) head.append(el('span', 'label', feature.label));
    if (feature.dead) head.append(el('span', 'badge dead', 'dead'));
    if (feature.dense) head.append(el('span', 'badge dense', 'dense'));
    for (const tag of feature.tags || []) head.append(el('span', 'tag', tag));
    section.append(head);
    if (feature.notes) section.append(el('p', 'notes', feature.notes));
    const body = el('div', 'feature-body');
    const list = el('dl', 'feature-stats');
    stat(list, 'frequency', 'frequency', pct(feature.frequency) + ' (' + feature.firing + ' tokens)');
    stat(list, 'mean', 'mean act', fmt(feature.meanActivation));
    stat(list, 'max', 'max act', fmt(feature.maxActivation));
    body.append(list);
    if (!feature.dead) body.append(histogram(feature));
    section.append(body, examples(feature));
    return section;
  }

  const state = {
    page: 0,
    query: byId('filter').value,
    sort: byId('sort').value,
    hideDead: byId('hide-dead').checked,
    hideDense: byId('hide-dense').checked,
  };
  let visible = features;

  function textMatches(feature, q) {
    if (feature.label && feature.label.toLowerCase().includes(q)) return true;
    if (feature.notes && feature.notes.toLowerCase().includes(q)) return true;
    return (feature.tags || []).some((tag) => tag.toLowerCase().includes(q));
  }

  function select() {
    const q = state.query.trim().toLowerCase();
    const index = /^#?\d+$/.test(q) ? Number(q.replace('#', '')) : -1;
    visible = features.filter((f) => {
      if (state.hideDead && f.dead) return false;
      if (state.hideDense && f.dense) return false;
      return q === '' || f.index === index || textMatches(f, q);
    });
    if (state.sort === 'frequency') visible.sort((a, b) => b.frequency - a.frequency || a.index - b.index);
    else if (state.sort === 'max') visible.sort((a, b) => b.maxActivation - a.maxActivation || a.index - b.index);
  }

  function render() {
    const pages = Math.max(1, Math.ceil(visible.length / pageSize));
    if (state.page >= pages) state.page = pages - 1;
    const start = state.page * pageSize;
    const cards = document.createDocumentFragment();
    for (const feature of visible.slice(start, start + pageSize)) cards.append(card(feature));
    if (visible.length === 0) cards.append(el('p', 'empty', 'No features match.'));
    byId('features').replaceChildren(cards);
    const total = visible.length === features.length ? features.length + ' features' : visible.length + ' of ' + features.length + ' features';
    byId('page-info').textContent = 'page ' + (state.page + 1) + ' of ' + pages + ' \u00b7 ' + total;
    byId('prev').disabled = state.page === 0;
    byId('next').disabled = state.page >= pages - 1;
  }

  function update() {
    state.page = 0;
    select();
    render();
  }

  byId('filter').addEventListener('input', (event) => { state.query = event.target.value; update(); });
  byId('sort').addEventListener('change', (event) => { state.sort = event.target.value; update(); });
  byId('hide-dead').addEventListener('change', (event) => { state.hideDead = event.target.checked; update(); });
  byId('hide-dense').addEventListener('change', (event) => { state.hideDense = event.target.checked; update(); });
  byId('prev').addEventListener('click', () => { state.page -= 1; render(); window.scrollTo(0, 0); });
  byId('next').addEventListener('click', () => { state.page += 1; render(); window.scrollTo(0, 0); });

  renderSummary();
  select();
  render();
  document.body.dataset.ready = 'true';
})();
`;
