// What the browser tests share: a free loopback port, starting a node and killing it
// (waiting until it is gone), and Debian's Chromium launched headless.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { chromium } from 'playwright-core';

export const freePort = () => new Promise((resolve, reject) => {
  const srv = createServer();
  srv.on('error', reject);
  srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
});

// Starts the node binary `bin` on 127.0.0.1:`port` with its data in `dataDir` and the
// further `args`, logging at `log`; resolves once it printed its first line (it listens
// then), rejects if it exits first.
export const startNode = (bin, port, dataDir, args = [], log = 'warn') => {
  const child = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...args], {
    env: { ...process.env, LIVEDASH_LOG: log, LIVEDASH_SELF_DASHBOARD: 'false' }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.stdout.once('data', () => resolve(child));
    child.on('exit', (code) => reject(new Error(`livedash exited early with ${code}`)));
  });
};

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
