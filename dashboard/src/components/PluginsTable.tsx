import type { PluginsState } from '../hooks/usePolling';
import { fmtAge, fmtCompact, fmtNumber, shortHash } from '../stream/format';
import { describeWindow } from '../stream/plugins';

interface Props {
  plugins: PluginsState & { refresh: () => Promise<void> };
  now: number;
}

const STATUS_TONE: Record<string, string> = {
  running: 'ok',
  degraded: 'warn',
  swapping: 'info',
  standby: 'info',
  failed: 'crit',
};

export function PluginsTable({ plugins, now }: Props) {
  const { rows, error, lastPollAt, loading } = plugins;
  return (
    <div className="panel" data-testid="plugins-panel">
      <div className="panel-head">
        <h3>
          Plugins <span className="muted num">{rows.length}</span>
        </h3>
        <div className="muted small num">
          {error ? (
            <span className="error-text" data-testid="plugins-error">
              {error}
            </span>
          ) : lastPollAt !== null ? (
            `polled ${fmtAge(lastPollAt, now)}`
          ) : loading ? (
            'loading…'
          ) : null}{' '}
          <button type="button" className="btn btn-small" onClick={() => void plugins.refresh()}>
            Refresh
          </button>
        </div>
      </div>
      <div className="table-scroll">
        <table className="table plugins-table" data-testid="plugins-table">
          <thead>
            <tr>
              <th>Name</th>
              <th>Version</th>
              <th>Hash</th>
              <th>Kind</th>
              <th>Input</th>
              <th>Window</th>
              <th>Status</th>
              <th className="right">Events/s</th>
              <th className="right">Outputs/s</th>
              <th className="right" title="failed calls (traps, timeouts, out of memory, plugin errors) + dead-lettered events">Errors</th>
              <th className="right">Loaded</th>
              <th title="the plugin's latest log line (info!, stdout, stderr); rtap logs NAME shows the rest">Log</th>
            </tr>
          </thead>
          <tbody>
            {rows.length === 0 && (
              <tr>
                <td colSpan={12} className="muted">
                  {loading ? 'Loading plugins…' : 'No plugins loaded.'}
                </td>
              </tr>
            )}
            {rows.map((p) => (
              <tr key={p.name} data-testid="plugin-row" data-plugin={p.name} data-version={p.version} data-status={p.status}>
                <td>
                  <strong>{p.name}</strong>
                  {p.key_by && <div className="muted small">by {p.key_by}</div>}
                </td>
                <td className="num">
                  {p.version}
                  {p.previous && <div className="muted small">prev {p.previous.version}</div>}
                  {p.shadow && (
                    <div
                      className="small"
                      data-testid="plugin-shadow"
                      data-compared={p.shadow.compared}
                      data-different={p.shadow.different}
                      title={`shadow ${p.shadow.version} (${shortHash(p.shadow.hash)}) beside the live version since ${fmtCompact(p.shadow.events)} events; state: ${p.shadow.state}`}
                    >
                      <span className={`badge tone-${p.shadow.different > 0 || p.shadow.status !== 'running' ? 'warn' : 'ok'}`}>
                        shadow {p.shadow.version}
                        {p.shadow.status !== 'running' ? ` (${p.shadow.status})` : ''}
                      </span>{' '}
                      <span className="muted">
                        {fmtCompact(p.shadow.compared)} compared, {fmtCompact(p.shadow.different)} different
                      </span>
                    </div>
                  )}
                </td>
                <td>
                  <code className="hash" title={p.hash}>
                    {shortHash(p.hash)}
                  </code>
                </td>
                <td>{p.kind}</td>
                <td>{p.input}</td>
                <td className="nowrap">{describeWindow(p.window)}</td>
                <td>
                  <span className={`badge tone-${STATUS_TONE[p.status] ?? 'info'}`}>{p.status}</span>
                </td>
                <td className="num right">{p.eventsPerSec === null ? '—' : fmtNumber(p.eventsPerSec, 0)}</td>
                <td className="num right">{p.outputsPerSec === null ? '—' : fmtNumber(p.outputsPerSec, 1)}</td>
                <td
                  className={`num right${p.errors > 0 ? ' error-text' : ''}`}
                  title={`traps ${p.counters.traps}, timeouts ${p.counters.timeouts}, out of memory ${p.counters.out_of_memory}, plugin errors ${p.counters.errors}, dead-lettered ${p.counters.dead_lettered}`}
                >
                  {fmtCompact(p.errors)}
                </td>
                <td className="num right nowrap">{p.loaded_at !== null ? fmtAge(p.loaded_at, now) : '—'}</td>
                <td
                  className="plugin-log small"
                  data-testid="plugin-log"
                  title={p.logs ? `${fmtCompact(p.logs.lines)} lines kept, ${fmtCompact(p.logs.dropped)} dropped by the rate limit` : 'no log lines'}
                >
                  {p.logs?.last ? (
                    <>
                      <span className={`badge tone-${p.logs.last.level === 'error' ? 'crit' : p.logs.last.level === 'warn' ? 'warn' : 'info'}`}>{p.logs.last.level}</span>{' '}
                      <code>{p.logs.last.message.slice(0, 120)}</code>
                      {p.logs.dropped > 0 && <div className="muted small">{fmtCompact(p.logs.dropped)} dropped</div>}
                    </>
                  ) : (
                    <span className="muted">—</span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
