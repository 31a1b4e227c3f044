#!/usr/bin/env node
// End-to-end test of the dashboard against the REAL rtap host.
//
//   RTAP_HOST_BIN=../target/release/host RTAP_PLUGINS_DIR=../plugins/dist \
//   RTAP_TEST_PLUGINS=<dir with the test plugins, e.g. page-views-v2.wasm> npm run e2e
//
// Copies the `*.wasm` of $RTAP_PLUGINS_DIR into a scratch folder (the host
// writes uploaded versions into its plugins folder, which must not be the
// work tree), starts `$RTAP_HOST_BIN --plugins <copy> --rate 5000 --listen
// 127.0.0.1:<free port> --dashboard-dir dist --sink jsonl:/dev/null` with a
// random RTAP_ADMIN_TOKEN and RTAP_READ_TOKEN, waits for GET /health, opens
// the dashboard in headless Chromium (playwright-core, system Chromium): it
// asks for the read token (a wrong one is refused with the host's 403; the
// right one is typed once and survives a reload and a new tab), then checks that it is
// live: connected, charts fed, an alert in the feed, every shipped plugin in
// the plugins table. Then it drives the "Manage plugins" panel by clicking,
// against the real control API: a wrong token gives 403; the right token is
// typed once and survives a reload (sessionStorage); bot-burst's config is
// changed (checked in the UI and with GET /api/plugins); rolling back
// high-latency (no previous version) shows the host's 409; page-views-v2.wasm
// from $RTAP_TEST_PLUGINS is uploaded as page-views 1.1.1 (table + `swapped`
// in the lifecycle timeline). Without RTAP_TEST_PLUGINS the upload is skipped
// with a notice. Saves a full-page screenshot to dist-e2e/dashboard.png (and
// the plugin panels to dist-e2e/plugin-admin.png). The
// host is killed in all cases.
//
// History: once the host has run for 90 s (a real wait, counted from its
// start, so the checks above run meanwhile), a new page is opened: within
// 2 s every chart of 5-second windows (page views, active users, latency,
// error rate) must hold at least 60 s of points, loaded from /api/history;
// after a reload, the same.
//
// Optional env: CHROMIUM_PATH (default /usr/bin/chromium), RTAP_E2E_RATE
// (default 5000), RTAP_E2E_HEALTH_TIMEOUT_MS (default 120000),
// RTAP_E2E_ALERT_TIMEOUT_MS (default 60000), RTAP_E2E_SKIP_BUILD=1 (fail
// instead of building when dist/ is missing).

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, copyFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
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
const ADMIN_SCREENSHOT = path.join(OUT, 'plugin-admin.png');

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

// Random per run; the host reads it from RTAP_ADMIN_TOKEN.
const ADMIN_TOKEN = `e2e-${randomBytes(16).toString('hex')}`;
const WRONG_TOKEN = `wrong-${randomBytes(8).toString('hex')}`;
// Random per run; the host reads it from RTAP_READ_TOKEN.
const READ_TOKEN = `read-${randomBytes(16).toString('hex')}`;
const BOT_BURST_CONFIG = { min_page_views: 12, within_ms: 10000 };
const UPGRADE_FILE = 'page-views-v2.wasm'; // page-views 1.1.1
const UPGRADE_VERSION = '1.1.1';
const SHIPPED_PAGE_VIEWS = '1.1.0';

// The history check: when the page opens, how fast, and what it must show.
const HISTORY_OPEN_AFTER_MS = 90_000;
const HISTORY_WITHIN_MS = 2_000;
const HISTORY_MIN_SPAN_S = 60;
const FIVE_SECOND_CHARTS = ['chart-page-views', 'chart-active-users', 'chart-latency', 'chart-error-rate'];

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
/** Processing workers of the host under test: the pipeline view shows each. */
const WORKERS = 2;
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
let hostStartedAt = 0;

