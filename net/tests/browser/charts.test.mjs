// The charts in Debian's Chromium: a grouped line chart with its legend and hover
// read-out, a heatmap drawn from live frames (checked by its pixels), a bar list, kiosk
// mode, the dark theme, and a dashboard exported and imported again. Run by
// net/tests/browser.rs (cargo test), which passes NODE_BIN.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, killNode, launch, startNode } from './harness.mjs';

const bin = process.env.NODE_BIN;
if (!bin) throw new Error('NODE_BIN is not set');
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const dataDir = mkdtempSync(join(tmpdir(), 'livedash-charts-'));
const node = await startNode(bin, port, dataDir, ['--shards', '2']);
const call = async (method, path, body) => {
  const r = await fetch(base + path, { method, headers: { 'Content-Type': 'application/json' }, body: body && JSON.stringify(body) });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.json();
};
const ROUTES = ['/cart', '/login', '/pay', '/search'];
const ingest = (t, spread = 1) => call('POST', '/ingest', ROUTES.flatMap((route, i) => Array.from({ length: 10 }, (_, j) => (
  { metric_name: 'shop.latency', value: (i + 1) * 20 * spread + j, tags: { route }, event_time: t })))).then(() => {});
const until = async (what, f, ms = 10000) => {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await f();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

const widget = (extra) => ({ metric_name: 'shop.latency', aggregation: 'p99', window_seconds: 60, refresh_interval_seconds: 0.2, ...extra });
const made = await call('POST', '/dashboards', { name: 'Shop', layout: { items: {} }, widgets: [
  widget({ group_by: 'route', top: 3, display_config: { chart: 'line', unit: 'ms', title: 'p99 by route' } }),
  widget({ aggregation: 'histogram', display_config: { chart: 'heatmap', unit: 'ms', title: 'latency heatmap' } }),
  widget({ aggregation: 'count', group_by: 'route', display_config: { chart: 'bars', title: 'requests by route' } }),
] });
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(`${base}/d/${made.dashboard_id}`);
  await page.locator('#status').filter({ hasText: /^live$/ }).waitFor();
  const line = page.locator('.widget[data-kind="line"]');
  const heat = page.locator('.widget[data-kind="heatmap"]');

  // The heatmap starts empty: nothing came yet. Its canvas pixels in the heat colour
  // are counted before and after live frames bring distributions.
  const heatPixels = () => heat.locator('canvas').evaluate((cv) => {
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i] > d[i + 2] + 40) n++;
    return n;
  });
  await heat.locator('canvas').waitFor();
  const before = await heatPixels();
  for (let k = 0; k < 8; k++) { await ingest(Date.now(), 1 + k / 4); await page.waitForTimeout(250); }
  const after = await until('heat cells', async () => { const n = await heatPixels(); return n > 2000 && n; });
  if (before > 100) throw new Error(`the empty heatmap drew ${before} heat pixels`);

  // The grouped line chart: three lines (top 3), named in the legend, largest first.
  const legend = line.locator('.legend li');
  await until('a legend of three routes', async () => (await legend.count()) === 3);
  const names = await line.locator('.legend .key').allTextContents();
  if (names.join(',') !== '/search,/pay,/login') throw new Error(`legend: ${names}`);
  const swatches = () => line.locator('.legend .swatch').evaluateAll((s) => s.map((x) => x.style.background));
  const colours = await swatches();
  if (new Set(colours).size !== 3) throw new Error(`colours not distinct: ${colours}`);
  // The bar list: every route, largest first.
  const bars = await page.locator('.widget[data-kind="bars"] canvas').getAttribute('aria-label');
  if (!/\/cart 80, \/login 80, \/pay 80, \/search 80$/.test(bars)) throw new Error(`bar list: ${bars}`);

  // Hover: the read-out names the time and each route's value at the nearest point.
  const box = await line.locator('canvas').boundingBox();
  await page.mouse.move(box.x + box.width - 20, box.y + box.height / 2);
  const tip = line.locator('.tip');
  await tip.waitFor({ state: 'visible' });
  const read = await tip.textContent();
  if (!/^\d\d:\d\d:\d\d\/search: [\d.,]+ ms\/pay: [\d.,]+ ms\/login: [\d.,]+ ms$/.test(read.replace(/\n/g, ''))) {
    throw new Error(`read-out: ${JSON.stringify(read)}`);
  }
  await page.mouse.move(0, 0);
  await tip.waitFor({ state: 'hidden' });

  // Colours stay with their routes after a reload.
  await page.reload();
  await page.locator('#status').filter({ hasText: /^live$/ }).waitFor();
  await until('the legend again', async () => (await legend.count()) === 3);
  if ((await swatches()).join() !== colours.join()) throw new Error('colours changed on reload');

  // Kiosk mode: nothing to edit, larger type, in the dark theme as the system asks.
  const kiosk = await browser.newPage({ viewport: { width: 1200, height: 800 }, colorScheme: 'dark' });
  kiosk.on('pageerror', (e) => errors.push(String(e)));
  await kiosk.goto(`${base}/d/${made.dashboard_id}?kiosk`);
  await kiosk.locator('#status').filter({ hasText: /^live$/ }).waitFor();
  await kiosk.locator('.widget .legend li').first().waitFor();
  for (const name of ['Add widget', 'Export', 'Edit']) {
    if (await kiosk.getByRole('button', { name }).count()) throw new Error(`kiosk mode shows ${name}`);
  }
  if (await kiosk.locator('.resize').count()) throw new Error('kiosk mode shows resize handles');
  const size = (p) => p.locator('.widget .head .name').first().evaluate((e) => parseFloat(getComputedStyle(e).fontSize));
  if (!((await size(kiosk)) > (await size(page)) * 1.3)) throw new Error('kiosk type is not larger');
  const bg = await kiosk.evaluate(() => getComputedStyle(document.body).backgroundColor);
  if (bg !== 'rgb(17, 20, 24)') throw new Error(`not the dark theme: ${bg}`);

  // Export, then import as a new dashboard: the same widgets, in the same places.
  await line.locator('.head').focus();
  await page.keyboard.press('ArrowDown');
  await page.waitForTimeout(600);
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export' }).click()]);
  const exported = JSON.parse(readFileSync(await download.path(), 'utf8'));
  await page.goto(base + '/');
  await page.getByLabel(/Import a dashboard/).setInputFiles(await download.path());
  await page.waitForURL((u) => /\/d\/[0-9a-f-]{36}$/.test(u.pathname) && !u.pathname.endsWith(made.dashboard_id));
  const copyId = page.url().split('/').pop();
  const copy = await call('GET', `/dashboards/${copyId}`);
  const spec = ({ widget_id, dashboard_id, ...w }) => JSON.stringify(w);
  if (copy.name !== 'Shop' || copy.widgets.map(spec).join() !== exported.widgets.map(spec).join()) throw new Error('the imported widgets differ');
  const placed = (d) => d.widgets.map((w) => JSON.stringify(d.layout.items[w.widget_id]));
  if (placed(copy).join() !== placed(exported).join() || !exported.layout.items[made.widgets[0].widget_id]) throw new Error('the imported layout differs');
  await page.locator('#status').filter({ hasText: /^live$/ }).waitFor();
  await page.locator('.widget[data-kind="heatmap"]').waitFor();
  // A file that is no dashboard is refused with a reason.
  await page.goto(base + '/');
  await page.getByLabel(/Import a dashboard/).setInputFiles({ name: 'x.json', mimeType: 'application/json', buffer: Buffer.from('{"hello": 1}') });
  await until('the import error', async () => /Import failed: not a livedash dashboard file/.test(await page.locator('main .error').textContent()));
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  console.log(`charts test passed (heatmap: ${before} then ${after} heat pixels)`);
} finally {
  await browser.close();
  await killNode(node);
  rmSync(dataDir, { recursive: true, force: true });
}
