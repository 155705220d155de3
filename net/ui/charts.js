// livedash web UI: the charts. Line charts (one or more series) with a time axis, a
// value axis with units, a legend and a hover read-out; heatmaps of histogram widgets;
// bar lists of grouped widgets; gauges. Each draws on a canvas the card owns, with the
// theme's colours, and is called at most once per animation frame per card.
'use strict';

const Charts = (() => {
  // The theme's colours, read once per frame (they follow the system's dark setting).
  let theme = null;
  let themeFrame = -1;
  function colours(frame) {
    if (theme && themeFrame === frame) return theme;
    const css = getComputedStyle(document.documentElement);
    const v = (n) => css.getPropertyValue(n).trim();
    theme = { fg: v('--fg'), muted: v('--muted'), line: v('--line'), grid: v('--grid'), card: v('--card'),
      accent: v('--accent'), warn: v('--warn'), crit: v('--crit'), track: v('--track'), heat: v('--heat') };
    themeFrame = frame;
    return theme;
  }

  // Twelve well-separated colours, then hues spread by the golden angle.
  const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#9c755f',
    '#ff9da7', '#17becf', '#8c564b', '#bcbd22'];
  function hash(name) {
    let x = 2166136261;
    for (let i = 0; i < name.length; i++) { x ^= name.charCodeAt(i); x = Math.imul(x, 16777619); }
    return x >>> 0;
  }

  // The colour of tag value `name` on a chart whose values have the colours in
  // `given` (a Map, kept for the chart's life): its palette slot by hash, or the next
  // one free, so a value keeps its colour while it is shown and values that arrive in
  // the same order get the same colours on every page and reload.
  function seriesColour(given, name) {
    const had = given.get(name);
    if (had) return had;
    const used = new Set(given.values());
    let colour = null;
    for (let i = 0; i < PALETTE.length && colour === null; i++) {
      const c = PALETTE[(hash(name) + i) % PALETTE.length];
      if (!used.has(c)) colour = c;
    }
    if (colour === null) colour = `hsl(${((hash(name) * 137.508) % 360).toFixed(0)} 65% 50%)`;
    given.set(name, colour);
    return colour;
  }

  // Forgets the colours of tag values no longer shown (`shown`: a Set).
  function releaseColours(given, shown) {
    for (const name of given.keys()) if (!shown.has(name)) given.delete(name);
  }

  function fmt(v, unit) {
    if (v === null || v === undefined) return '–';
    const abs = Math.abs(v);
    const digits = abs >= 1000 ? 0 : abs >= 100 ? 1 : abs >= 1 ? 2 : 4;
    const text = abs >= 1e9 ? v.toExponential(2) : v.toLocaleString(undefined, { maximumFractionDigits: digits });
    return text + (unit ? ' ' + unit : '');
  }

  // About `count` round steps over [lo, hi]: 1, 2 or 5 times a power of ten.
  function niceTicks(lo, hi, count) {
    const span = hi - lo;
    if (!(span > 0)) return [lo];
    const raw = span / Math.max(1, count);
    const pow = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) || raw;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    return out;
  }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400].map((s) => s * 1000);
  function timeTicks(t0, t1, count) {
    const raw = (t1 - t0) / Math.max(1, count);
    const step = TIME_STEPS.find((s) => s >= raw) || TIME_STEPS[TIME_STEPS.length - 1];
    const out = [];
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
    return { ticks: out, step };
  }
  const pad2 = (n) => String(n).padStart(2, '0');
  function clock(t, withSeconds) {
    const d = new Date(t);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + (withSeconds ? ':' + pad2(d.getSeconds()) : '');
  }

  // The plot area of a chart with axes, and its scales.
  function frameAxes(g, size, t0, t1, lo, hi, unit, c, log) {
    g.font = '11px system-ui, sans-serif';
    const ticks = log ? logTicks(lo, hi) : niceTicks(lo, hi, Math.max(2, Math.floor(size.h / 40)));
    const labels = ticks.map((t) => fmt(t, unit));
    const left = Math.ceil(Math.max(...labels.map((l) => g.measureText(l).width), 10)) + 8;
    const plot = { x: left, y: 6, w: Math.max(10, size.w - left - 8), h: Math.max(10, size.h - 6 - 18) };
    const X = (t) => plot.x + plot.w * (t - t0) / (t1 - t0 || 1);
    const Y = log
      ? (v) => plot.y + plot.h * (1 - (Math.log(Math.max(v, lo)) - Math.log(lo)) / (Math.log(hi) - Math.log(lo) || 1))
      : (v) => plot.y + plot.h * (1 - (v - lo) / (hi - lo || 1));
    g.strokeStyle = c.grid;
    g.fillStyle = c.muted;
    g.lineWidth = 1;
    g.textBaseline = 'middle';
    ticks.forEach((t, i) => {
      const y = Math.round(Y(t)) + 0.5;
      g.beginPath(); g.moveTo(plot.x, y); g.lineTo(plot.x + plot.w, y); g.stroke();
      g.fillText(labels[i], plot.x - 6 - g.measureText(labels[i]).width, y);
    });
    const { ticks: times, step } = timeTicks(t0, t1, Math.max(2, Math.floor(plot.w / 70)));
    g.textBaseline = 'top';
    for (const t of times) {
      const x = Math.round(X(t)) + 0.5;
      g.beginPath(); g.moveTo(x, plot.y + plot.h); g.lineTo(x, plot.y + plot.h + 3); g.stroke();
      const l = clock(t, step < 60000);
      g.fillText(l, Math.min(size.w - g.measureText(l).width - 2, Math.max(plot.x, x - g.measureText(l).width / 2)), plot.y + plot.h + 4);
    }
    g.textBaseline = 'alphabetic';
    g.strokeStyle = c.line;
    g.strokeRect(plot.x + 0.5, plot.y + 0.5, plot.w, plot.h);
    return { plot, X, Y };
  }

  function logTicks(lo, hi) {
    const out = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      const t = 10 ** e;
      if (t >= lo * 0.999 && t <= hi * 1.001) out.push(t);
    }
    return out.length >= 2 ? out : [lo, hi];
  }

  // Line chart of `lines` ([{name, colour, points: [[t, v], ...]}]). `hover` is the
  // pointer's x in the canvas, or null; returns the read-out of the nearest point.
  function line(g, size, lines, cfg, frame, hover) {
    const c = colours(frame);
    const all = lines.flatMap((l) => l.points);
    if (all.length === 0) {
      g.fillStyle = c.muted; g.font = '12px system-ui, sans-serif'; g.fillText('no data yet', 8, 18);
      return null;
    }
    let lo = Infinity, hi = -Infinity, t0 = Infinity, t1 = -Infinity;
    for (const [t, v] of all) { lo = Math.min(lo, v); hi = Math.max(hi, v); t0 = Math.min(t0, t); t1 = Math.max(t1, t); }
    for (const t of [cfg.warn, cfg.crit]) if (t !== undefined) { lo = Math.min(lo, t); hi = Math.max(hi, t); }
    if (hi === lo) { hi += Math.abs(hi) * 0.1 || 1; lo -= Math.abs(lo) * 0.1 || 1; }
    const margin = (hi - lo) * 0.05;
    [lo, hi] = [lo - margin, hi + margin];
    if (t1 === t0) t0 -= 1000;
    const { plot, X, Y } = frameAxes(g, size, t0, t1, lo, hi, cfg.unit, c, false);
    for (const [t, col] of [[cfg.warn, c.warn], [cfg.crit, c.crit]]) {
      if (t === undefined) continue;
      g.strokeStyle = col; g.setLineDash([4, 4]); g.beginPath(); g.moveTo(plot.x, Y(t)); g.lineTo(plot.x + plot.w, Y(t)); g.stroke();
    }
    g.setLineDash([]);
    g.lineWidth = lines.length > 1 ? 1.5 : 2;
    g.lineJoin = 'round';
    for (const l of lines) {
      if (l.points.length === 0) continue;
      g.strokeStyle = l.colour;
      g.beginPath();
      l.points.forEach(([t, v], i) => (i ? g.lineTo(X(t), Y(v)) : g.moveTo(X(t), Y(v))));
      g.stroke();
    }
    if (hover === null || hover === undefined || hover < plot.x || hover > plot.x + plot.w) return null;
    // The read-out: the time nearest the pointer, and each series' value there.
    const t = t0 + (hover - plot.x) / plot.w * (t1 - t0);
    let best = null;
    for (const [pt] of all) if (best === null || Math.abs(pt - t) < Math.abs(best - t)) best = pt;
    const rows = [];
    for (const l of lines) {
      const p = l.points.find((q) => q[0] === best);
      if (p) rows.push({ name: l.name, colour: l.colour, value: p[1] });
    }
    rows.sort((a, b) => b.value - a.value);
    const x = X(best);
    g.strokeStyle = c.muted; g.lineWidth = 1;
    g.beginPath(); g.moveTo(x, plot.y); g.lineTo(x, plot.y + plot.h); g.stroke();
    for (const r of rows) { g.fillStyle = r.colour; g.beginPath(); g.arc(x, Y(r.value), 3, 0, 2 * Math.PI); g.fill(); }
    return { time: best, x, rows };
  }

  // Heatmap of distributions over time (`dists`: [[t, {count, buckets}], ...]): a column
  // per distribution, a cell per bucket, darker the more values it holds.
  function heatmap(g, size, dists, cfg, frame, hover) {
    const c = colours(frame);
    const cols = dists.filter(([, d]) => d && d.buckets && d.buckets.length);
    if (cols.length === 0) {
      g.fillStyle = c.muted; g.font = '12px system-ui, sans-serif'; g.fillText('no data yet', 8, 18);
      return null;
    }
    let lo = Infinity, hi = -Infinity, most = 1;
    for (const [, d] of cols) for (const [a, b, n] of d.buckets) { lo = Math.min(lo, a); hi = Math.max(hi, b); most = Math.max(most, n); }
    const log = lo > 0 && hi / lo > 50;
    if (hi === lo) { hi += Math.abs(hi) * 0.1 || 1; lo -= log ? 0 : Math.abs(lo) * 0.1 || 1; }
    const times = cols.map(([t]) => t);
    const step = times.length > 1 ? (times[times.length - 1] - times[0]) / (times.length - 1) : 1000;
    const t0 = times[0] - step, t1 = times[times.length - 1];
    const { plot, X, Y } = frameAxes(g, size, t0, t1, lo, hi, cfg.unit, c, log);
    let found = null;
    g.save();
    g.beginPath(); g.rect(plot.x, plot.y, plot.w, plot.h); g.clip();
    cols.forEach(([t, d], i) => {
      const xa = X(i ? times[i - 1] : t - step), xb = X(t);
      for (const [a, b, n] of d.buckets) {
        const ya = Y(b), yb = Y(a);
        g.globalAlpha = 0.12 + 0.88 * Math.sqrt(n / most);
        g.fillStyle = c.heat;
        g.fillRect(xa, ya, Math.max(1, xb - xa), Math.max(1, yb - ya));
        if (hover && hover.x >= xa && hover.x < xb && hover.y >= ya - 0.5 && hover.y <= yb + 0.5) found = { time: t, lo: a, hi: b, count: n };
      }
    });
    g.restore();
    g.globalAlpha = 1;
    return found;
  }

  // Horizontal bars of a grouped widget's current values, largest first, `other` last.
  function bars(g, size, entries, cfg, frame) {
    const c = colours(frame);
    g.font = '12px system-ui, sans-serif';
    if (entries.length === 0) { g.fillStyle = c.muted; g.fillText('no data yet', 8, 18); return; }
    const rowH = Math.min(26, Math.max(14, (size.h - 8) / entries.length));
    const labelW = Math.min(size.w * 0.4, Math.max(...entries.map((e) => g.measureText(e.name).width)) + 10);
    const most = Math.max(...entries.map((e) => Math.abs(e.value)), 1e-300);
    g.textBaseline = 'middle';
    entries.forEach((e, i) => {
      const y = 4 + i * rowH;
      if (y + rowH > size.h) return;
      g.fillStyle = c.fg;
      g.fillText(e.name, 6, y + rowH / 2, labelW - 8);
      const text = fmt(e.value, cfg.unit);
      const room = size.w - labelW - g.measureText(text).width - 14;
      const w = Math.max(1, room * Math.abs(e.value) / most);
      g.fillStyle = e.colour;
      g.fillRect(labelW, y + 3, w, rowH - 6);
      g.fillStyle = c.muted;
      g.fillText(text, labelW + w + 6, y + rowH / 2);
    });
    g.textBaseline = 'alphabetic';
  }

  function gauge(g, size, v, cfg, frame, lv) {
    const c = colours(frame);
    const min = cfg.min ?? 0, max = cfg.max ?? 100;
    const cx = size.w / 2, cy = size.h * 0.78, r = Math.max(10, Math.min(size.w / 2, size.h * 0.7) - 10);
    const arc = (from, to, col) => { g.strokeStyle = col; g.beginPath(); g.arc(cx, cy, r, Math.PI + from * Math.PI, Math.PI + to * Math.PI); g.stroke(); };
    const frac = (x) => Math.min(1, Math.max(0, (x - min) / (max - min || 1)));
    g.lineWidth = Math.max(6, r / 5);
    arc(0, 1, c.track);
    if (v !== null && v !== undefined) arc(0, frac(v), lv === 'crit' ? c.crit : lv === 'warn' ? c.warn : (cfg.color || c.accent));
    g.fillStyle = c.fg;
    g.font = '600 ' + Math.max(12, r / 3) + 'px system-ui, sans-serif';
    const text = fmt(v, cfg.unit);
    g.fillText(text, cx - g.measureText(text).width / 2, cy - 4);
  }

  return { line, heatmap, bars, gauge, seriesColour, releaseColours, fmt, clock, theme: colours };
})();
