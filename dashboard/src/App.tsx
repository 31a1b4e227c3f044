import type { ApiClient } from './api/client';
import { AlertsView } from './components/AlertsView';
import { BusinessView } from './components/BusinessView';
import { ConnectionIndicator } from './components/ConnectionIndicator';
import { CriticalBanner } from './components/CriticalBanner';
import { PipelineView } from './components/PipelineView';
import { useHealth } from './hooks/usePolling';
import { useStoreSnapshot } from './hooks/useStore';
import { useMediaQuery, useTheme } from './hooks/useTheme';
import type { HistorySync } from './stream/history';
import type { ReconnectingSocket } from './stream/reconnect';
import type { DashboardStore } from './stream/store';
import { DEFAULT_VIEW_OPTIONS } from './stream/view';

interface Props {
  store: DashboardStore;
  socket: ReconnectingSocket;
  history: HistorySync;
  api: ApiClient;
}

const RANGES = [5, 10, 30];
const CRITICAL_WINDOW_MIN = DEFAULT_VIEW_OPTIONS.criticalWindowMs / 60_000;

export function App({ store, socket, history, api }: Props) {
  const { view, connection, stream, history: loaded } = useStoreSnapshot(store);
  const theme = useTheme();
  const wall = useMediaQuery('(min-width: 2200px)');
  const chartHeight = wall ? 280 : 200;
  const { health, error: healthError } = useHealth(api);
  const healthState = health?.status ?? (healthError ? 'unreachable' : 'unknown');

  return (
    <div className="app">
      <header className="topbar">
        <div className="brand">
          <span className="logo" aria-hidden="true" />
          <h1>rtap</h1>
          <span className="muted">live</span>
        </div>
        <nav className="nav" aria-label="Sections">
          <a href="#business">Business</a>
          <a href="#alerts">
            Alerts
            {view.alerts.activeCritical.length > 0 && <span className="badge sev-critical nav-badge">{view.alerts.activeCritical.length}</span>}
          </a>
          <a href="#pipeline">Pipeline</a>
        </nav>
        <div className="controls">
          <ConnectionIndicator status={connection} now={view.now} onRetry={() => socket.retryNow()} />
          <span
            className={`health health-${healthState}`}
            data-testid="health-status"
            data-state={healthState}
            title={healthError ?? (health ? `Components: ${Object.keys(health.components).join(', ') || 'none'}` : '')}
          >
            host {healthState}
          </span>
          <label className="range">
            <span className="sr-only">Time range</span>
            <select
              value={view.rangeMs}
              onChange={(e) => {
                store.setRange(Number(e.target.value));
                void history.onRange();
              }}
              data-testid="range-select"
            >
              {RANGES.map((m) => (
                <option key={m} value={m * 60_000}>
                  last {m} min
                </option>
              ))}
            </select>
          </label>
          <button
            type="button"
            className="btn btn-small theme-toggle"
            onClick={theme.cycle}
            title={`Theme: ${theme.mode} (click to change)`}
            data-testid="theme-toggle"
          >
            {theme.mode === 'system' ? 'Auto' : theme.mode === 'dark' ? 'Dark' : 'Light'}
          </button>
        </div>
      </header>

      <CriticalBanner alerts={view.alerts.activeCritical} windowMin={CRITICAL_WINDOW_MIN} now={view.now} />

      <main className="main">
        <BusinessView view={view} theme={theme.resolved} chartHeight={chartHeight} />
        <AlertsView view={view} />
        <PipelineView view={view} api={api} theme={theme.resolved} chartHeight={chartHeight} />
      </main>

      <footer className="footer muted small num" data-testid="stream-stats" data-messages={stream.messages} data-invalid={stream.invalid} data-ignored={stream.ignored}>
        {stream.messages.toLocaleString('en-US')} messages · {stream.invalid} malformed · {stream.ignored} of unknown type
        {stream.ignoredTypes.length > 0 && ` (${stream.ignoredTypes.join(', ')})`}
        {stream.lastInvalid && <span title={stream.lastInvalid}> · last error: {stream.lastInvalid.slice(0, 80)}</span>}
        <span data-testid="history-status" data-state={loaded.state} data-outputs={loaded.outputs} title={loaded.error ?? ''}>
          {' · '}
          {loaded.state === 'loaded'
            ? `history: ${loaded.outputs.toLocaleString('en-US')} outputs loaded (${loaded.applied.toLocaleString('en-US')} new)`
            : loaded.state === 'loading'
              ? 'loading history…'
              : loaded.state === 'failed'
                ? `history unavailable: ${(loaded.error ?? '').slice(0, 80)}`
                : 'no history loaded'}
        </span>
      </footer>
    </div>
  );
}
