// Measures how smoothly the dashboard page draws under load: 12 widgets (4 line charts
// of 10 series each from grouped widgets, 2 heatmaps, a bar list of 10, 3 line charts
// and 2 gauges) refreshed 10 times a second while events keep coming, and the page's
// animation frame intervals recorded for 5 s. A measurement, not a test:
//   node net/tests/browser/smoothness.mjs http://127.0.0.1:8080 [rounds]
// Each round measures the baseline first (the same page with no updates arriving), then
// the page under updates; the ratio of the p99 frame intervals is reported per round and
// as the median over rounds.
import { launch } from './harness.mjs';

const base = process.argv[2] || 'http://127.0.0.1:8080';
const rounds = Number(process.argv[3] || 3);
const ROUTES = Array.from({ length: 10 }, (_, i) => `/route/${i}`);
const spec = (i, extra) => ({ metric_name: `smooth.m${i}`, window_seconds: 60, refresh_interval_seconds: 0.1, ...extra });
const widgets = [
  ...[0, 1, 2, 3].map((i) => spec(i, { aggregation: i % 2 ? 'p99' : 'avg', group_by: 'route', top: 10, display_config: { chart: 'line', unit: 'ms' } })),
  ...[4, 5].map((i) => spec(i, { aggregation: 'histogram', display_config: { chart: 'heatmap', unit: 'ms' } })),
  spec(6, { aggregation: 'sum', group_by: 'route', top: 10, display_config: { chart: 'bars' } }),
  ...[7, 8, 9].map((i) => spec(i, { aggregation: 'p99', display_config: { chart: 'line', unit: 'ms' } })),
  ...[10, 11].map((i) => spec(i, { aggregation: 'avg', display_config: { chart: 'gauge', unit: 'ms' } })),
];
const post = async (path, body) => {
  const r = await fetch(base + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
};
const d = await post('/dashboards', { name: 'smooth', widgets });
const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
await page.goto(base + '/d/' + d.dashboard_id);
const frames = () => page.evaluate(() => new Promise((resolve) => {
  const deltas = []; let last = performance.now(); const end = last + 5000;
  const f = (t) => { deltas.push(t - last); last = t; if (t < end) requestAnimationFrame(f); else resolve(deltas); };
  requestAnimationFrame(f);
}));
const summary = (label, r) => {
  r.sort((a, b) => a - b);
  const p = (q) => r[Math.min(r.length - 1, Math.ceil(q * r.length) - 1)];
  console.log(`${label}: ${r.length} frames in 5 s; frame interval p50 ${p(0.5).toFixed(1)} ms, p99 ${p(0.99).toFixed(1)} ms, max ${r[r.length - 1].toFixed(1)} ms; frames over 50 ms: ${r.filter((x) => x > 50).length}`);
  return p(0.99);
};
// Events for every widget, 10 routes each, every 50 ms (the widgets refresh every 100 ms).
const load = () => {
  let stop = false;
  const done = (async () => {
    for (let k = 0; !stop; k++) {
      const t = Date.now();
      const ev = [];
      for (let i = 0; i < 12; i++) for (let j = 0; j < 20; j++) {
        ev.push({ metric_name: `smooth.m${i}`, value: 50 + 4 * (j % 10) + 40 * Math.sin(k / 10 + i) + Math.random() * 5, tags: { route: ROUTES[j % 10] }, event_time: t });
      }
      await post('/ingest', ev);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return () => { stop = true; return done; };
};
await page.locator('#status').filter({ hasText: /^live$/ }).waitFor();
// The charts fill once before the first round: the baseline draws full charts too.
let stopLoad = load();
await new Promise((r) => setTimeout(r, 8000));
await stopLoad();
const ratios = [];
for (let round = 1; round <= rounds; round++) {
  await new Promise((r) => setTimeout(r, 1000));
  const idle = summary(`round ${round}, baseline, no updates`, await frames());
  stopLoad = load();
  await new Promise((r) => setTimeout(r, 2000));
  const drawnBefore = await page.evaluate('view.frames');
  const busy = summary(`round ${round}, 12 widgets at 10 updates/s`, await frames());
  const drawn = (await page.evaluate('view.frames')) - drawnBefore;
  const series = await page.locator('.widget[data-kind="line"] .legend').evaluateAll((ls) => ls.map((l) => l.children.length));
  console.log(`  (the page drew in ${drawn} animation frames of those 5 s; grouped charts show ${series.join(', ')} series)`);
  await stopLoad();
  ratios.push(busy / idle);
  console.log(`round ${round}: p99 frame interval under updates is ${(busy / idle).toFixed(2)}x the baseline`);
}
ratios.sort((a, b) => a - b);
console.log(`median over ${rounds} rounds: ${ratios[Math.floor(ratios.length / 2)].toFixed(2)}x the baseline`);
await browser.close();
