// Drives the livedash web UI in Debian's Chromium: creates a dashboard and a widget through
// the page, ingests events over HTTP and waits for the value on screen; kills and restarts
// the node and waits for the page to reconnect and show new values; saves a screenshot.
// Run by net/tests/browser.rs (cargo test), which passes NODE_BIN and SCREENSHOT.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const bin = process.env.NODE_BIN;
const screenshot = process.env.SCREENSHOT || 'ui.png';
if (!bin) throw new Error('NODE_BIN is not set');

const freePort = () => new Promise((resolve, reject) => {
  const srv = createServer();
  srv.on('error', reject);
  srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
});

// Kills the node and waits until it is gone, so its port and data directory are free.
const killNode = (child) => new Promise((resolve) => {
  if (child.exitCode !== null || child.signalCode !== null) { resolve(); return; }
  child.once('exit', () => resolve());
  child.kill('SIGKILL');
});

function startNode(port, dataDir, extra = []) {
  const child = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--shards', '2', ...extra], {
    env: { ...process.env, LIVEDASH_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.stdout.once('data', () => resolve(child));
    child.on('exit', (code) => reject(new Error(`livedash exited early with ${code}`)));
  });
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const dataDir = mkdtempSync(join(tmpdir(), 'livedash-ui-'));
let node = await startNode(port, dataDir);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
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

  // Kill the node: the page notices and keeps retrying; restart it and the page comes back.
  await killNode(node);
  await statusIs(page, 'reconnecting');
  await page.locator('.widget.stale').first().waitFor();
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
  console.log(`ui test passed; screenshot at ${screenshot}`);
} finally {
  await browser.close();
  await killNode(node);
  rmSync(dataDir, { recursive: true, force: true });
}
