// livedash web UI: dashboard list, dashboard pages with live widgets over WebSocket,
// widget editing and a drag-and-resize grid. No dependencies, no build step.
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

function fmt(v, unit) {
  if (v === null || v === undefined) return '–';
  const abs = Math.abs(v);
  const digits = abs >= 1000 ? 0 : abs >= 100 ? 1 : abs >= 1 ? 2 : 4;
  return v.toLocaleString(undefined, { maximumFractionDigits: digits }) + (unit ? ' ' + unit : '');
}

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
  if (m) view = new DashboardView(m[1]);
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

// ---- dashboard list --------------------------------------------------------------------

async function showList() {
  $('#title').textContent = 'Dashboards';
  setStatus('', '');
  const error = h('p', { class: 'error', role: 'alert' });
  const name = h('input', { name: 'name', required: true, maxlength: 200, autocomplete: 'off' });
  const form = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const d = await api('POST', '/dashboards', { name: name.value.trim(), layout: { items: {} }, widgets: [] });
      go('/d/' + d.dashboard_id);
    } catch (err) { error.textContent = err.message; }
  } }, h('label', {}, 'New dashboard name', name), h('button', { class: 'primary', type: 'submit' }, 'Create dashboard'));
  const list = h('ul', { class: 'list', 'aria-label': 'dashboards' });
  main.replaceChildren(h('h1', {}, 'Dashboards'), form, error, list);
  let dashboards;
  try { dashboards = await api('GET', '/dashboards'); } catch (err) { error.textContent = err.message; return; }
  if (dashboards.length === 0) list.append(h('li', { class: 'empty' }, 'No dashboards yet. Create one above.'));
  for (const d of dashboards) {
    list.append(h('li', {},
      h('a', { href: '/d/' + d.dashboard_id, 'data-nav': true }, d.name),
      h('span', { class: 'empty' }, d.widgets.length + ' widgets'),
      h('button', { type: 'button', onclick: async () => {
        const n = prompt('New name', d.name);
        if (!n) return;
        try { await api('PUT', '/dashboards/' + d.dashboard_id, { name: n.trim() }); showList(); } catch (err) { error.textContent = err.message; }
      } }, 'Rename'),
      h('button', { type: 'button', class: 'danger', onclick: async () => {
        if (!confirm('Delete dashboard "' + d.name + '"?')) return;
        try { await api('DELETE', '/dashboards/' + d.dashboard_id); showList(); } catch (err) { error.textContent = err.message; }
      } }, 'Delete')));
  }
}

// ---- one dashboard ---------------------------------------------------------------------

const HISTORY_POINTS = 600;

