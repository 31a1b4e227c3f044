#!/usr/bin/env node
// End-to-end test of the dashboard against the REAL rtap host.
//
//   RTAP_HOST_BIN=../target/release/host RTAP_PLUGINS_DIR=../plugins/dist npm run e2e
//
// Starts `$RTAP_HOST_BIN --plugins $RTAP_PLUGINS_DIR --rate 5000 --listen
// 127.0.0.1:<free port> --dashboard-dir dist --sink jsonl:/dev/null`, waits for
// GET /health, opens the dashboard in headless Chromium (playwright-core,
// system Chromium) and checks that it is live: connected, charts fed, an alert
// in the feed, every shipped plugin in the plugins table. Saves a full-page
// screenshot to dist-e2e/dashboard.png. The host is killed in all cases.
//
// Optional env: CHROMIUM_PATH (default /usr/bin/chromium), RTAP_E2E_RATE
// (default 5000), RTAP_E2E_HEALTH_TIMEOUT_MS (default 120000),
// RTAP_E2E_ALERT_TIMEOUT_MS (default 60000), RTAP_E2E_SKIP_BUILD=1 (fail
// instead of building when dist/ is missing).

import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist');
const OUT = path.join(ROOT, 'dist-e2e');
const SCREENSHOT = path.join(OUT, 'dashboard.png');
const HOST_LOG = path.join(OUT, 'host.log');

const SHIPPED_PLUGINS = [
  'page-views',
  'active-users',
  'conversion-rate',
  'session-duration',
  'latency-percentiles',
  'error-rate',
  'high-latency',
  'error-rate-spike',
  'low-throughput',
  'cart-abandonment',
  'bot-burst',
];

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const RATE = process.env.RTAP_E2E_RATE || '5000';
const HEALTH_TIMEOUT = Number(process.env.RTAP_E2E_HEALTH_TIMEOUT_MS || 120_000);
const ALERT_TIMEOUT = Number(process.env.RTAP_E2E_ALERT_TIMEOUT_MS || 60_000);

class SetupError extends Error {}

