import { fmtCompact, fmtDuration, fmtNumber, fmtPercent } from '../stream/format';
import type { DashboardView } from '../stream/view';
import { StatBox } from './StatBox';
import { TimeChart } from './TimeChart';

interface Props {
  view: DashboardView;
  theme: string;
  chartHeight: number;
}

/** Percent values (already ×100); the chart appends the % sign. */
const fmtPct = (v: number) => (Number.isInteger(v) || Math.abs(v) >= 10 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(1) : String(Number(v.toFixed(2))));
const fmtSec = (v: number) => (Number.isInteger(v) || Math.abs(v) >= 10 ? v.toFixed(0) : v.toFixed(1));

export function BusinessView({ view, theme, chartHeight }: Props) {
  const { stats, charts } = view;
  const maxTop = view.topPages[0]?.perSec ?? 0;
  return (
    <section className="section" id="business" aria-labelledby="business-h">
      <h2 id="business-h">Business</h2>
      <div className="grid-stats">
        <StatBox testId="stat-page-views" label="Page views" value={fmtNumber(stats.pageViewsPerSec, 1)} unit="/s" sub="last 5 s window" />
        <StatBox testId="stat-active-users" label="Active users" value={fmtCompact(stats.activeUsers)} sub="last minute" />
        <StatBox
          testId="stat-conversion"
          label="Conversion rate"
          value={fmtPercent(stats.conversionRate, 2)}
          sub={stats.purchases !== null ? `${fmtNumber(stats.purchases)} of ${fmtNumber(stats.sessions)} sessions` : 'last minute'}
        />
        <StatBox
          testId="stat-session-duration"
          label="Session duration"
          value={fmtDuration(stats.sessionMedianMs)}
          sub={stats.sessionMeanMs !== null ? `median · mean ${fmtDuration(stats.sessionMeanMs)}` : 'median, last minute'}
        />
        <StatBox
          testId="stat-pages-per-session"
          label="Pages / session"
          value={fmtNumber(stats.pagesPerSessionMean, 1)}
          sub={stats.sessionsLastMinute !== null ? `mean of ${fmtCompact(stats.sessionsLastMinute)} sessions` : 'mean, last minute'}
        />
        <StatBox
          testId="stat-latency"
          label="Latency P95"
          value={fmtDuration(stats.latencyP95)}
          sub={stats.latencyP50 !== null ? `P50 ${fmtDuration(stats.latencyP50)} · P99 ${fmtDuration(stats.latencyP99)}` : 'P50 / P99'}
          tone={stats.latencyP95 !== null && stats.latencyP95 > 500 ? 'warn' : 'neutral'}
        />
        <StatBox
          testId="stat-error-rate"
          label="Error rate"
          value={fmtPercent(stats.errorRate, 2)}
          sub={stats.errors !== null ? `${fmtNumber(stats.errors)} of ${fmtNumber(stats.events)} events` : 'last 5 s'}
          tone={stats.errorRate !== null && stats.errorRate > 0.05 ? 'crit' : stats.errorRate !== null && stats.errorRate > 0.01 ? 'warn' : 'neutral'}
        />
      </div>

      <div className="grid-charts">
        <TimeChart testId="chart-page-views" title="Page views" unit="/s" series={[{ label: 'views/s', colorVar: '--c1' }]} data={charts.pageViews} theme={theme} height={chartHeight} />
        <TimeChart testId="chart-active-users" title="Active users (1 min sliding)" unit="users" series={[{ label: 'active users', colorVar: '--c2' }]} data={charts.activeUsers} theme={theme} height={chartHeight} />
        <TimeChart
          testId="chart-conversion"
          title="Conversion rate (1 min)"
          unit="%"
          series={[{ label: 'conversion', colorVar: '--c3' }]}
          data={charts.conversion}
          theme={theme}
          height={chartHeight}
          format={fmtPct}
        />
        <TimeChart
          testId="chart-latency"
          title="Latency percentiles"
          unit="ms"
          series={[
            { label: 'P50', colorVar: '--c1' },
            { label: 'P95', colorVar: '--c4' },
            { label: 'P99', colorVar: '--c5' },
          ]}
          data={charts.latency}
          theme={theme}
          height={chartHeight}
        />
        <TimeChart
          testId="chart-error-rate"
          title="Error rate"
          unit="%"
          series={[{ label: 'errors', colorVar: '--c5' }]}
          data={charts.errorRate}
          theme={theme}
          height={chartHeight}
          format={fmtPct}
        />
        <TimeChart
          testId="chart-session-duration"
          title="Session duration (trailing 1 min)"
          unit="s"
          series={[
            { label: 'mean', colorVar: '--c2' },
            { label: 'median', colorVar: '--c3', dash: [6, 4] },
          ]}
          data={charts.sessionDuration}
          theme={theme}
          height={chartHeight}
          format={fmtSec}
          emptyText="Waiting for sessions to close…"
        />
        <TimeChart
          testId="chart-pages-per-session"
          title="Pages per session (trailing 1 min)"
          unit="pages"
          series={[
            { label: 'mean', colorVar: '--c4' },
            { label: 'median', colorVar: '--c1', dash: [6, 4] },
          ]}
          data={charts.pagesPerSession}
          theme={theme}
          height={chartHeight}
          emptyText="Waiting for sessions to close…"
        />
        <div className="panel top-pages" data-testid="top-pages">
          <h3>
            Top pages <span className="muted">(last minute, views/s)</span>
          </h3>
          {view.topPages.length === 0 ? (
            <p className="muted">No page views yet.</p>
          ) : (
            <table className="table">
              <tbody>
                {view.topPages.map((p, i) => (
                  <tr key={p.key}>
                    <td className="num rank">{i + 1}</td>
                    <td className="page" title={p.key}>
                      {p.key || '(empty)'}
                    </td>
                    <td className="bar-cell">
                      <div className="bar" style={{ width: `${maxTop > 0 ? (p.perSec / maxTop) * 100 : 0}%` }} />
                    </td>
                    <td className="num right">{fmtNumber(p.perSec, 1)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      </div>

      {view.otherMetrics.length > 0 && (
        <div className="panel" data-testid="other-metrics">
          <h3>
            Other metrics <span className="muted">(latest window, summed over keys)</span>
          </h3>
          <table className="table">
            <thead>
              <tr>
                <th>Metric</th>
                <th>Value</th>
                <th className="right">Keys</th>
              </tr>
            </thead>
            <tbody>
              {view.otherMetrics.map((m) => (
                <tr key={m.id}>
                  <td>{m.id}</td>
                  <td className="num">
                    {Object.entries(m.fields)
                      .map(([k, v]) => (k === 'value' ? fmtNumber(v, 2) : `${k} ${fmtNumber(v, 2)}`))
                      .join(' · ')}
                  </td>
                  <td className="num right">{m.keyCount}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