function startHost(bin, pluginsDir, port) {
  mkdirSync(OUT, { recursive: true });
  // The host runs in a scratch directory, so its state, checkpoints and
  // dead letters (relative defaults) never land in the work tree. It also
  // gets a copy of the plugins: uploads and rollbacks through the control
  // API rewrite `<plugins>/<name>.wasm`.
  hostCwd = mkdtempSync(path.join(tmpdir(), 'rtap-e2e-host-'));
  const plugins = path.join(hostCwd, 'plugins');
  mkdirSync(plugins);
  const wasm = readdirSync(pluginsDir).filter((f) => f.endsWith('.wasm'));
  if (wasm.length === 0) throw new SetupError(`RTAP_PLUGINS_DIR=${pluginsDir} holds no .wasm file.`);
  for (const f of wasm) copyFileSync(path.join(pluginsDir, f), path.join(plugins, f));
  log(`copied ${wasm.length} plugin(s) from ${pluginsDir} to ${plugins}`);
  const args = ['--plugins', plugins, '--rate', RATE, '--listen', `127.0.0.1:${port}`, '--dashboard-dir', DIST, '--sink', 'jsonl:/dev/null', '--workers', String(WORKERS)];
  log(`starting host: ${bin} ${args.join(' ')} (RTAP_ADMIN_TOKEN and RTAP_READ_TOKEN set)`);
  const out = createWriteStream(HOST_LOG);
  hostStartedAt = Date.now();
  host = spawn(bin, args, {
    cwd: hostCwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RTAP_DATA_DIR: path.join(hostCwd, 'data'), RTAP_ADMIN_TOKEN: ADMIN_TOKEN, RTAP_READ_TOKEN: READ_TOKEN },
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

function skip(name, why) {
  results.push({ name, ok: true, skipped: why });
  log(`SKIP ${name}: ${why}`);
}

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

/**
 * What each 5-second chart holds: points and the seconds they span. A
 * chart of N points 5 s apart covers (N - 1) * 5 + 5 s of windows.
 */
async function fiveSecondCharts(page) {
  return page.evaluate((ids) => ids.map((id) => {
    const el = document.querySelector(`[data-testid="${id}"]`);
    return { id, points: Number(el?.getAttribute('data-points') ?? 0), span: Number(el?.getAttribute('data-span') ?? 0) };
  }), FIVE_SECOND_CHARTS);
}

const coveredSeconds = (c) => (c.points > 0 ? c.span + 5 : 0);

/**
 * Runs `navigate` (goto or reload) and waits until every 5-second chart
 * covers HISTORY_MIN_SPAN_S, at most HISTORY_WITHIN_MS from the start of
 * the navigation.
 */
async function chartsFilledWithin(page, navigate) {
  const start = Date.now();
  await navigate();
  const left = HISTORY_WITHIN_MS - (Date.now() - start);
  try {
    if (left <= 0) throw new Error('navigation alone took the whole time');
    await page.waitForFunction(
      ([ids, min]) => ids.every((id) => {
        const el = document.querySelector(`[data-testid="${id}"]`);
        const points = Number(el?.getAttribute('data-points') ?? 0);
        return points > 0 && Number(el?.getAttribute('data-span') ?? 0) + 5 >= min;
      }),
      [FIVE_SECOND_CHARTS, HISTORY_MIN_SPAN_S],
      { timeout: left, polling: 50 },
    );
  } catch {
    const charts = await fiveSecondCharts(page).catch(() => []);
    const history = await page.getAttribute('[data-testid="history-status"]', 'title').catch(() => null);
    const state = await page.getAttribute('[data-testid="history-status"]', 'data-state').catch(() => null);
    throw new Error(
      `${Date.now() - start} ms after opening: ${charts.map((c) => `${c.id} ${c.points} points over ${coveredSeconds(c)} s`).join(', ')} ` +
        `(wanted ${HISTORY_MIN_SPAN_S} s each within ${HISTORY_WITHIN_MS} ms; history ${state}${history ? `: ${history}` : ''})`,
    );
  }
  const took = Date.now() - start;
  const charts = await fiveSecondCharts(page);
  const outputs = await page.getAttribute('[data-testid="history-status"]', 'data-outputs').catch(() => '?');
  return `${took} ms: ${charts.map((c) => `${c.id.replace('chart-', '')} ${coveredSeconds(c)} s`).join(', ')}; ${outputs} outputs from /api/history`;
}

// --- the "Manage plugins" panel ---------------------------------------------

const RESULT = '[data-testid="plugin-action-result"]';

/** Clicks `selector` and waits for the panel's outcome of that action. */
async function act(page, selector, timeout = 20_000) {
  const before = Number((await page.getAttribute(RESULT, 'data-at')) ?? 0);
  await page.click(selector);
  try {
    await page.waitForFunction(
      ([sel, t]) => {
        const el = document.querySelector(sel);
        return !!el && Number(el.getAttribute('data-at')) > t && el.getAttribute('data-outcome') !== 'busy';
      },
      [RESULT, before],
      { timeout, polling: 100 },
    );
  } catch {
    const text = await page.textContent(RESULT).catch(() => null);
    throw new Error(`no outcome ${timeout / 1000} s after clicking ${selector} (panel says: ${text?.trim()})`);
  }
  return { outcome: await page.getAttribute(RESULT, 'data-outcome'), text: (await page.textContent(RESULT))?.trim() ?? '' };
}

function expectOutcome(r, want, ...fragments) {
  if (r.outcome !== want) throw new Error(`expected ${want === 'ok' ? 'success' : 'an error'}, the panel says: ${r.text}`);
  for (const f of fragments) if (!r.text.includes(f)) throw new Error(`the panel does not mention "${f}": ${r.text}`);
}

async function selectPlugin(page, name) {
  await page.selectOption('[data-testid="plugin-select"]', name);
}

async function apiPlugin(base, name) {
  const res = await fetch(`${base}/api/plugins`, { signal: AbortSignal.timeout(5000), headers: { Authorization: `Bearer ${READ_TOKEN}` } });
  if (!res.ok) throw new Error(`GET /api/plugins → ${res.status}`);
  const list = await res.json();
  const p = list.find((x) => x.name === name);
  if (!p) throw new Error(`GET /api/plugins has no ${name}`);
  return p;
}

async function waitForTimeline(page, plugin, event, timeout = 15_000) {
  const sel = `[data-testid="plugin-events"] [data-testid="plugin-event"][data-plugin="${plugin}"][data-event="${event}"]`;
  try {
    await page.waitForSelector(sel, { timeout });
  } catch {
    const seen = await page.$$eval('[data-testid="plugin-event"]', (els) => els.map((e) => `${e.getAttribute('data-event')} ${e.getAttribute('data-plugin')}`));
    throw new Error(`no "${event}" event for ${plugin} in the lifecycle timeline after ${timeout / 1000} s (it has: ${seen.join('; ') || 'nothing'})`);
  }
}

async function waitForPluginsTable(page) {
  await page.waitForFunction((names) => names.every((n) => document.querySelector(`[data-testid="plugin-row"][data-plugin="${n}"]`)), SHIPPED_PLUGINS, {
    timeout: 20_000,
    polling: 250,
  });
}

const sameJson = (a, b) => JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
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
  const testPlugins = process.env.RTAP_TEST_PLUGINS ? path.resolve(process.env.RTAP_TEST_PLUGINS) : null;
  if (!testPlugins) log(`NOTICE: RTAP_TEST_PLUGINS is not set: the upload of ${UPGRADE_FILE} through the UI will be SKIPPED.`);

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

    await check('read token: asked first, a wrong one gets the host\'s 403', async () => {
      const unauth = await fetch(`${base}/api/pipeline`, { signal: AbortSignal.timeout(5000) });
      if (unauth.status !== 401) throw new Error(`GET /api/pipeline without the read token → ${unauth.status}, not 401`);
      await page.waitForSelector('[data-testid="read-token-gate"]', { timeout: 15_000 });
      if (await page.$('[data-testid="connection-status"]')) throw new Error('the dashboard shows before the read token is given');
      await page.fill('[data-testid="read-token-input"]', WRONG_TOKEN);
      await page.click('[data-testid="read-token-save"]');
      const err = await page.textContent('[data-testid="read-token-error"]', { timeout: 5000 });
      if (!err?.includes('403')) throw new Error(`error shown: ${err}`);
      return err;
    });

    await check('read token: typed once, kept across a reload', async () => {
      await page.fill('[data-testid="read-token-input"]', READ_TOKEN);
      await page.click('[data-testid="read-token-save"]');
      await page.waitForSelector('[data-testid="connection-status"]', { timeout: 15_000 });
      await page.reload({ waitUntil: 'domcontentloaded', timeout: 30_000 });
      await page.waitForSelector('[data-testid="connection-status"]', { timeout: 15_000 });
      if (await page.$('[data-testid="read-token-gate"]')) throw new Error('asked again after a reload');
      return 'not asked again after a reload';
    });

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

    await check(`pipeline view shows each of the ${WORKERS} workers busy with events`, async () => {
      try {
        await page.waitForFunction(
          (n) => {
            const rows = [...document.querySelectorAll('[data-testid="worker-row"]')];
            return rows.length === n && rows.every((r) => Number(r.children[1]?.textContent?.replace(/[^0-9.]/g, '') || 0) > 0);
          },
          WORKERS,
          { timeout: 15_000, polling: 250 },
        );
      } catch {
        const rows = await page.$$eval('[data-testid="worker-row"]', (rs) => rs.map((r) => r.textContent));
        throw new Error(`worker rows: ${JSON.stringify(rows)}`);
      }
      const res = await fetch(`${base}/api/pipeline`, { signal: AbortSignal.timeout(5000), headers: { Authorization: `Bearer ${READ_TOKEN}` } });
      const p = await res.json();
      if (!Array.isArray(p.workers) || p.workers.length !== WORKERS) throw new Error(`GET /api/pipeline workers: ${JSON.stringify(p.workers)}`);
      return p.workers.map((w) => `worker ${w.worker}: ${Math.round(w.events_per_sec)}/s, busy ${(w.busy * 100).toFixed(0)} %, ${w.keys} keys`).join('; ');
    });

    await check('pipeline view lists this host in its cluster panel, active with its partitions', async () => {
      const res = await fetch(`${base}/api/cluster`, { signal: AbortSignal.timeout(5000), headers: { Authorization: `Bearer ${READ_TOKEN}` } });
      const c = await res.json();
      if (!Array.isArray(c.hosts) || c.hosts.length !== 1 || c.hosts[0].role !== 'active' || c.hosts[0].partitions.length === 0 || c.hosts[0].key_groups.length !== 128) {
        throw new Error(`GET /api/cluster: ${JSON.stringify(c)}`);
      }
      const want = c.hosts[0].partitions.join(',');
      try {
        await page.waitForSelector(`[data-testid="cluster-host"][data-role="active"][data-status="live"][data-partitions="${want}"]`, { timeout: 15_000 });
      } catch {
        const rows = await page.$$eval('[data-testid="cluster-host"]', (rs) => rs.map((r) => r.outerHTML));
        throw new Error(`cluster rows: ${JSON.stringify(rows)}`);
      }
      const text = await page.textContent('[data-testid="cluster"]');
      if (!text.includes('no Kafka group') || !text.includes('last rebalance')) throw new Error(`cluster panel: ${text}`);
      return `${c.hosts[0].id}: partitions ${want}, 128 key groups`;
    });

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

    // ---- plugin control through the UI, against the real control API ----

    await check('admin: a wrong token gets the host\'s 403', async () => {
      await page.fill('[data-testid="admin-token-input"]', WRONG_TOKEN);
      await page.click('[data-testid="admin-token-save"]');
      await page.waitForSelector('[data-testid="admin-token-state"]', { timeout: 5000 });
      await selectPlugin(page, 'high-latency');
      const r = await act(page, '[data-testid="plugin-rollback"]');
      expectOutcome(r, 'error', 'HTTP 403', 'wrong admin token');
      await page.click('[data-testid="admin-token-forget"]');
      await page.waitForSelector('[data-testid="admin-token-input"]', { timeout: 5000 });
      return r.text.replace(/^\S+\s+/, '');
    });

    await check('admin: the token is typed once and kept in sessionStorage', async () => {
      await page.fill('[data-testid="admin-token-input"]', ADMIN_TOKEN);
      await page.click('[data-testid="admin-token-save"]');
      await page.waitForSelector('[data-testid="admin-token-state"]', { timeout: 5000 });
      const stored = await page.evaluate(() => sessionStorage.getItem('rtap.adminToken'));
      if (stored !== ADMIN_TOKEN) throw new Error('the token is not in sessionStorage');
      // A reload keeps it (and clears the lifecycle timeline, so the events
      // checked below come from the actions that follow).
      await page.reload({ waitUntil: 'domcontentloaded', timeout: 30_000 });
      await page.waitForSelector('[data-testid="connection-status"][data-state="open"]', { timeout: 15_000 });
      await page.waitForSelector('[data-testid="admin-token-state"]', { timeout: 5000 });
      await waitForPluginsTable(page);
      return 'still set after a reload';
    });

    await check('admin: configure bot-burst', async () => {
      await selectPlugin(page, 'bot-burst');
      await page.fill('[data-testid="plugin-config"]', JSON.stringify(BOT_BURST_CONFIG, null, 2));
      const r = await act(page, '[data-testid="plugin-config-apply"]');
      expectOutcome(r, 'ok', 'bot-burst');
      const p = await apiPlugin(base, 'bot-burst');
      if (!sameJson(p.config, BOT_BURST_CONFIG)) throw new Error(`GET /api/plugins: bot-burst config is ${JSON.stringify(p.config)}`);
      // The editor shows the applied config, with nothing left to apply.
      const shown = JSON.parse(await page.inputValue('[data-testid="plugin-config"]'));
      if (!sameJson(shown, BOT_BURST_CONFIG)) throw new Error(`the editor shows ${JSON.stringify(shown)} after applying`);
      if (await page.isEnabled('[data-testid="plugin-config-apply"]')) throw new Error('"Apply config" is still enabled after the config was applied');
      await waitForTimeline(page, 'bot-burst', 'config_changed');
      return r.text.replace(/^\S+\s+/, '');
    });

    await check('admin: rolling back high-latency shows the host\'s 409', async () => {
      await selectPlugin(page, 'high-latency');
      const r = await act(page, '[data-testid="plugin-rollback"]');
      expectOutcome(r, 'error', 'HTTP 409', '`high-latency` has no previous version to roll back to');
      return r.text.replace(/^\S+\s+/, '');
    });

    const upgradeName = `admin: upload ${UPGRADE_FILE} as page-views ${UPGRADE_VERSION}`;
    if (!testPlugins) {
      skip(upgradeName, 'RTAP_TEST_PLUGINS is not set (the folder of the built test plugins)');
    } else {
      await check(upgradeName, async () => {
        const file = path.join(testPlugins, UPGRADE_FILE);
        if (!existsSync(file)) throw new Error(`RTAP_TEST_PLUGINS=${testPlugins} has no ${UPGRADE_FILE}`);
        await page.setInputFiles('[data-testid="plugin-upload-file"]', file);
        const label = (await page.textContent('[data-testid="plugin-upload-submit"]'))?.trim();
        if (label !== 'Swap page-views') throw new Error(`the upload button says "${label}", expected "Swap page-views"`);
        const r = await act(page, '[data-testid="plugin-upload-submit"]', 90_000);
        expectOutcome(r, 'ok', `page-views ${SHIPPED_PAGE_VIEWS} → ${UPGRADE_VERSION}`);
        try {
          await page.waitForSelector(`[data-testid="plugin-row"][data-plugin="page-views"][data-version="${UPGRADE_VERSION}"]`, { timeout: 10_000 });
        } catch {
          const v = await page.getAttribute('[data-testid="plugin-row"][data-plugin="page-views"]', 'data-version').catch(() => null);
          throw new Error(`the plugins table shows page-views ${v}, expected ${UPGRADE_VERSION}`);
        }
        const cell = (await page.textContent('[data-testid="plugin-row"][data-plugin="page-views"] td:nth-child(2)'))?.trim() ?? '';
        if (!cell.startsWith(UPGRADE_VERSION)) throw new Error(`the version cell of page-views reads "${cell}"`);
        await waitForTimeline(page, 'page-views', 'swapped');
        const p = await apiPlugin(base, 'page-views');
        if (p.version !== UPGRADE_VERSION || p.previous?.version !== SHIPPED_PAGE_VIEWS) throw new Error(`GET /api/plugins: page-views ${p.version}, previous ${JSON.stringify(p.previous)}`);
        return r.text.replace(/^\S+\s+/, '');
      });
    }

    const shadowName = `admin: page-views ${SHIPPED_PAGE_VIEWS} as a shadow of ${UPGRADE_VERSION}: compared in the table, then promoted`;
    if (!testPlugins) {
      skip(shadowName, 'RTAP_TEST_PLUGINS is not set (the folder of the built test plugins)');
    } else {
      await check(shadowName, async () => {
        const file = path.join(testPlugins, 'page-views.wasm');
        await page.setInputFiles('[data-testid="plugin-upload-file"]', file);
        await page.check('[data-testid="plugin-upload-shadow"]');
        const label = (await page.textContent('[data-testid="plugin-upload-submit"]'))?.trim();
        if (label !== 'Shadow page-views') throw new Error(`the upload button says "${label}", expected "Shadow page-views"`);
        const r = await act(page, '[data-testid="plugin-upload-submit"]', 90_000);
        expectOutcome(r, 'ok', `page-views ${SHIPPED_PAGE_VIEWS} runs as a shadow of ${UPGRADE_VERSION}`, 'a copy of the live state');
        await waitForTimeline(page, 'page-views', 'shadow_started');
        // The same logic under another version: windows compared, none different.
        const sel = '[data-testid="plugin-row"][data-plugin="page-views"] [data-testid="plugin-shadow"]';
        try {
          await page.waitForFunction((s) => Number(document.querySelector(s)?.getAttribute('data-compared') ?? 0) > 0, sel, { timeout: 30_000, polling: 250 });
        } catch {
          throw new Error(`the plugins table shows no compared window for the shadow of page-views: ${await page.textContent(sel).catch(() => 'no shadow cell')}`);
        }
        const different = await page.getAttribute(sel, 'data-different');
        if (different !== '0') throw new Error(`the shadow reports ${different} different windows: ${await page.textContent(sel)}`);
        await selectPlugin(page, 'page-views');
        const promote = await act(page, '[data-testid="plugin-shadow-promote"]');
        expectOutcome(promote, 'ok', `page-views ${UPGRADE_VERSION} → ${SHIPPED_PAGE_VIEWS}: the shadow is live`, ' 0 different');
        await page.waitForSelector(`[data-testid="plugin-row"][data-plugin="page-views"][data-version="${SHIPPED_PAGE_VIEWS}"]`, { timeout: 10_000 });
        await waitForTimeline(page, 'page-views', 'promoted');
        const p = await apiPlugin(base, 'page-views');
        if (p.version !== SHIPPED_PAGE_VIEWS || p.shadow) throw new Error(`GET /api/plugins: page-views ${p.version}, shadow ${JSON.stringify(p.shadow)}`);
        return `${r.text.replace(/^\S+\s+/, '')} / ${promote.text.replace(/^\S+\s+/, '')}`;
      });
    }

    // ---- history: a page opened 90 s after the host started ----

    const wait = hostStartedAt + HISTORY_OPEN_AFTER_MS - Date.now();
    if (wait > 0) {
      log(`waiting ${(wait / 1000).toFixed(1)} s: the history page opens ${HISTORY_OPEN_AFTER_MS / 1000} s after the host started`);
      await sleep(wait);
    }
    const fresh = await context.newPage();
    fresh.on('pageerror', (e) => {
      pageErrors.push(e.message);
      log(`page error (history page): ${e.message}`);
    });
    await check(`history: opened ${((Date.now() - hostStartedAt) / 1000).toFixed(0)} s after the host started, every 5-second chart holds ${HISTORY_MIN_SPAN_S} s within ${HISTORY_WITHIN_MS / 1000} s`, () =>
      chartsFilledWithin(fresh, () => fresh.goto(`${base}/`, { waitUntil: 'commit', timeout: HISTORY_WITHIN_MS })),
    );
    await check(`history: after a reload, the same within ${HISTORY_WITHIN_MS / 1000} s`, () =>
      chartsFilledWithin(fresh, () => fresh.reload({ waitUntil: 'commit', timeout: HISTORY_WITHIN_MS })),
    );
    await fresh.close();

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
    // Back to the top, or the sticky top bar lands mid-page in the full-page shot.
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    log(`screenshot: ${path.relative(process.cwd(), SCREENSHOT)}`);
    await page
      .locator('.grid-admin')
      .screenshot({ path: ADMIN_SCREENSHOT })
      .then(() => log(`screenshot: ${path.relative(process.cwd(), ADMIN_SCREENSHOT)}`))
      .catch((e) => log(`no screenshot of the plugin panels: ${e.message.split('\n')[0]}`));
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
  for (const r of results) console.log(`${r.skipped ? '  skip' : r.ok ? '  ok  ' : '  FAIL'} ${r.name}${r.skipped ? ` — ${r.skipped}` : r.ok ? '' : ` — ${r.msg}`}`);
  if (failed.length > 0) {
    console.log(`\nhost log: ${HOST_LOG}`);
    exitCode = 1;
  }
  const skipped = results.filter((r) => r.skipped).length;
  console.log(`e2e: ${results.length - failed.length - skipped} passed, ${failed.length} failed${skipped ? `, ${skipped} skipped` : ''}`);
} catch (e) {
  const setup = e instanceof SetupError;
  console.error(`\ne2e ${setup ? 'setup failed' : 'crashed'}: ${e instanceof Error ? e.message : String(e)}`);
  if (!setup && e instanceof Error && e.stack) console.error(e.stack);
  exitCode = 1;
} finally {
  await stopHost();
}
process.exit(exitCode);
