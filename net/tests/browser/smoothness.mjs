// Measures how smoothly the dashboard page draws under load: 12 widgets (line charts and
// gauges) refreshed 10 times a second while events keep coming, and the page's animation
// frame intervals recorded for 5 s. A measurement, not a test:
//   node net/tests/browser/smoothness.mjs http://127.0.0.1:8080
// The baseline is the same page with no updates arriving, measured first.
import { chromium } from 'playwright-core';
const base = process.argv[2] || 'http://127.0.0.1:8080';
const widgets = [];
for (let i = 0; i < 12; i++) widgets.push({ metric_name: `smooth.m${i}`, aggregation: i % 2 ? 'p99' : 'avg', window_seconds: 60, refresh_interval_seconds: 0.1, display_config: { chart: i % 3 === 0 ? 'gauge' : 'line' } });
const d = await (await fetch(base + '/dashboards', { method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({ name: 'smooth', widgets }) })).json();
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox','--disable-gpu','--disable-background-networking'] });
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
await page.locator('#status').filter({ hasText: /^live$/ }).waitFor();
const idle = summary('baseline, no updates', await frames());
let stop = false;
(async () => { let k = 0; while (!stop) { const t = Date.now(); const ev = []; for (let i = 0; i < 12; i++) for (let j = 0; j < 20; j++) ev.push({ metric_name: `smooth.m${i}`, value: 50 + 40 * Math.sin(k / 10 + i) + Math.random() * 5, event_time: t }); k++; await fetch(base + '/ingest', { method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(ev) }); await new Promise(r => setTimeout(r, 50)); } })();
await new Promise(r => setTimeout(r, 2000));
const busy = summary('12 widgets at 10 updates/s', await frames());
stop = true;
console.log(`p99 frame interval under updates is ${(busy / idle).toFixed(2)}x the baseline`);
await browser.close();