class DashboardView {
  constructor(id) {
    this.id = id;
    this.dashboard = null;
    this.values = new Map(); // widget_id -> {value, window_end, latest_event_time, stale, history}
    this.cards = new Map(); // widget_id -> {el, body, render}
    this.dirty = new Set();
    this.closed = false;
    this.attempt = 0;
    this.live = false;
    this.error = h('p', { class: 'error', role: 'alert' });
    this.grid = h('div', { class: 'grid' });
    main.replaceChildren(h('div', { class: 'toolbar' },
      h('a', { href: '/', 'data-nav': true }, '← All dashboards'),
      h('button', { type: 'button', class: 'primary', onclick: () => this.editWidget(null) }, 'Add widget'),
      h('button', { type: 'button', onclick: () => this.rename() }, 'Rename')), this.error, this.grid);
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
        this.values.set(w.widget_id, { ...w, history: w.history.filter((p) => p[1] !== null).slice(-HISTORY_POINTS) });
      }
      this.setDashboard(f.dashboard);
    } else if (f.type === 'dashboard') {
      this.setDashboard(f.dashboard);
    } else if (f.type === 'update') {
      let newest = null;
      for (const w of f.widgets) {
        const st = this.values.get(w.widget_id) || { history: [] };
        Object.assign(st, w);
        if (w.value !== null) {
          st.history.push([w.window_end, w.value]);
          if (st.history.length > HISTORY_POINTS) st.history.shift();
        }
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
    const kind = cfg.chart || 'stat';
    const body = h('div', { class: 'body' });
    const head = h('div', { class: 'head', tabindex: 0, 'aria-label': this.widgetName(w) + '; arrow keys move, shift and arrow keys resize' },
      h('span', { class: 'name' }, this.widgetName(w)),
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

  async editWidget(w) {
    const dialog = $('#widget-dialog');
    const form = $('#widget-form');
    const err = $('#widget-error');
    err.textContent = '';
    form.reset();
    // Fields that do not apply to the chart kind are hidden: a table lists the other
    // widgets' values and has no metric of its own; min and max are a gauge's.
    const kindFields = () => {
      const kind = form.elements.chart.value;
      for (const label of form.querySelectorAll('[data-for]')) {
        const hide = (label.dataset.for === 'metric' && kind === 'table') || (label.dataset.for === 'gauge' && kind !== 'gauge');
        label.hidden = hide;
        for (const input of label.querySelectorAll('input, select')) input.disabled = hide;
      }
    };
    form.elements.chart.onchange = kindFields;
    form.oninput = () => { err.textContent = ''; };
    $('#widget-dialog-title').textContent = w ? 'Edit widget' : 'Add widget';
    if (w) {
      const cfg = w.display_config || {};
      const set = (n, v) => { if (v !== undefined && v !== null) form.elements[n].value = v; };
      set('metric_name', w.metric_name); set('aggregation', w.aggregation);
      set('window_seconds', w.window_seconds); set('refresh_interval_seconds', w.refresh_interval_seconds);
      set('filter', Object.entries(w.filter || {}).map(([k, v]) => k + '=' + v).join(', '));
      for (const k of ['chart', 'title', 'unit', 'color', 'warn', 'crit', 'min', 'max']) set(k, cfg[k]);
    }
    kindFields();
    api('GET', '/api/metric-names').then((names) => {
      $('#metric-names').replaceChildren(...names.map((n) => h('option', { value: n })));
    }).catch(() => {});
    form.onsubmit = async (e) => {
      e.preventDefault();
      err.textContent = '';
      const v = (n) => form.elements[n].value.trim();
      const num = (n) => (v(n) === '' ? undefined : Number(v(n)));
      const kind = v('chart');
      const problem = (() => {
        if (kind !== 'table' && !/^[A-Za-z0-9_.:\/-]+$/.test(v('metric_name'))) return 'Metric: letters, digits and _ . : / - only';
        const refresh = num('refresh_interval_seconds');
        if (!(refresh >= 0.1 && refresh <= 3600)) return 'Refresh: from 0.1 to 3600 seconds';
        const [warn, crit] = [num('warn'), num('crit')];
        if (warn !== undefined && crit !== undefined && !(warn < crit)) return 'Warning at must be below Critical at';
        if (kind === 'gauge' && !(num('min') < num('max'))) return 'Gauge min must be below Gauge max';
        return null;
      })();
      if (problem) { err.textContent = problem; return; }
      const filter = {};
      for (const part of v('filter').split(',').map((s) => s.trim()).filter(Boolean)) {
        const at = part.indexOf('=');
        if (at < 1) { err.textContent = 'Tag filter entries are key=value, separated by commas'; return; }
        filter[part.slice(0, at).trim()] = part.slice(at + 1).trim();
      }
      const display = { chart: v('chart'), color: v('color') };
      if (v('title')) display.title = v('title');
      if (v('unit')) display.unit = v('unit');
      for (const k of kind === 'gauge' ? ['warn', 'crit', 'min', 'max'] : ['warn', 'crit']) if (num(k) !== undefined) display[k] = num(k);
      const spec = kind === 'table'
        ? { metric_name: TABLE_METRIC, aggregation: 'count', window_seconds: 60, refresh_interval_seconds: num('refresh_interval_seconds'), filter: {}, display_config: display }
        : {
          metric_name: v('metric_name'), aggregation: v('aggregation'),
          window_seconds: Math.round(num('window_seconds')), refresh_interval_seconds: num('refresh_interval_seconds'),
          filter, display_config: display,
        };
      const body = w ? { update: [{ widget_id: w.widget_id, ...spec }] } : { add: [spec] };
      try {
        this.setDashboard(await api('PATCH', '/dashboards/' + this.id + '/widgets', body));
        dialog.close();
      } catch (ex) { err.textContent = ex.message; }
    };
    $('#widget-cancel').onclick = () => dialog.close();
    dialog.showModal();
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
    for (const id of this.dirty) {
      const c = this.cards.get(id);
      if (c) this.renderCard(c);
    }
    this.dirty.clear();
  }

  renderCard(c) {
    const w = c.widget;
    const cfg = w.display_config || {};
    const st = this.values.get(w.widget_id) || { value: null, history: [] };
    const stale = !this.live || st.stale === true;
    c.el.classList.toggle('stale', stale);
    let badge = c.el.querySelector('.badge');
    // In the header's flow, before its buttons: it never covers one.
    if (stale && !badge) c.el.querySelector('.name').after(badge = h('span', { class: 'badge' }, 'stale'));
    if (!stale && badge) badge.remove();
    if (c.kind === 'line') return this.drawLine(c, st, cfg);
    if (c.kind === 'gauge') return this.drawGauge(c, st, cfg);
    if (c.kind === 'table') {
      const rows = this.dashboard.widgets.filter((x) => (x.display_config || {}).chart !== 'table').map((x) => {
        const s = this.values.get(x.widget_id);
        const val = s ? s.value : null;
        return h('tr', {}, h('td', {}, this.widgetName(x)), h('td', { class: 'v ' + level(val, x.display_config || {}) }, fmt(val, (x.display_config || {}).unit)));
      });
      c.body.replaceChildren(h('table', {}, h('tbody', {}, rows)));
      return;
    }
    let out = c.body.querySelector('.stat');
    if (!out) c.body.replaceChildren(out = h('output', { class: 'stat', 'aria-live': 'off' }));
    out.className = 'stat ' + level(st.value, cfg);
    out.replaceChildren(...(cfg.unit ? [fmt(st.value), ' ', h('small', {}, cfg.unit)] : [fmt(st.value)]));
    if (!level(st.value, cfg)) out.style.color = cfg.color || '';
    else out.style.color = '';
  }

  canvas(c) {
    let cv = c.body.querySelector('canvas');
    if (!cv) c.body.replaceChildren(cv = h('canvas', { role: 'img' }));
    const r = c.body.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const W = Math.max(1, Math.floor(r.width * dpr)), H = Math.max(1, Math.floor(r.height * dpr));
    if (cv.width !== W || cv.height !== H) { cv.width = W; cv.height = H; }
    const g = cv.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, r.width, r.height);
    return { cv, g, w: r.width, h: r.height };
  }

  drawLine(c, st, cfg) {
    const { cv, g, w, h: ht } = this.canvas(c);
    const pts = st.history;
    cv.setAttribute('aria-label', this.widgetName(c.widget) + ': ' + fmt(st.value, cfg.unit));
    g.font = '12px system-ui, sans-serif';
    g.fillStyle = '#4a5260';
    if (pts.length === 0) { g.fillText('no data yet', 8, 18); return; }
    let lo = Infinity, hi = -Infinity;
    for (const p of pts) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
    for (const t of [cfg.warn, cfg.crit]) if (t !== undefined) { lo = Math.min(lo, t); hi = Math.max(hi, t); }
    if (hi === lo) { hi += 1; lo -= 1; }
    const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
    const pad = 6, top = 18;
    const X = (t) => pad + (w - 2 * pad) * (t - t0) / (t1 - t0);
    const Y = (v) => top + (ht - top - pad) * (1 - (v - lo) / (hi - lo));
    for (const [t, col] of [[cfg.warn, '#9a5b00'], [cfg.crit, '#b3261e']]) {
      if (t === undefined) continue;
      g.strokeStyle = col; g.setLineDash([4, 4]); g.beginPath(); g.moveTo(pad, Y(t)); g.lineTo(w - pad, Y(t)); g.stroke();
    }
    g.setLineDash([]);
    g.strokeStyle = cfg.color || '#2f6fdb';
    g.lineWidth = 2;
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(X(p[0]), Y(p[1])) : g.moveTo(X(p[0]), Y(p[1]))));
    g.stroke();
    g.fillStyle = '#15181d';
    g.fillText(fmt(st.value, cfg.unit), pad, 13);
    g.fillStyle = '#4a5260';
    const range = fmt(lo) + ' – ' + fmt(hi);
    g.fillText(range, w - pad - g.measureText(range).width, 13);
  }

  drawGauge(c, st, cfg) {
    const { cv, g, w, h: ht } = this.canvas(c);
    const min = cfg.min ?? 0, max = cfg.max ?? 100;
    const v = st.value;
    cv.setAttribute('aria-label', this.widgetName(c.widget) + ': ' + fmt(v, cfg.unit));
    const cx = w / 2, cy = ht * 0.78, r = Math.max(10, Math.min(w / 2, ht * 0.7) - 10);
    const arc = (from, to, col) => { g.strokeStyle = col; g.beginPath(); g.arc(cx, cy, r, Math.PI + from * Math.PI, Math.PI + to * Math.PI); g.stroke(); };
    const frac = (x) => Math.min(1, Math.max(0, (x - min) / (max - min || 1)));
    g.lineWidth = Math.max(6, r / 5);
    arc(0, 1, '#e3e6eb');
    if (v !== null && v !== undefined) {
      const lv = level(v, cfg);
      arc(0, frac(v), lv === 'crit' ? '#b3261e' : lv === 'warn' ? '#9a5b00' : (cfg.color || '#2f6fdb'));
    }
    g.fillStyle = '#15181d';
    g.font = '600 ' + Math.max(12, r / 3) + 'px system-ui, sans-serif';
    const text = fmt(v, cfg.unit);
    g.fillText(text, cx - g.measureText(text).width / 2, cy - 4);
  }
}

route();