const t0 = Date.now();
const log = (msg) => console.log(`[e2e +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);

function requireEnvPath(name, kind) {
  const v = process.env[name];
  if (!v) throw new SetupError(`${name} is not set: it must be the path to the ${kind}.`);
  const p = path.resolve(v);
  if (!existsSync(p)) throw new SetupError(`${name}=${v}: no such ${kind} (${p}).`);
  return p;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function tail(file, lines = 40) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// ---------------------------------------------------------------------------
// host process

let host = null;
let hostCwd = null;
let hostExit = null; // { code, signal } once exited

function startHost(bin, pluginsDir, port) {
  mkdirSync(OUT, { recursive: true });
  const args = ['--plugins', pluginsDir, '--rate', RATE, '--listen', `127.0.0.1:${port}`, '--dashboard-dir', DIST, '--sink', 'jsonl:/dev/null'];
  log(`starting host: ${bin} ${args.join(' ')}`);
  const out = createWriteStream(HOST_LOG);
  // The host runs in a scratch directory, so its state, checkpoints and
  // dead letters (relative defaults) never land in the work tree.
  hostCwd = mkdtempSync(path.join(tmpdir(), 'rtap-e2e-host-'));
  host = spawn(bin, args, {
    cwd: hostCwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RTAP_DATA_DIR: path.join(hostCwd, 'data') },
  });
  host.stdout.pipe(out, { end: false });
  host.stderr.pipe(out, { end: false });
  host.on('error', (e) => {
    hostExit = { code: null, signal: null, error: e.message };
  });
  host.on('exit', (code, signal) => {
    hostExit = { code, signal };
  });
}

async function stopHost() {
  await killHost();
  if (hostCwd) {
    rmSync(hostCwd, { recursive: true, force: true });
    hostCwd = null;
  }
}

async function killHost() {
  if (!host || hostExit) return;
  log('stopping host');
  host.kill('SIGTERM');
  for (let i = 0; i < 50 && !hostExit; i++) await sleep(100);
  if (!hostExit) {
    log('host did not exit after SIGTERM: SIGKILL');
    host.kill('SIGKILL');
    for (let i = 0; i < 20 && !hostExit; i++) await sleep(100);
  }
}

function describeExit() {
  if (!hostExit) return 'running';
  if (hostExit.error) return `failed to start: ${hostExit.error}`;
  return hostExit.signal ? `killed by ${hostExit.signal}` : `exited with code ${hostExit.code}`;
}

async function waitForHealth(base) {
  const deadline = Date.now() + HEALTH_TIMEOUT;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (hostExit) throw new SetupError(`host ${describeExit()} before /health answered.\n--- ${HOST_LOG} (tail) ---\n${tail(HOST_LOG)}`);
    try {
      const res = await fetch(`${base}/health`, { signal: AbortSignal.timeout(2000) });
      const body = await res.text();
      log(`/health → ${res.status} ${body.slice(0, 200)}`);
      return;
    } catch (e) {
      last = e.cause?.code || e.message;
    }
    await sleep(250);
  }
  throw new SetupError(`/health did not answer within ${HEALTH_TIMEOUT / 1000} s (${last}).\n--- ${HOST_LOG} (tail) ---\n${tail(HOST_LOG)}`);
}

// ---------------------------------------------------------------------------
// checks

const results = [];

async function check(name, fn) {
  const start = Date.now();
  try {
    const detail = await fn();
    results.push({ name, ok: true });
    log(`PASS ${name}${detail ? ` — ${detail}` : ''} (${((Date.now() - start) / 1000).toFixed(1)} s)`);
  } catch (e) {
    const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
    results.push({ name, ok: false, msg });
    log(`FAIL ${name}: ${msg}`);
  }
}

async function chartPoints(page, testId, timeout) {
  const sel = `[data-testid="${testId}"]`;
  try {
    await page.waitForFunction((s) => Number(document.querySelector(s)?.getAttribute('data-points') ?? 0) > 0, sel, { timeout, polling: 250 });
  } catch {
    const pts = await page.getAttribute(sel, 'data-points').catch(() => null);
    throw new Error(`chart ${testId} has no data points after ${timeout / 1000} s (data-points=${pts})`);
  }
  return `${await page.getAttribute(sel, 'data-points')} points`;
}

async function main() {
  const bin = requireEnvPath('RTAP_HOST_BIN', 'host binary');
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new SetupError(`RTAP_HOST_BIN=${bin} is not executable.`);
  }
  const pluginsDir = requireEnvPath('RTAP_PLUGINS_DIR', 'plugins directory');
  if (!statSync(pluginsDir).isDirectory()) throw new SetupError(`RTAP_PLUGINS_DIR=${pluginsDir} is not a directory.`);
  if (!existsSync(CHROMIUM)) throw new SetupError(`Chromium not found at ${CHROMIUM} (set CHROMIUM_PATH).`);

  if (!existsSync(path.join(DIST, 'index.html'))) {
    if (process.env.RTAP_E2E_SKIP_BUILD) throw new SetupError(`${DIST}/index.html is missing: run \`npm run build\` first.`);
    log('dist/ is missing: running `npm run build`');
    const r = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new SetupError('`npm run build` failed.');
  }

  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  startHost(bin, pluginsDir, port);
  await waitForHealth(base);

  const userDataDir = mkdtempSync(path.join(tmpdir(), 'rtap-e2e-chromium-'));
  let context = null;
  const pageErrors = [];
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1440, height: 900 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-dev-shm-usage',
      ],
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => {
      pageErrors.push(e.message);
      log(`page error: ${e.message}`);
    });
    page.on('console', (m) => {
      if (m.type() === 'error') log(`console error: ${m.text().slice(0, 300)}`);
    });

    log(`opening ${base}/`);
    const res = await page.goto(`${base}/`, { waitUntil: 'domcontentloaded', timeout: 30_000 });
    if (!res || !res.ok()) throw new SetupError(`GET / answered ${res ? res.status() : 'nothing'}: is --dashboard-dir served at / ?`);

    await check('dashboard renders', async () => {
      await page.waitForSelector('[data-testid="connection-status"]', { timeout: 15_000 });
    });

    await check('connection indicator shows connected', async () => {
      try {
        await page.waitForSelector('[data-testid="connection-status"][data-state="open"]', { timeout: 15_000 });
      } catch {
        const st = await page.getAttribute('[data-testid="connection-status"]', 'data-state').catch(() => null);
        const title = await page.getAttribute('[data-testid="connection-status"]', 'title').catch(() => null);
        throw new Error(`connection state is "${st}" after 15 s (${title})`);
      }
    });

    await check('page-views chart receives data', () => chartPoints(page, 'chart-page-views', 30_000));
    await check('latency chart receives data', () => chartPoints(page, 'chart-latency', 30_000));

    await check('plugins table lists every shipped plugin', async () => {
      try {
        await page.waitForFunction(
          (names) => {
            const rows = new Set([...document.querySelectorAll('[data-testid="plugin-row"]')].map((r) => r.getAttribute('data-plugin')));
            return names.every((n) => rows.has(n));
          },
          SHIPPED_PLUGINS,
          { timeout: 20_000, polling: 500 },
        );
      } catch {
        const present = await page.$$eval('[data-testid="plugin-row"]', (rows) => rows.map((r) => r.getAttribute('data-plugin')));
        const err = await page.textContent('[data-testid="plugins-error"]').catch(() => null);
        const missing = SHIPPED_PLUGINS.filter((n) => !present.includes(n));
        throw new Error(`missing plugins: ${missing.join(', ')} (table has: ${present.join(', ') || 'nothing'}${err ? `; API error: ${err}` : ''})`);
      }
      return `${SHIPPED_PLUGINS.length} plugins`;
    });

    await check('an alert appears in the alerts feed', async () => {
      try {
        await page.waitForSelector('[data-testid="alerts-feed"] [data-testid="alert-row"]', { timeout: ALERT_TIMEOUT });
      } catch {
        throw new Error(`no alert in the feed after ${ALERT_TIMEOUT / 1000} s`);
      }
      const first = page.locator('[data-testid="alert-row"]').first();
      return `first: ${await first.getAttribute('data-rule')} (${await first.getAttribute('data-severity')})`;
    });

    await check('no uncaught page errors', async () => {
      if (pageErrors.length > 0) throw new Error(`${pageErrors.length} uncaught error(s): ${pageErrors[0]}`);
    });

    // Informational: frames the dashboard could not validate point at a contract mismatch.
    const stats = await page.textContent('[data-testid="stream-stats"]').catch(() => null);
    const invalid = Number(await page.getAttribute('[data-testid="stream-stats"]', 'data-invalid').catch(() => 0));
    log(`stream: ${stats?.trim()}`);
    if (invalid > 0) log(`WARNING: ${invalid} frame(s) from the host did not match the documented message contract (see the page footer).`);

    if (hostExit) results.push({ name: 'host stays up', ok: false, msg: `host ${describeExit()} during the test` });

    mkdirSync(OUT, { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    log(`screenshot: ${path.relative(process.cwd(), SCREENSHOT)}`);
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

async function cleanupAndExit(code) {
  await stopHost();
  process.exit(code);
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    log(`${sig}: aborting`);
    void cleanupAndExit(130);
  });
}

let exitCode = 0;
try {
  await main();
  const failed = results.filter((r) => !r.ok);
  console.log('');
  for (const r of results) console.log(`${r.ok ? '  ok  ' : '  FAIL'} ${r.name}${r.ok ? '' : ` — ${r.msg}`}`);
  if (failed.length > 0) {
    console.log(`\nhost log: ${HOST_LOG}`);
    exitCode = 1;
  }
  console.log(`e2e: ${results.length - failed.length} passed, ${failed.length} failed`);
} catch (e) {
  const setup = e instanceof SetupError;
  console.error(`\ne2e ${setup ? 'setup failed' : 'crashed'}: ${e instanceof Error ? e.message : String(e)}`);
  if (!setup && e instanceof Error && e.stack) console.error(e.stack);
  exitCode = 1;
} finally {
  await stopHost();
}
process.exit(exitCode);
