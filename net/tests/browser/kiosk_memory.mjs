// Page memory of a kiosk dashboard over time: 12 widgets (grouped line charts of 10
// routes, heatmaps, a bar list, line charts, gauges, stats) updated `rate` times a second
// each, with one route replaced by a new one every `churn` seconds, so series come and
// go as on a real wall screen. After a garbage collection, the page's JS heap and DOM
// nodes are read at `early` and `late` seconds, and every `every` seconds between.
//   node net/tests/browser/kiosk_memory.mjs [--base URL] [--rate 1] [--early 300]
//        [--late 3600] [--every 300] [--churn 60] [--check 1.10]
// Without --base, the node binary in NODE_BIN is started on a free loopback port. With
// --check R, exits with a failure when the late heap or DOM count exceeds R times the
// early one (the CI run: `--rate 10 --early 70 --late 140 --churn 6 --check 1.10`, the
// same churn of history per update as the hour at 1 update/s).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, killNode, launch, startNode } from './harness.mjs';

const { values: args } = parseArgs({ options: {
  base: { type: 'string' }, rate: { type: 'string', default: '1' }, early: { type: 'string', default: '300' },
  late: { type: 'string', default: '3600' }, every: { type: 'string', default: '300' },
  churn: { type: 'string', default: '60' }, check: { type: 'string' },
} });
const rate = Number(args.rate), early = Number(args.early) * 1000, late = Number(args.late) * 1000;
const every = Number(args.every) * 1000, churn = Number(args.churn) * 1000;

let node = null, dataDir = null, base = args.base;
if (!base) {
  if (!process.env.NODE_BIN) throw new Error('give --base URL or set NODE_BIN');
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  dataDir = mkdtempSync(join(tmpdir(), 'livedash-kiosk-'));
  node = await startNode(process.env.NODE_BIN, port, dataDir, ['--shards', '2']);
}
const post = async (path, body) => {
  const r = await fetch(base + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
};
const spec = (i, extra) => ({ metric_name: `kiosk.m${i}`, window_seconds: 10, refresh_interval_seconds: 1 / rate, ...extra });
const d = await post('/dashboards', { name: 'kiosk', widgets: [
  ...[0, 1, 2, 3].map((i) => spec(i, { aggregation: 'p99', group_by: 'route', top: 10, display_config: { chart: 'line', unit: 'ms' } })),
  ...[4, 5].map((i) => spec(i, { aggregation: 'histogram', display_config: { chart: 'heatmap', unit: 'ms' } })),
  spec(6, { aggregation: 'count', group_by: 'route', display_config: { chart: 'bars' } }),
  ...[7, 8].map((i) => spec(i, { aggregation: 'avg', display_config: { chart: 'line', unit: 'ms' } })),
  ...[9, 10].map((i) => spec(i, { aggregation: 'avg', display_config: { chart: 'gauge', unit: 'ms' } })),
  spec(11, { aggregation: 'count', display_config: { chart: 'stat' } }),
] });

// One batch per refresh interval: every widget's metric, the 10 routes current then.
const started = Date.now();
let stop = false;
const load = (async () => {
  for (let k = 0; !stop; k++) {
    const t = Date.now();
    const shift = Math.floor((t - started) / churn);
    const ev = [];
    for (let i = 0; i < 12; i++) for (let j = 0; j < 10; j++) {
      ev.push({ metric_name: `kiosk.m${i}`, value: 20 + 5 * j + 10 * Math.sin(k / 20 + i) + Math.random() * 10, tags: { route: `/r${shift + j}` }, event_time: t });
    }
    await post('/ingest', ev).catch((e) => console.error(String(e)));
    await new Promise((r) => setTimeout(r, Math.max(0, 1000 / rate - (Date.now() - t))));
  }
})();

const browser = await launch();
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.on('pageerror', (e) => { console.error('page error:', e); failed = true; });
  await page.goto(`${base}/d/${d.dashboard_id}?kiosk`);
  await page.locator('#status').filter({ hasText: /^live$/ }).waitFor();
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  // What the page holds: the least of three readings a second apart, each after two
  // garbage collections (what one collection leaves varies with the moment it runs).
  const sample = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    await cdp.send('HeapProfiler.collectGarbage');
    const { usedSize } = await cdp.send('Runtime.getHeapUsage');
    const { metrics } = await cdp.send('Performance.getMetrics');
    const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
    const attached = await page.evaluate(() => document.getElementsByTagName('*').length);
    return { heap: usedSize, nodes: m.Nodes, listeners: m.JSEventListeners, attached };
  };
  const read = async () => {
    const all = [];
    for (let i = 0; i < 3; i++) {
      all.push(await sample());
      await new Promise((r) => setTimeout(r, 1000));
    }
    const least = (k) => Math.min(...all.map((x) => x[k]));
    return { heap: least('heap'), nodes: least('nodes'), listeners: least('listeners'), attached: least('attached') };
  };
  const show = (at, r) => console.log(`${(at / 1000).toFixed(0).padStart(5)} s: JS heap ${(r.heap / 1e6).toFixed(2)} MB, ${r.nodes} DOM nodes (${r.attached} elements in the document), ${r.listeners} listeners`);
  let first = null, last = null;
  const marks = [early];
  for (let t = early + every; t < late; t += every) marks.push(t);
  marks.push(late);
  for (const at of marks) {
    await new Promise((r) => setTimeout(r, Math.max(0, started + at - Date.now())));
    last = await read();
    show(at, last);
    if (first === null) first = last;
  }
  const heap = last.heap / first.heap, nodes = last.nodes / first.nodes;
  console.log(`after ${late / 1000} s against ${early / 1000} s: JS heap ${heap.toFixed(3)}x, DOM nodes ${nodes.toFixed(3)}x (${rate} updates/s per widget, a new route every ${churn / 1000} s)`);
  if (args.check && (heap > Number(args.check) || nodes > Number(args.check))) {
    console.error(`page memory grew past ${args.check}x`);
    failed = true;
  }
} finally {
  stop = true;
  await load;
  await browser.close();
  if (node) await killNode(node);
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
}
if (failed) process.exit(1);
