/**
 * The live view's page: HTML, CSS and the browser script, served as three files by routes.ts under
 * a Content-Security-Policy of `default-src 'self'` without `unsafe-inline` (so nothing is inlined
 * here). The script is plain ES2020 in a string, not a TypeScript function serialised with
 * `toString()`: test runners rewrite functions into code that would not run on its own.
 *
 * Generated text, labels, policy names and request ids are untrusted: the script builds the DOM
 * with createElement and puts data in through `textContent`, `title`, `href` (only the server's own
 * `/ui/features/N` paths) and CSSOM properties, never `innerHTML`. Memory on the page is bounded
 * like the hub's: at most `maxRequests` cards (the server's number, sent in the snapshot) and
 * `maxSamples` chart points. The socket reconnects with backoff (1 s doubling to 10 s) and each
 * connection starts from a fresh snapshot.
 */

export const liveHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>saegate live view</title>
<link rel="stylesheet" href="/ui/live.css">
<link rel="icon" href="/ui/favicon.svg">
<script src="/ui/live.js" defer></script>
</head>
<body>
<header id="top">
<h1>saegate live view</h1>
<span id="model" class="model" hidden></span>
<span id="status" class="status">connecting</span>
</header>
<section id="chart-box">
<canvas id="chart" width="900" height="180" aria-label="drift scores or rates over time"></canvas>
<ul id="legend"></ul>
<ul id="alerts"></ul>
</section>
<main id="requests"><p class="empty" id="empty">No requests yet. Make one through the proxy.</p></main>
</body>
</html>
`;

/** The tab icon (without one the browser asks for /favicon.ico, which saegate does not serve). */
export const liveIcon = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="6" fill="#ff7a00"/></svg>';

export const liveCss = `
:root { color-scheme: light; --fg: #1d1d1f; --muted: #6b6b70; --line: #e3e3e6; --accent: #ff7a00; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #f6f6f7; }
#top { display: flex; align-items: baseline; gap: 16px; padding: 12px 24px; background: #fff; border-bottom: 1px solid var(--line); }
#top h1 { margin: 0; font-size: 18px; font-weight: 600; }
.status { font-size: 12px; padding: 1px 8px; border-radius: 10px; background: #eee; }
.status.live { background: #d8f5dc; }
.status.down { background: #fbe0dc; }
.model { font-size: 13px; color: var(--muted); }
.model .badge { margin-left: 6px; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; background: #b02a1a; }
#chart-box { padding: 10px 24px; background: #fff; border-bottom: 1px solid var(--line); }
#chart { width: 100%; max-width: 900px; height: 180px; display: block; }
#legend, #alerts { list-style: none; margin: 4px 0 0; padding: 0; display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
#alerts li { color: #b02a1a; font-weight: 600; }
#requests { display: grid; gap: 10px; padding: 12px 24px 32px; }
.empty { color: var(--muted); }
.request { padding: 8px 12px; background: #fff; border: 1px solid var(--line); border-radius: 6px; }
.request-head { display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: baseline; font-size: 12px; color: var(--muted); }
.request-head .rid { font-family: ui-monospace, Menlo, Consolas, monospace; color: var(--fg); }
.steering { display: flex; flex-wrap: wrap; gap: 4px 10px; margin: 4px 0; font-size: 12px; }
.policy { padding: 0 7px; border-radius: 10px; background: #e8ecff; }
.trigger-item { padding: 0 7px; border-radius: 10px; background: #ffe9d6; }
.applied { font-family: ui-monospace, Menlo, Consolas, monospace; color: var(--muted); }
.tokens { font: 13px/1.8 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; white-space: pre-wrap; overflow-wrap: anywhere; }
.tok { border-radius: 2px; cursor: pointer; }
.tok.prompt { color: var(--muted); }
.tok.trigger { outline: 2px solid var(--accent); }
.details { margin-top: 4px; font-size: 12px; }
.details a { color: #2450c8; }
`;

export const liveScript = String.raw`
'use strict';
(() => {
  const state = { requests: new Map(), samples: [], maxRequests: 50, maxSamples: 120, featurePages: {} };
  const list = document.getElementById('requests');
  const empty = document.getElementById('empty');
  const statusEl = document.getElementById('status');
  const modelEl = document.getElementById('model');
  const canvas = document.getElementById('chart');
  const legend = document.getElementById('legend');
  const alertsEl = document.getElementById('alerts');
  const COLORS = ['#ff7a00', '#2450c8', '#1a9850', '#b02a1a', '#7b3294', '#008080'];

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function hue(index) { return Math.round((index * 137.508) % 360); }
  function setStatus(text, cls) { statusEl.textContent = text; statusEl.className = 'status ' + cls; }

  // The served model, when the server says which (the demo does); a synthetic one gets a badge.
  function showModel(model) {
    if (!model || typeof model.name !== 'string') { modelEl.hidden = true; modelEl.replaceChildren(); return; }
    modelEl.replaceChildren(el('span', 'model-name', 'model ' + model.name));
    if (model.synthetic === true) modelEl.append(el('span', 'badge synthetic', 'SYNTHETIC: untrained, writes gibberish'));
    modelEl.classList.toggle('synthetic', model.synthetic === true);
    modelEl.title = typeof model.detail === 'string' ? model.detail : '';
    modelEl.hidden = false;
  }

  function featureLine(f) {
    return '#' + f.index + ' ' + f.value.toFixed(2) + (f.label ? ' ' + f.label : '') + ' (' + f.hook + ')';
  }

  function showDetails(box, token, triggers) {
    box.replaceChildren();
    box.append(el('span', null, 'position ' + token.position + ' ' + JSON.stringify(token.text) + ': '));
    if (token.features.length === 0) box.append(el('span', null, 'no SAE features'));
    token.features.forEach((f, i) => {
      if (i > 0) box.append(el('span', null, ', '));
      const page = state.featurePages[f.hook];
      if (typeof page === 'string' && page.startsWith('/ui/features/')) {
        const a = el('a', null, featureLine(f));
        a.href = page;
        a.target = '_blank';
        a.rel = 'noopener';
        box.append(a);
      } else {
        box.append(el('span', null, featureLine(f)));
      }
    });
    for (const t of triggers) if (t.triggerPosition === token.position) box.append(el('span', null, '; ' + t.kind + ' ' + t.policy + ' fired here'));
  }

  function renderRequest(view) {
    let card = state.requests.get(view.id)?.card;
    if (!card) {
      card = el('article', 'request');
      card.dataset.requestId = view.id;
      list.insertBefore(card, list.firstChild === empty ? empty.nextSibling : list.firstChild);
    }
    state.requests.set(view.id, { view, card });
    empty.hidden = true;
    const head = el('div', 'request-head');
    head.append(el('span', 'rid', view.id), el('span', null, view.route + (view.model ? ' · ' + view.model : '')),
      el('span', null, new Date(view.startedAtMs).toLocaleTimeString()),
      el('span', 'state', view.endedAtMs === null ? 'running' : 'done' + (view.finishReason ? ' (' + view.finishReason + ')' : '')));
    const steering = el('div', 'steering');
    if (view.policies.length === 0) steering.append(el('span', 'policy none', 'no policy'));
    for (const p of view.policies) steering.append(el('span', 'policy', p));
    if (view.steeringTerms > 0) steering.append(el('span', null, view.steeringTerms + ' steering term' + (view.steeringTerms === 1 ? '' : 's')));
    for (const t of view.triggers) {
      steering.append(el('span', 'trigger-item', t.kind + (t.flag ? ' ' + t.flag : '') + ' ' + t.policy + ' at position ' + t.triggerPosition +
        (t.lagSteps !== undefined ? ' (lag ' + t.lagSteps + ' step' + (t.lagSteps === 1 ? '' : 's') + ')' : '') + (t.outcome ? ' [' + t.outcome + ']' : '')));
    }
    if (view.applied !== null) steering.append(el('span', 'applied', 'x-saegate-applied: ' + view.applied));
    const tokens = el('div', 'tokens');
    let max = 0;
    for (const t of view.tokens) if (t.features.length > 0) max = Math.max(max, t.features[0].value);
    const details = el('div', 'details');
    const triggerAt = new Set(view.triggers.map((t) => t.triggerPosition));
    for (const t of view.tokens) {
      const span = el('span', 'tok', t.text);
      if (view.promptTokens !== null && t.position < view.promptTokens) span.classList.add('prompt');
      if (triggerAt.has(t.position)) span.classList.add('trigger');
      const top = t.features[0];
      if (top && max > 0) {
        span.classList.add('hl');
        span.dataset.feature = String(top.index);
        span.style.backgroundColor = 'hsla(' + hue(top.index) + ', 85%, 55%, ' + (0.12 + 0.68 * Math.max(0, top.value) / max).toFixed(3) + ')';
      }
      span.title = 'position ' + t.position + (t.features.length ? '\n' + t.features.map(featureLine).join('\n') : '\nno SAE features');
      span.addEventListener('click', () => showDetails(details, t, view.triggers));
      tokens.append(span);
    }
    if (view.truncatedTokens > 0) tokens.append(el('span', 'truncated', ' … ' + view.truncatedTokens + ' more tokens not kept'));
    card.replaceChildren(head, steering, tokens, details);
  }

  function evict(id) {
    const entry = state.requests.get(id);
    if (!entry) return;
    entry.card.remove();
    state.requests.delete(id);
  }

  function trim() {
    // The server evicts too; this keeps the page bounded even if an evict message was missed.
    while (state.requests.size > state.maxRequests) evict(state.requests.keys().next().value);
  }

  function drawChart() {
    const ctx = canvas.getContext('2d');
    const w = canvas.width, h = canvas.height, pad = 28;
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, w, h);
    ctx.strokeStyle = '#e3e3e6';
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad / 2 + ((h - pad) * i) / 4;
      ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 4, y); ctx.stroke();
    }
    const samples = state.samples;
    const names = [];
    for (const s of samples) for (const p of s.series) if (!names.includes(p.name) && names.length < COLORS.length) names.push(p.name);
    let max = 0;
    for (const s of samples) for (const p of s.series) {
      if (Number.isFinite(p.value)) max = Math.max(max, p.value);
      if (p.threshold !== null && Number.isFinite(p.threshold)) max = Math.max(max, p.threshold);
    }
    if (max <= 0) max = 1;
    // The samples present fill the width (a new page has few); older ones scroll off at maxSamples.
    const x = (i) => pad + ((w - pad - 4) * i) / Math.max(1, samples.length - 1);
    const y = (v) => pad / 2 + (h - pad) * (1 - v / max);
    ctx.fillStyle = '#6b6b70';
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillText(max.toPrecision(3), 2, pad / 2 + 4);
    ctx.fillText('0', 2, h - pad / 2);
    names.forEach((name, n) => {
      ctx.strokeStyle = COLORS[n];
      ctx.lineWidth = 2;
      ctx.setLineDash([]);
      ctx.beginPath();
      let started = false;
      samples.forEach((s, i) => {
        const p = s.series.find((q) => q.name === name);
        if (!p || !Number.isFinite(p.value)) return;
        if (started) ctx.lineTo(x(i), y(p.value)); else { ctx.moveTo(x(i), y(p.value)); started = true; }
      });
      ctx.stroke();
      const last = samples.length ? samples[samples.length - 1].series.find((q) => q.name === name) : undefined;
      if (last && last.threshold !== null && Number.isFinite(last.threshold)) {
        ctx.setLineDash([4, 4]);
        ctx.lineWidth = 1;
        ctx.beginPath(); ctx.moveTo(pad, y(last.threshold)); ctx.lineTo(w - 4, y(last.threshold)); ctx.stroke();
        ctx.setLineDash([]);
      }
    });
    legend.replaceChildren(...names.map((name, n) => {
      const li = el('li');
      const sw = el('span', 'swatch');
      sw.style.backgroundColor = COLORS[n];
      const last = samples[samples.length - 1].series.find((q) => q.name === name);
      li.append(sw, el('span', null, name + (last ? ' ' + last.value.toFixed(2) : '')));
      return li;
    }));
    const alerts = samples.length ? samples[samples.length - 1].alerts : [];
    alertsEl.replaceChildren(...alerts.map((a) => el('li', null, a)));
    canvas.dataset.samples = String(samples.length);
  }

  function onMessage(message) {
    if (message.type === 'snapshot') {
      for (const id of [...state.requests.keys()]) evict(id);
      state.maxRequests = message.maxRequests;
      state.maxSamples = message.maxSamples;
      state.featurePages = message.featurePages;
      showModel(message.servedModel);
      for (const view of message.requests) renderRequest(view);
      state.samples = message.samples.slice(-state.maxSamples);
      trim();
      drawChart();
    } else if (message.type === 'requests') {
      for (const view of message.requests) renderRequest(view);
      trim();
    } else if (message.type === 'model') {
      showModel(message.servedModel);
    } else if (message.type === 'evict') {
      for (const id of message.ids) evict(id);
    } else if (message.type === 'sample') {
      state.samples.push(message.sample);
      if (state.samples.length > state.maxSamples) state.samples.splice(0, state.samples.length - state.maxSamples);
      drawChart();
    }
    empty.hidden = state.requests.size > 0;
  }

  let backoff = 1000;
  function connect() {
    const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ui/ws');
    ws.onopen = () => { backoff = 1000; setStatus('live', 'live'); };
    ws.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      onMessage(message);
    };
    ws.onclose = () => {
      setStatus('disconnected; reconnecting in ' + Math.round(backoff / 1000) + ' s', 'down');
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }
  drawChart();
  connect();
})();
`;
