// Drives the livedash web UI in Debian's Chromium: creates a dashboard and a widget through
// the page, ingests events over HTTP and waits for the value on screen; kills and restarts
// the node and waits for the page to reconnect and show new values; saves a screenshot.
// Run by net/tests/browser.rs (cargo test), which passes NODE_BIN and SCREENSHOT.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, killNode, launch, startNode as startLivedash } from './harness.mjs';

const bin = process.env.NODE_BIN;
const screenshot = process.env.SCREENSHOT || 'ui.png';
if (!bin) throw new Error('NODE_BIN is not set');

const startNode = (port, dataDir, extra = []) => startLivedash(bin, port, dataDir, ['--shards', '2', ...extra]);

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const dataDir = mkdtempSync(join(tmpdir(), 'livedash-ui-'));
let node = await startNode(port, dataDir);
const browser = await launch();
const ingest = async (value) => {
  const r = await fetch(`${base}/ingest`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify([{ metric_name: 'ui.checkout.latency_ms', value, event_time: Date.now() }]),
  });
  if (r.status !== 200) throw new Error(`ingest: ${r.status} ${await r.text()}`);
};
const statusIs = (page, text) => page.locator('#status').filter({ hasText: new RegExp(`^${text}$`) }).waitFor({ timeout: 15000 });
const statValue = (page) => page.locator('.widget[data-kind="stat"] .stat');
const waitForText = async (locator, text) => {
  const deadline = Date.now() + 10000;
  for (;;) {
    const got = (await locator.textContent().catch(() => '')) || '';
    if (got.replace(/\s+/g, ' ').trim() === text) return;
    if (Date.now() > deadline) throw new Error(`expected "${text}", saw "${got}"`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  page.on('pageerror', (e) => { console.error('page error:', e); process.exitCode = 1; });
  // The browser reports invalid markup (a pattern that is no valid regular expression).
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error' && /pattern|regular expression/i.test(m.text())) consoleErrors.push(m.text()); });
  await page.goto(base + '/');
  await page.getByLabel('New dashboard name').fill('Checkout');
  await page.getByRole('button', { name: 'Create dashboard' }).click();
  await page.waitForURL(/\/d\/[0-9a-f-]{36}$/);
  await statusIs(page, 'live');

  // A widget through the form, keyboard-reachable labels included.
  await page.getByRole('button', { name: 'Add widget' }).click();
  await page.getByLabel('Metric').fill('ui.checkout.latency_ms');
  await page.getByLabel('Aggregation').selectOption('sum');
  await page.getByLabel('Window (seconds)').fill('60');
  await page.getByLabel('Refresh (seconds)').fill('0.2');
  await page.getByLabel('Chart').selectOption('stat');
  await page.getByLabel('Unit').fill('ms');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.locator('.widget[data-kind="stat"]').waitFor();

  await ingest(20);
  await ingest(22);
  await waitForText(statValue(page), '42 ms');

  // Resizing with the mouse is saved with the dashboard: two columns wider after a reload.
  const card = page.locator('.widget[data-kind="stat"]');
  const span = async () => (await card.evaluate((el) => el.style.gridColumn)).replace(/\s+/g, ' ');
  if (await span() !== '1 / span 4') throw new Error(`unexpected start layout ${await span()}`);
  const handle = await card.locator('.resize').boundingBox();
  const gridBox = await page.locator('.grid').boundingBox();
  const col = gridBox.width / 12;
  await page.mouse.move(handle.x + 5, handle.y + 5);
  await page.mouse.down();
  await page.mouse.move(handle.x + 5 + col * 2, handle.y + 5, { steps: 8 });
  await page.mouse.up();
  if (await span() !== '1 / span 6') throw new Error(`resize did not apply: ${await span()}`);
  // Keyboard: focus the widget's header, move it one column right.
  await card.locator('.head').focus();
  await page.keyboard.press('ArrowRight');
  if (await span() !== '2 / span 6') throw new Error(`keyboard move did not apply: ${await span()}`);
  await page.waitForTimeout(800);

  // The dashboard survives in the list, by name.
  const url = page.url();
  await page.goto(base + '/');
  await page.getByRole('link', { name: 'Checkout' }).waitFor();
  await page.goto(url);
  await statusIs(page, 'live');
  await waitForText(statValue(page), '42 ms');
  if (await span() !== '2 / span 6') throw new Error(`layout not saved: ${await span()}`);

  // The widget form checks each kind before sending, and clears its error on change.
  const formError = page.locator('#widget-error');
  await page.getByRole('button', { name: 'Add widget' }).click();
  await page.getByLabel('Chart').selectOption('gauge');
  await page.getByLabel('Metric').fill('ui.cpu');
  await page.getByLabel('Gauge min').fill('10');
  await page.getByLabel('Gauge max').fill('5');
  await page.getByRole('button', { name: 'Save' }).click();
  await waitForText(formError, 'Gauge min must be below Gauge max');
  await page.getByLabel('Gauge max').fill('50');
  await waitForText(formError, '');
  await page.getByLabel('Warning at').fill('40');
  await page.getByLabel('Critical at').fill('30');
  await page.getByRole('button', { name: 'Save' }).click();
  await waitForText(formError, 'Warning at must be below Critical at');
  await page.getByLabel('Critical at').fill('45');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.locator('.widget[data-kind="gauge"]').waitFor();
  // A table needs no metric: the field is not shown.
  await page.getByRole('button', { name: 'Add widget' }).click();
  await page.getByLabel('Chart').selectOption('table');
  if (await page.getByLabel('Metric').isVisible()) throw new Error('a table asks for a metric');
  if (await page.getByLabel('Gauge min').isVisible()) throw new Error('a table asks for a gauge range');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.locator('.widget[data-kind="table"]').waitFor();

  // Widgets never overlap: the gauge moved onto the stat pushes the stat down.
  const boxes = async () => Promise.all((await page.locator('.widget').all()).map((w) => w.boundingBox()));
  const overlapping = async () => {
    const b = await boxes();
    for (let i = 0; i < b.length; i++) for (let j = i + 1; j < b.length; j++) {
      const [p, q] = [b[i], b[j]];
      if (p.x < q.x + q.width - 1 && q.x < p.x + p.width - 1 && p.y < q.y + q.height - 1 && q.y < p.y + p.height - 1) return true;
    }
    return false;
  };
  const gauge = page.locator('.widget[data-kind="gauge"]');
  await gauge.locator('.head').focus();
  for (let i = 0; i < 8; i++) await page.keyboard.press('ArrowUp');
  for (let i = 0; i < 12; i++) await page.keyboard.press('ArrowLeft');
  if (await overlapping()) throw new Error('widgets overlap after a move');
  const statBox = await card.boundingBox(), gaugeBox = await gauge.boundingBox();
  if (!(statBox.y >= gaugeBox.y + gaugeBox.height - 1)) throw new Error('the stat was not pushed below the gauge');
  // Narrow screens: one widget a row, none overlapping.
  await page.setViewportSize({ width: 480, height: 900 });
  const gridWidth = (await page.locator('.grid').boundingBox()).width;
  for (const b of await boxes()) if (b.width < gridWidth * 0.95) throw new Error(`not reflowed: ${b.width} of ${gridWidth}`);
  if (await overlapping()) throw new Error('widgets overlap on a narrow screen');
  await page.setViewportSize({ width: 1200, height: 800 });
  // A removed widget leaves the saved layout.
  const table = page.locator('.widget[data-kind="table"]');
  const tableId = await table.getAttribute('data-widget');
  page.once('dialog', (d) => d.accept());
  await table.getByRole('button', { name: /^Remove/ }).click();
  await table.waitFor({ state: 'detached' });
  await page.waitForTimeout(800);
  const saved = await (await fetch(`${base}/dashboards/${url.split('/').pop()}`)).json();
  if (tableId in (saved.layout.items || {})) throw new Error('the removed widget is still in layout.items');
  if (Object.keys(saved.layout.items).length !== 2) throw new Error(`layout.items: ${JSON.stringify(saved.layout.items)}`);
  const gaugeId = await gauge.getAttribute('data-widget');
  const moved = saved.layout.items[gaugeId];
  if (moved.x !== 0 || moved.y !== 0) throw new Error(`the moved gauge was saved at ${JSON.stringify(moved)}`);

  // Kill the node: the page notices and keeps retrying; restart it and the page comes back.
  await killNode(node);
  await statusIs(page, 'reconnecting');
  await page.locator('.widget.stale').first().waitFor();
  // Disconnected: no lag figure, and the stale badge sits beside the buttons, not on them.
  await waitForText(page.locator('#lag'), '');
  const staleCard = page.locator('.widget.stale').first();
  const badge = await staleCard.locator('.head .badge').boundingBox();
  for (const b of await staleCard.locator('.head button').all()) {
    const r = await b.boundingBox();
    if (badge.x < r.x + r.width && r.x < badge.x + badge.width) throw new Error('the stale badge covers a button');
  }
  node = await startNode(port, dataDir);
  await statusIs(page, 'live');
  // Windows live in memory: after the restart the widget starts empty, then counts again.
  await ingest(7);
  await waitForText(statValue(page), '7 ms');
  if (await page.locator('.widget.stale').count() !== 0) throw new Error('widget still marked stale');
  await page.screenshot({ path: screenshot, fullPage: true });

  // With tokens set, the page asks once and keeps the token for the session.
  await killNode(node);
  node = await startNode(port, dataDir, ['--read-token', 'rd-secret', '--admin-token', 'adm-secret']);
  const secured = await browser.newPage();
  let asked = 0;
  secured.on('dialog', (d) => { asked++; d.accept('adm-secret'); });
  await secured.goto(base + '/');
  await secured.getByRole('link', { name: 'Checkout' }).click();
  await statusIs(secured, 'live');
  await ingest(5);
  await waitForText(statValue(secured), '5 ms');
  if (asked !== 1) throw new Error(`asked for the token ${asked} times`);
  if (consoleErrors.length) throw new Error(`console errors: ${consoleErrors.join('; ')}`);
  console.log(`ui test passed; screenshot at ${screenshot}`);
} finally {
  await browser.close();
  await killNode(node);
  rmSync(dataDir, { recursive: true, force: true });
}
