// What the browser tests share: a free loopback port, killing a node and waiting until it
// is gone, and Debian's Chromium launched headless.
import { createServer } from 'node:net';
import { chromium } from 'playwright-core';

export const freePort = () => new Promise((resolve, reject) => {
  const srv = createServer();
  srv.on('error', reject);
  srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
});

// Kills the node and waits until it is gone, so its port and data directory are free.
export const killNode = (child) => new Promise((resolve) => {
  if (child.exitCode !== null || child.signalCode !== null) { resolve(); return; }
  child.once('exit', () => resolve());
  child.kill('SIGKILL');
});

export const launch = () => chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
