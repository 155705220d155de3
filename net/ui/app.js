// livedash web UI: dashboard pages with live widgets over WebSocket and a
// drag-and-resize grid (charts.js draws, pages.js has the dashboard list, the widget
// editor, export and import). No dependencies, no build step.
'use strict';

const $ = (sel, el = document) => el.querySelector(sel);
const main = $('#main');
const TOKEN_KEY = 'livedash-token';
const COLS = 12;
// A table lists the values of the dashboard's other widgets; the API still wants a
// metric for it, and gets this one, which nothing sends.
const TABLE_METRIC = 'livedash.table';

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}

// ---- API -------------------------------------------------------------------------------

async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const t = sessionStorage.getItem(TOKEN_KEY);
    if (t) headers.Authorization = 'Bearer ' + t;
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401 && attempt === 0) {
      const given = prompt('This livedash needs an access token (read, or admin to make changes):');
      if (!given) throw new Error('an access token is required');
      sessionStorage.setItem(TOKEN_KEY, given.trim());
      continue;
    }
    if (r.status === 204) return null;
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || 'HTTP ' + r.status);
    return data;
  }
}

function setStatus(text, kind) {
  const s = $('#status');
  s.textContent = text;
  s.className = 'status' + (kind ? ' ' + kind : '');
}

const fmt = Charts.fmt;

function level(v, cfg) {
  if (v === null || v === undefined) return '';
  if (cfg.crit !== undefined && v >= cfg.crit) return 'crit';
  if (cfg.warn !== undefined && v >= cfg.warn) return 'warn';
  return '';
}

// ---- routing ---------------------------------------------------------------------------

let view = null;

function route() {
  if (view) view.close();
  view = null;
  main.replaceChildren();
  $('#lag').textContent = '';
  const m = location.pathname.match(/^\/d\/([0-9a-fA-F-]{36})$/);
  // Kiosk mode (`?kiosk`): no editing, large type, for wall screens.
  const kiosk = Boolean(m) && new URLSearchParams(location.search).has('kiosk');
  document.body.classList.toggle('kiosk', kiosk);
  if (m) view = new DashboardView(m[1], kiosk);
  else showList();
}

function go(path) {
  history.pushState(null, '', path);
  route();
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-nav]');
  if (a && !e.ctrlKey && !e.metaKey && e.button === 0) {
    e.preventDefault();
    go(a.getAttribute('href'));
  }
});
window.addEventListener('popstate', route);

// ---- one dashboard ---------------------------------------------------------------------

// Points kept per line (at most HISTORY_POINTS, over at most HISTORY_MS), and
// distributions per heatmap: what a chart shows is bounded, so a page open for weeks
// holds as much as after its first minutes.
const HISTORY_POINTS = 600;
const HISTORY_MS = 5 * 60 * 1000;
const HEAT_COLUMNS = 120;

