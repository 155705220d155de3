// The web UI in a cluster, in Debian's Chromium: a page served by node A shows a widget
// live; A is killed; the page reconnects to node B (from the nodes its snapshot listed),
// gets a snapshot there and shows the value exact after more events.
// Run by net/tests/browser.rs (cargo test), which starts the broker and Redis and passes
// NODE_BIN, BROKERS, TOPIC and REDIS.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, killNode, launch, startNode as startLivedash } from './harness.mjs';

const { NODE_BIN: bin, BROKERS: brokers, TOPIC: topic, REDIS: redis } = process.env;
if (!bin || !brokers || !topic || !redis) throw new Error('NODE_BIN, BROKERS, TOPIC and REDIS must be set');

const dirs = [];
function startNode(port) {
  const dir = mkdtempSync(join(tmpdir(), 'livedash-ui-cluster-'));
  dirs.push(dir);
  return startLivedash(bin, port, dir, ['--shards', '1', '--kafka-brokers', brokers, '--kafka-topic', topic, '--redis', redis], 'error');
}

const until = async (what, secs, f) => {
  const deadline = Date.now() + secs * 1000;
  for (;;) {
    const v = await f().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
};
const owned = async (base) => {
  const stats = await (await fetch(`${base}/stats`)).json();
  return stats.shards.flatMap((s) => (s.kafka?.partitions || []).map((p) => p.partition)).length;
};
const ingest = async (base, value) => {
  const r = await fetch(`${base}/ingest`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify([{ metric_name: 'ui.cluster.orders', value, event_time: Date.now() }]),
  });
  if (r.status !== 200) throw new Error(`ingest: ${r.status} ${await r.text()}`);
};

const [portA, portB] = [await freePort(), await freePort()];
const [a, b] = [`http://127.0.0.1:${portA}`, `http://127.0.0.1:${portB}`];
// B joins the group first (the group's leader, which the broker needs alive), then A.
const nodeB = await startNode(portB);
await until('B to own every partition', 60, async () => (await owned(b)) === 4);
const nodeA = await startNode(portA);
await until('A to own partitions', 90, async () => (await owned(a)) > 0 && (await owned(a)) + (await owned(b)) === 4);
const browser = await launch();
try {
  const created = await fetch(`${a}/dashboards`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'Cluster', widgets: [{ metric_name: 'ui.cluster.orders', aggregation: 'sum',
      window_seconds: 300, refresh_interval_seconds: 0.2, display_config: { chart: 'stat' } }] }),
  });
  if (created.status !== 201) throw new Error(`create: ${created.status} ${await created.text()}`);
  const { dashboard_id: id } = await created.json();
  const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  page.on('pageerror', (e) => { console.error('page error:', e); process.exitCode = 1; });
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  await page.goto(`${a}/d/${id}`);
  const status = page.locator('#status');
  const stat = page.locator('.widget[data-kind="stat"] .stat');
  const shows = (text) => until(`"${text}" on screen`, 40, async () =>
    ((await stat.textContent()) || '').trim() === text && (await status.textContent()) === 'live');
  await ingest(a, 20);
  await ingest(a, 22);
  await shows('42');

  await killNode(nodeA);
  // The page moves to B: a stream to B's port, live again, and the value exact once B
  // owns A's partitions (after the group's session timeout) and more events come in.
  await until('a stream to node B', 30, async () => sockets.some((u) => u.startsWith(`ws://127.0.0.1:${portB}/`)));
  await until('the page live on B', 30, async () => (await status.textContent()) === 'live');
  await until('B to own every partition', 60, async () => (await owned(b)) === 4);
  await ingest(b, 8);
  await shows('50');
  if (await page.locator('.widget.stale').count() !== 0) throw new Error('widget still marked stale');
  console.log('cluster ui test passed');
} finally {
  await browser.close();
  await killNode(nodeA);
  await killNode(nodeB);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
