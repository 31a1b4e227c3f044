import { useState } from 'react';
import { fmtAge, fmtClock, fmtNumber } from '../stream/format';
import type { Severity } from '../stream/types';
import type { DashboardView } from '../stream/view';

interface Props {
  view: DashboardView;
}

type Filter = 'all' | Severity;

export function AlertsView({ view }: Props) {
  const [severity, setSeverity] = useState<Filter>('all');
  const [rule, setRule] = useState<string>('');
  const { feed, rules, total } = view.alerts;
  const shown = feed.filter((a) => (severity === 'all' || a.severity === severity) && (rule === '' || a.rule === rule));

  return (
    <section className="section" id="alerts" aria-labelledby="alerts-h">
      <h2 id="alerts-h">
        Alerts <span className="muted num" data-testid="alerts-total">{fmtNumber(total)} since page load</span>
      </h2>
      <div className="grid-alerts">
        <div className="panel">
          <div className="panel-head">
            <h3>Live feed</h3>
            <div className="filters">
              <label>
                Severity{' '}
                <select value={severity} onChange={(e) => setSeverity(e.target.value as Filter)}>
                  <option value="all">all</option>
                  <option value="critical">critical</option>
                  <option value="warning">warning</option>
                  <option value="info">info</option>
                </select>
              </label>
              <label>
                Rule{' '}
                <select value={rule} onChange={(e) => setRule(e.target.value)}>
                  <option value="">all</option>
                  {rules.map((r) => (
                    <option key={r.rule} value={r.rule}>
                      {r.rule}
                    </option>
                  ))}
                </select>
              </label>
            </div>
          </div>
          <div className="feed" data-testid="alerts-feed" data-count={feed.length}>
            {shown.length === 0 ? (
              <p className="muted feed-empty">{feed.length === 0 ? 'No alerts yet.' : 'No alerts match the filter.'}</p>
            ) : (
              <table className="table feed-table">
                <thead>
                  <tr>
                    <th>Time</th>
                    <th>Severity</th>
                    <th>Rule</th>
                    <th>Key</th>
                    <th>Message</th>
                    <th className="right">Value</th>
                  </tr>
                </thead>
                <tbody>
                  {shown.map((a) => (
                    <tr key={a.seq} data-testid="alert-row" data-severity={a.severity} data-rule={a.rule}>
                      <td className="num nowrap">{fmtClock(a.time)}</td>
                      <td>
                        <span className={`badge sev-${a.severity}`}>{a.severity}</span>
                      </td>
                      <td className="nowrap">{a.rule}</td>
                      <td className="key" title={a.key}>
                        {a.key || '—'}
                      </td>
                      <td className="msg" title={a.message}>
                        {a.message}
                      </td>
                      <td className="num right">{a.value === null ? '—' : fmtNumber(a.value, Number.isInteger(a.value) ? 0 : 2)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </div>
        </div>
        <div className="panel" data-testid="alert-rule-counts">
          <h3>Per rule</h3>
          {rules.length === 0 ? (
            <p className="muted">No alerts yet.</p>
          ) : (
            <table className="table">
              <thead>
                <tr>
                  <th>Rule</th>
                  <th className="right">Count</th>
                  <th className="right" title="critical / warning / info">C / W / I</th>
                  <th className="right">Last</th>
                </tr>
              </thead>
              <tbody>
                {rules.map((r) => (
                  <tr key={r.rule} data-rule={r.rule}>
                    <td>
                      <span className={`sev-dot sev-${r.lastSeverity}`} aria-hidden="true" /> {r.rule}
                    </td>
                    <td className="num right">{fmtNumber(r.count)}</td>
                    <td className="num right nowrap">
                      {r.bySeverity.critical} / {r.bySeverity.warning} / {r.bySeverity.info}
                    </td>
                    <td className="num right nowrap">{fmtAge(r.lastReceivedAt, view.now)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      </div>
    </section>
  );
}