class DashboardView {
  constructor(id, kiosk) {
    this.id = id;
    this.kiosk = kiosk;
    this.dashboard = null;
    // widget_id -> {value, series, other, window_end, latest_event_time, stale, history,
    // lines (tag value -> points, grouped widgets), dists (histogram widgets)}
    this.values = new Map();
    this.cards = new Map(); // widget_id -> {el, body, kind, widget, layout}
    this.dirty = new Set();
    this.closed = false;
    this.attempt = 0;
    this.live = false;
    this.frames = 0;
    this.error = h('p', { class: 'error', role: 'alert' });
    this.grid = h('div', { class: 'grid' });
    const tools = kiosk ? [] : [h('div', { class: 'toolbar' },
      h('a', { href: '/', 'data-nav': true }, '← All dashboards'),
      h('button', { type: 'button', class: 'primary', onclick: () => this.editWidget(null) }, 'Add widget'),
      h('button', { type: 'button', onclick: () => this.rename() }, 'Rename'),
      h('button', { type: 'button', onclick: () => this.exportJson() }, 'Export'),
      h('a', { href: '/d/' + id + '?kiosk', class: 'kiosk-link' }, 'Kiosk mode'))];
    main.replaceChildren(...tools, this.error, this.grid);
    this.onResize = () => this.markAll();
    window.addEventListener('resize', this.onResize);
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.retry);
    window.removeEventListener('resize', this.onResize);
    if (this.ws) this.ws.close(1000);
  }

  connect() {
    if (this.closed) return;
    const t = sessionStorage.getItem(TOKEN_KEY);
    // The node this page came from, or (cluster mode) the live node taken after a close.
    const base = this.base || (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host;
    const url = base + '/stream/' + this.id + (t ? '?token=' + encodeURIComponent(t) : '');
    setStatus(this.attempt ? 'reconnecting' : 'connecting', 'down');
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (ev) => this.onFrame(JSON.parse(ev.data));
    ws.onclose = (ev) => {
      if (this.ws !== ws || this.closed) return;
      this.live = false;
      $('#lag').textContent = '';
      this.markAll();
      if (ev.code === 4404 || ev.code === 4410) {
        setStatus(ev.code === 4404 ? 'no such dashboard' : 'dashboard deleted', 'down');
        return;
      }
      this.nextNode(base);
      // Jittered exponential backoff: 0.5 s doubling up to 10 s, each time 50-150%.
      const delay = Math.min(10000, 500 * 2 ** this.attempt) * (0.5 + Math.random());
      this.attempt++;
      setStatus('reconnecting', 'down');
      this.retry = setTimeout(() => this.connect(), delay);
    };
  }

  // Cluster mode: after a close, the next live node the last snapshot listed (the
  // list goes round, so every node is tried in turn).
  nextNode(base) {
    const nodes = (this.nodes || []).map((u) => u.replace(/^http/, 'ws').replace(/\/+$/, ''));
    if (nodes.length < 2) return;
    const at = nodes.indexOf(base);
    this.base = nodes[(at + 1) % nodes.length];
  }

  onFrame(f) {
    if (f.type === 'snapshot') {
      this.attempt = 0;
      if (f.nodes) this.nodes = f.nodes;
      this.live = true;
      setStatus('live', 'live');
      this.values.clear();
      for (const w of f.widgets) {
        const st = { ...w, history: w.history.filter((p) => p[1] !== null).slice(-HISTORY_POINTS), lines: new Map(), dists: [] };
        delete st.detail_history;
        for (const [t, d] of w.detail_history || []) keepDetail(st, t, d);
        this.values.set(w.widget_id, st);
      }
      this.setDashboard(f.dashboard);
    } else if (f.type === 'dashboard') {
      this.setDashboard(f.dashboard);
    } else if (f.type === 'update') {
      let newest = null;
      for (const w of f.widgets) {
        const st = this.values.get(w.widget_id) || { history: [], lines: new Map(), dists: [] };
        if (!('series' in w)) { st.series = undefined; st.other = undefined; }
        Object.assign(st, w);
        const number = typeof w.value === 'number' ? w.value : null;
        // Points are placed at the time the node sent them (about when they were
        // computed), as the snapshot's history is.
        const at = f.sent_at;
        if (number !== null) {
          const last = st.history[st.history.length - 1];
          if (last && last[0] >= at) last[1] = number;
          else st.history.push([at, number]);
          const drop = keptFrom(st.history.length, (i) => st.history[i][0], at);
          if (drop) st.history.splice(0, drop);
        }
        if (w.series) keepDetail(st, at, { series: w.series, other: w.other });
        else if (w.value && typeof w.value === 'object') keepDetail(st, at, w.value);
        this.values.set(w.widget_id, st);
        if (w.latest_event_time !== null) newest = Math.max(newest ?? 0, w.latest_event_time);
        this.mark(w.widget_id);
      }
      if (newest !== null) $('#lag').textContent = 'lag ' + Math.max(0, Date.now() - newest) + ' ms';
      for (const [id, c] of this.cards) if (c.kind === 'table') this.mark(id);
    }
  }

  widgetName(w) {
    const cfg = w.display_config || {};
    return cfg.title || w.metric_name + ' ' + w.aggregation + ' (' + w.window_seconds + ' s)';
  }

  layoutOf(w, used) {
    const items = { ...((this.dashboard.layout && this.dashboard.layout.items) || {}), ...(this.pending || {}) };
    const it = items[w.widget_id];
    if (it) return { x: it.x | 0, y: it.y | 0, w: Math.max(1, it.w | 0), h: Math.max(1, it.h | 0) };
    // First free 4x3 spot, row by row.
    const overlaps = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
    for (let y = 0; ; y++) {
      for (let x = 0; x + 4 <= COLS; x++) {
        const l = { x, y, w: 4, h: 3 };
        if (!used.some((u) => overlaps(u, l))) return l;
      }
    }
  }

  setDashboard(d) {
    this.dashboard = d;
    const shown = new Set(d.widgets.map((w) => w.widget_id));
    for (const id of this.values.keys()) if (!shown.has(id)) this.values.delete(id);
    $('#title').textContent = d.name;
    document.title = d.name + ' · livedash';
    this.grid.replaceChildren();
    this.cards.clear();
    const used = [];
    for (const w of d.widgets) {
      const l = this.layoutOf(w, used);
      used.push(l);
      this.grid.append(this.card(w, l));
    }
    // A stored layout with overlaps (from an older client) is settled top to bottom.
    const byRow = [...this.cards.values()].sort((a, b) => a.layout.y - b.layout.y || a.layout.x - b.layout.x);
    for (const c of byRow) this.pushDown(c);
    if (d.widgets.length === 0) this.grid.append(h('p', { class: 'empty' }, 'No widgets yet. Use "Add widget".'));
    this.markAll();
  }

  card(w, l) {
    const cfg = w.display_config || {};
    const kind = cfg.chart || (w.aggregation === 'histogram' ? 'heatmap' : 'stat');
    const body = h('div', { class: 'body' });
    const name = h('span', { class: 'name' }, this.widgetName(w));
    if (this.kiosk) {
      const el = h('section', { class: 'widget', 'data-widget': w.widget_id, 'data-kind': kind }, h('div', { class: 'head' }, name), body);
      const card = { el, body, kind, widget: w, layout: l };
      this.place(card);
      this.cards.set(w.widget_id, card);
      return el;
    }
    const head = h('div', { class: 'head', tabindex: 0, 'aria-label': this.widgetName(w) + '; arrow keys move, shift and arrow keys resize' },
      name,
      h('button', { type: 'button', 'aria-label': 'Edit ' + this.widgetName(w), onclick: () => this.editWidget(w) }, 'Edit'),
      h('button', { type: 'button', class: 'danger', 'aria-label': 'Remove ' + this.widgetName(w), onclick: () => this.removeWidget(w) }, '✕'));
    const el = h('section', { class: 'widget', 'data-widget': w.widget_id, 'data-kind': kind }, head, body, h('div', { class: 'resize', 'aria-hidden': 'true' }));
    const card = { el, body, kind, widget: w, layout: l };
    this.place(card);
    this.dragging(card, head, el.lastChild);
    head.addEventListener('keydown', (e) => {
      const d = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[e.key];
      if (!d || e.target !== head) return;
      e.preventDefault();
      if (e.shiftKey) { l.w = Math.min(COLS - l.x, Math.max(1, l.w + d[0])); l.h = Math.max(1, l.h + d[1]); }
      else { l.x = Math.min(COLS - l.w, Math.max(0, l.x + d[0])); l.y = Math.max(0, l.y + d[1]); }
      this.place(card);
      this.pushDown(card);
      this.saveLayout();
    });
    this.cards.set(w.widget_id, card);
    return el;
  }

  // Widgets never overlap: every widget that `moved` now covers goes down below it, and
  // so on for the ones those cover (as in Grafana's grid).
  pushDown(moved) {
    const overlaps = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
    const queue = [moved];
    while (queue.length) {
      const a = queue.shift();
      for (const c of this.cards.values()) {
        if (c === a || c === moved || !overlaps(a.layout, c.layout)) continue;
        c.layout.y = a.layout.y + a.layout.h;
        this.place(c);
        queue.push(c);
      }
    }
  }

  place(card) {
    const l = card.layout;
    card.el.style.gridColumn = (l.x + 1) + ' / span ' + l.w;
    card.el.style.gridRow = (l.y + 1) + ' / span ' + l.h;
    // On narrow screens, where widgets stack, they keep the layout's reading order.
    card.el.style.order = String(l.y * COLS + l.x);
    this.mark(card.widget.widget_id);
  }

  dragging(card, handle, resizer) {
    const start = (e, mode) => {
      if (e.button !== 0 || e.target.closest('button')) return;
      e.preventDefault();
      const rect = this.grid.getBoundingClientRect();
      const gap = parseFloat(getComputedStyle(this.grid).columnGap) || 0;
      const colW = (rect.width - gap * (COLS - 1)) / COLS + gap;
      const rowH = 70 + gap;
      const l = card.layout;
      const from = { x: e.clientX, y: e.clientY, l: { ...l } };
      const move = (ev) => {
        const dx = Math.round((ev.clientX - from.x) / colW);
        const dy = Math.round((ev.clientY - from.y) / rowH);
        if (mode === 'move') {
          l.x = Math.min(COLS - l.w, Math.max(0, from.l.x + dx));
          l.y = Math.max(0, from.l.y + dy);
        } else {
          l.w = Math.min(COLS - l.x, Math.max(1, from.l.w + dx));
          l.h = Math.max(1, from.l.h + dy);
        }
        this.place(card);
        this.pushDown(card);
      };
      const up = () => {
        window.removeEventListener('pointermove', move);
        window.removeEventListener('pointerup', up);
        if (l.x !== from.l.x || l.y !== from.l.y || l.w !== from.l.w || l.h !== from.l.h) this.saveLayout();
      };
      window.addEventListener('pointermove', move);
      window.addEventListener('pointerup', up);
    };
    handle.addEventListener('pointerdown', (e) => start(e, 'move'));
    resizer.addEventListener('pointerdown', (e) => start(e, 'resize'));
  }

  // Saves the layout a moment after the last change. Until it is saved, the layout here
  // wins over the one a dashboard frame or an edit's answer carries.
  saveLayout() {
    const items = {};
    for (const [id, c] of this.cards) items[id] = { ...c.layout };
    this.pending = items;
    clearTimeout(this.layoutTimer);
    this.layoutTimer = setTimeout(async () => {
      // The widgets there are now (one may have been removed meanwhile).
      const sent = this.pending;
      const now = {};
      for (const [id, c] of this.cards) now[id] = { ...c.layout };
      const layout = { ...(this.dashboard.layout || {}), items: now };
      try {
        const d = await api('PUT', '/dashboards/' + this.id, { name: this.dashboard.name, layout });
        this.dashboard.layout = d.layout;
      } catch (err) { this.error.textContent = 'Layout not saved: ' + err.message; }
      if (this.pending === sent) this.pending = null;
    }, 300);
  }

  async rename() {
    const n = prompt('New name', this.dashboard.name);
    if (!n) return;
    try { await api('PUT', '/dashboards/' + this.id, { name: n.trim() }); } catch (err) { this.error.textContent = err.message; }
  }

  async removeWidget(w) {
    if (!confirm('Remove widget "' + this.widgetName(w) + '"?')) return;
    try { this.setDashboard(await api('PATCH', '/dashboards/' + this.id + '/widgets', { remove: [w.widget_id] })); }
    catch (err) { this.error.textContent = err.message; }
  }

  mark(id) {
    this.dirty.add(id);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  markAll() {
    for (const id of this.cards.keys()) this.mark(id);
  }

  render() {
    this.frame = null;
    this.frames++;
    for (const id of this.dirty) {
      const c = this.cards.get(id);
      if (c) this.renderCard(c);
    }
    this.dirty.clear();
  }

  renderCard(c) {
    const w = c.widget;
    const cfg = w.display_config || {};
    const st = this.values.get(w.widget_id) || { value: null, history: [], lines: new Map(), dists: [] };
    const stale = !this.live || st.stale === true;
    c.el.classList.toggle('stale', stale);
    let badge = c.el.querySelector('.badge');
    // In the header's flow, before its buttons: it never covers one.
    if (stale && !badge) c.el.querySelector('.name').after(badge = h('span', { class: 'badge' }, 'stale'));
    if (!stale && badge) badge.remove();
    const number = typeof st.value === 'number' ? st.value : null;
    if (c.kind === 'line') return this.drawLine(c, st, cfg);
    if (c.kind === 'heatmap') return this.drawHeatmap(c, st, cfg);
    if (c.kind === 'bars') {
      const { g, w: width, h: height } = this.canvas(c);
      const series = st.series || {};
      Charts.releaseColours(c.colours || new Map(), new Set(Object.keys(series)));
      for (const name of Object.keys(series).sort()) this.colour(c, name);
      const entries = Object.entries(series).map(([name, value]) => ({ name, value, colour: this.colour(c, name) }));
      if (typeof st.other === 'number') entries.push({ name: 'other', value: st.other, colour: 'gray' });
      c.cv.setAttribute('aria-label', this.widgetName(w) + ': ' + entries.map((e) => e.name + ' ' + fmt(e.value, cfg.unit)).join(', '));
      return Charts.bars(g, { w: width, h: height }, entries, cfg, this.frames);
    }
    if (c.kind === 'gauge') {
      const { g, w: width, h: height } = this.canvas(c);
      c.cv.setAttribute('aria-label', this.widgetName(w) + ': ' + fmt(number, cfg.unit));
      return Charts.gauge(g, { w: width, h: height }, number, cfg, this.frames, level(number, cfg));
    }
    if (c.kind === 'table') {
      const rows = this.dashboard.widgets.filter((x) => (x.display_config || {}).chart !== 'table').map((x) => {
        const s = this.values.get(x.widget_id);
        const val = s && typeof s.value === 'number' ? s.value : null;
        return h('tr', {}, h('td', {}, this.widgetName(x)), h('td', { class: 'v ' + level(val, x.display_config || {}) }, fmt(val, (x.display_config || {}).unit)));
      });
      c.body.replaceChildren(h('table', {}, h('tbody', {}, rows)));
      return;
    }
    let out = c.body.querySelector('.stat');
    if (!out) c.body.replaceChildren(out = h('output', { class: 'stat', 'aria-live': 'off' }));
    out.className = 'stat ' + level(number, cfg);
    out.replaceChildren(...(cfg.unit ? [fmt(number), ' ', h('small', {}, cfg.unit)] : [fmt(number)]));
    if (!level(number, cfg)) out.style.color = cfg.color || '';
    else out.style.color = '';
  }

  // The card's canvas, sized to its body (and the legend and read-out elements of
  // charts that have them), cleared.
  canvas(c, withLegend) {
    if (!c.cv) {
      c.cv = h('canvas', { role: 'img' });
      c.plot = h('div', { class: 'plot' }, c.cv);
      c.tip = h('div', { class: 'tip', role: 'status', hidden: true });
      c.legend = h('ul', { class: 'legend', 'aria-label': 'legend' });
      c.body.replaceChildren(c.plot, c.tip);
      c.cv.addEventListener('pointermove', (e) => {
        const r = c.cv.getBoundingClientRect();
        c.hover = { x: e.clientX - r.left, y: e.clientY - r.top };
        this.mark(c.widget.widget_id);
      });
      c.cv.addEventListener('pointerleave', () => { c.hover = null; this.mark(c.widget.widget_id); });
    }
    if (withLegend && !c.legend.isConnected) c.body.append(c.legend);
    if (!withLegend && c.legend.isConnected) c.legend.remove();
    const r = c.plot.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const W = Math.max(1, Math.floor(r.width * dpr)), H = Math.max(1, Math.floor(r.height * dpr));
    if (c.cv.width !== W || c.cv.height !== H) { c.cv.width = W; c.cv.height = H; }
    const g = c.cv.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, r.width, r.height);
    return { g, w: r.width, h: r.height };
  }

  colour(c, name) {
    c.colours = c.colours || new Map();
    return Charts.seriesColour(c.colours, name);
  }

  // The hover read-out, beside the pointer.
  showTip(c, lines) {
    if (!lines) { c.tip.hidden = true; return; }
    c.tip.replaceChildren(...lines.map((l) => h('div', {}, l)));
    c.tip.hidden = false;
    const x = c.hover.x + 12, room = c.plot.clientWidth - c.tip.offsetWidth - 4;
    c.tip.style.left = Math.max(0, x > room ? c.hover.x - c.tip.offsetWidth - 12 : x) + 'px';
    c.tip.style.top = Math.max(0, c.hover.y - 10) + 'px';
  }

  drawLine(c, st, cfg) {
    const grouped = Boolean(c.widget.group_by);
    if (grouped) Charts.releaseColours(c.colours || new Map(), new Set(st.lines.keys()));
    // Names in order, so that colours are given alike on every page.
    const lines = grouped
      ? [...st.lines.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([name, points]) => ({ name, colour: this.colour(c, name), points }))
      : [{ name: c.widget.metric_name, colour: cfg.color || Charts.theme(this.frames).accent, points: st.history }];
    // Largest now first, in the legend as in the read-out.
    const now = st.series || {};
    if (grouped) lines.sort((a, b) => (now[b.name] ?? -Infinity) - (now[a.name] ?? -Infinity) || a.name.localeCompare(b.name));
    const { g, w, h: ht } = this.canvas(c, grouped);
    const found = Charts.line(g, { w, h: ht }, lines, cfg, this.frames, c.hover ? c.hover.x : null);
    const current = typeof st.value === 'number' ? st.value : null;
    c.cv.setAttribute('aria-label', this.widgetName(c.widget) + ': ' + (grouped ? lines.map((l) => l.name + ' ' + fmt(now[l.name], cfg.unit)).join(', ') : fmt(current, cfg.unit)));
    if (grouped) {
      const items = lines.map((l) => h('li', {}, h('span', { class: 'swatch', style: 'background:' + l.colour }), h('span', { class: 'key' }, l.name), h('span', { class: 'v' }, fmt(now[l.name], cfg.unit))));
      if (typeof st.other === 'number') items.push(h('li', {}, h('span', { class: 'swatch other' }), h('span', { class: 'key' }, 'other'), h('span', { class: 'v' }, fmt(st.other, cfg.unit))));
      c.legend.replaceChildren(...items);
    }
    this.showTip(c, found && [Charts.clock(found.time, true), ...found.rows.map((r) => (grouped ? r.name + ': ' : '') + fmt(r.value, cfg.unit))]);
  }

  drawHeatmap(c, st, cfg) {
    const { g, w, h: ht } = this.canvas(c);
    const found = Charts.heatmap(g, { w, h: ht }, st.dists, cfg, this.frames, c.hover);
    const d = st.value && typeof st.value === 'object' ? st.value : null;
    c.cv.setAttribute('aria-label', this.widgetName(c.widget) + ': ' + (d ? d.count + ' values in ' + d.buckets.length + ' buckets' : 'no data'));
    this.showTip(c, found && [Charts.clock(found.time, true), fmt(found.lo) + ' – ' + fmt(found.hi, cfg.unit) + ': ' + found.count]);
  }

  exportJson() {
    const d = this.dashboard;
    const file = { livedash_dashboard: 1, name: d.name, layout: d.layout, widgets: d.widgets.map(({ dashboard_id, ...w }) => w) };
    const a = h('a', { href: URL.createObjectURL(new Blob([JSON.stringify(file, null, 2)], { type: 'application/json' })), download: d.name.replace(/[^\w.-]+/g, '_') + '.json' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }
}

// The index of the first of `len` points (times `at(i)`, oldest first) a chart keeps at
// `now`: at most HISTORY_POINTS, none older than HISTORY_MS.
function keptFrom(len, at, now) {
  let first = Math.max(0, len - HISTORY_POINTS);
  while (first < len && at(first) < now - HISTORY_MS) first++;
  return first;
}

// Keeps a grouped widget's series (one line per tag value) or a histogram widget's
// distribution, at time `t`: lines hold the instants `keptFrom` keeps, and a tag value
// without a point in them goes.
function keepDetail(st, t, d) {
  if (d.series) {
    st.times = st.times || [];
    if (st.times.length && st.times[st.times.length - 1] >= t) t = st.times[st.times.length - 1];
    else st.times.push(t);
    for (const [name, v] of Object.entries(d.series)) {
      let pts = st.lines.get(name);
      if (!pts) st.lines.set(name, pts = []);
      if (pts.length && pts[pts.length - 1][0] === t) pts[pts.length - 1][1] = v;
      else pts.push([t, v]);
    }
    const first = keptFrom(st.times.length, (i) => st.times[i], t);
    if (first > 0) {
      const from = st.times[first];
      st.times.splice(0, first);
      for (const [name, pts] of st.lines) {
        let drop = 0;
        while (drop < pts.length && pts[drop][0] < from) drop++;
        if (drop) pts.splice(0, drop);
        if (pts.length === 0) st.lines.delete(name);
      }
    }
  } else if (d.buckets) {
    if (st.dists.length && st.dists[st.dists.length - 1][0] >= t) st.dists[st.dists.length - 1][1] = d;
    else st.dists.push([t, d]);
    if (st.dists.length > HEAT_COLUMNS) st.dists.splice(0, st.dists.length - HEAT_COLUMNS);
  }
}


