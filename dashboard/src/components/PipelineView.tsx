import type { ApiClient } from '../api/client';
import { usePlugins } from '../hooks/usePolling';
import { fmtAge, fmtClock, fmtCompact, fmtDuration, fmtNumber, shortHash } from '../stream/format';
import type { DashboardView } from '../stream/view';
import { ClusterPanel } from './ClusterPanel';
import { PluginAdmin } from './PluginAdmin';
import { PluginsTable } from './PluginsTable';
import { StatBox } from './StatBox';
import { TimeChart } from './TimeChart';

interface Props {
  view: DashboardView;
  api: ApiClient;
  theme: string;
  chartHeight: number;
}

const EVENT_TONE: Record<string, string> = {
  loaded: 'ok',
  swapped: 'ok',
  rolled_back: 'warn',
  config_changed: 'info',
  failed: 'crit',
  degraded: 'warn',
  recovered: 'ok',
  removed: 'muted',
  shadow_started: 'info',
  promoted: 'ok',
  shadow_discarded: 'muted',
};

export function PipelineView({ view, api, theme, chartHeight }: Props) {
  const plugins = usePlugins(api, view.pluginEventSeq);
  const p = view.pipeline.latest;
  const lag = p ? Object.entries(p.consumer_lag).sort(([a], [b]) => Number(a) - Number(b) || a.localeCompare(b)) : [];
  const lagTotal = lag.reduce((acc, [, v]) => acc + v, 0);
  const watermarkDelay = p && p.watermark !== null ? p.time - p.watermark : null;

  return (
    <section className="section" id="pipeline" aria-labelledby="pipeline-h">
      <h2 id="pipeline-h">
        Pipeline{' '}
        <span className="muted">
          source: <span data-testid="pipeline-source">{p?.source || '—'}</span>
          {view.pipeline.receivedAt !== null && <span className="num"> · status {fmtAge(view.pipeline.receivedAt, view.now)}</span>}
        </span>
      </h2>
      <div className="grid-stats">
        <StatBox testId="stat-events-in" label="Events in" value={fmtNumber(p?.events_per_sec, 0)} unit="/s" sub={p?.events_in != null ? `${fmtCompact(p.events_in)} total` : undefined} />
        <StatBox testId="stat-outputs" label="Outputs" value={fmtNumber(p?.outputs_per_sec, 0)} unit="/s" sub="metrics + alerts" />
        <StatBox
          testId="stat-e2e"
          label="End-to-end P95"
          value={fmtDuration(p?.e2e_latency_ms?.p95)}
          sub={p?.e2e_latency_ms ? `P50 ${fmtDuration(p.e2e_latency_ms.p50)} · P99 ${fmtDuration(p.e2e_latency_ms.p99)}` : 'P50 / P99'}
        />
        <StatBox
          testId="stat-watermark"
          label="Watermark"
          value={fmtClock(p?.watermark)}
          sub={watermarkDelay !== null ? `${fmtDuration(watermarkDelay)} behind` : 'no watermark yet'}
        />
        <StatBox
          testId="stat-checkpoint"
          label="Last checkpoint"
          value={p?.last_checkpoint != null ? fmtAge(p.last_checkpoint, view.now) : '—'}
          sub={p?.last_checkpoint != null ? fmtClock(p.last_checkpoint) : 'none yet'}
        />
        <StatBox testId="stat-late" label="Late events" value={fmtCompact(p?.late_events)} sub="dropped past lateness" tone={p?.late_events ? 'warn' : 'neutral'} />
        <StatBox testId="stat-dead-lettered" label="Dead-lettered" value={fmtCompact(p?.dead_lettered)} sub="sent to the DLQ" tone={p?.dead_lettered ? 'warn' : 'neutral'} />
        <StatBox
          testId="stat-consumer-lag"
          label="Consumer lag"
          value={lag.length > 0 ? fmtCompact(lagTotal) : '—'}
          sub={lag.length > 0 ? `${lag.length} partition${lag.length === 1 ? '' : 's'}` : 'not a Kafka source'}
        />
      </div>

      <div className="grid-charts">
        <TimeChart
          testId="chart-throughput"
          title="Throughput"
          unit="/s"
          series={[
            { label: 'events in', colorVar: '--c1' },
            { label: 'outputs', colorVar: '--c2' },
          ]}
          data={view.charts.throughput}
          theme={theme}
          height={chartHeight}
        />
        <TimeChart
          testId="chart-e2e-latency"
          title="End-to-end latency"
          unit="ms"
          series={[
            { label: 'P50', colorVar: '--c1' },
            { label: 'P95', colorVar: '--c4' },
            { label: 'P99', colorVar: '--c5' },
          ]}
          data={view.charts.e2eLatency}
          theme={theme}
          height={chartHeight}
        />
        {lag.length > 0 && (
          <TimeChart
            testId="chart-consumer-lag"
            title="Consumer lag (all partitions)"
            unit="msgs"
            series={[{ label: 'lag', colorVar: '--c4' }]}
            data={view.charts.consumerLag}
            theme={theme}
            height={chartHeight}
          />
        )}
        <div className="panel" data-testid="consumer-lag">
          <h3>
            Consumer lag <span className="muted">per partition</span>
          </h3>
          {lag.length === 0 ? (
            <p className="muted">No partitions: the source is not Kafka.</p>
          ) : (
            <div className="lag-scroll">
              <table className="table">
                <thead>
                  <tr>
                    <th>Partition</th>
                    <th className="right">Lag (messages)</th>
                  </tr>
                </thead>
                <tbody>
                  {lag.map(([part, v]) => (
                    <tr key={part}>
                      <td className="num">{part}</td>
                      <td className="num right">{fmtNumber(v)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </div>
      </div>

      <ClusterPanel api={api} now={view.now} />

      <div className="panel" data-testid="workers" data-count={p?.workers.length ?? 0}>
        <h3>
          Workers <span className="muted">over the last second: stage 1 for their input partitions, stage 2 for their key groups</span>
        </h3>
        {!p || p.workers.length === 0 ? (
          <p className="muted">No worker figures yet.</p>
        ) : (
          <table className="table">
            <thead>
              <tr>
                <th>Worker</th>
                <th className="right">Events/s</th>
                <th className="right">Busy</th>
                <th className="right">Keys held</th>
                <th className="right">Exchange queue</th>
              </tr>
            </thead>
            <tbody>
              {p.workers.map((w) => (
                <tr key={w.worker} data-testid="worker-row" data-worker={w.worker}>
                  <td className="num">{w.worker}</td>
                  <td className="num right">{fmtNumber(w.events_per_sec, 0)}</td>
                  <td className="num right">
                    <span className="meter" title={`${(w.busy * 100).toFixed(1)} % of the last second`}>
                      <span className="meter-fill" style={{ width: `${(w.busy * 100).toFixed(1)}%` }} />
                    </span>{' '}
                    {(w.busy * 100).toFixed(0)} %
                  </td>
                  <td className="num right">{fmtCompact(w.keys)}</td>
                  <td className="num right">{fmtNumber(w.exchange_queue)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>

      <PluginsTable plugins={plugins} now={view.now} />

      <div className="grid-admin">
        <PluginAdmin api={api} rows={plugins.rows} onChanged={plugins.refresh} />
        <div className="panel">
          <h3>Plugin lifecycle</h3>
          <div className="timeline" data-testid="plugin-events" data-count={view.pluginEvents.length}>
            {view.pluginEvents.length === 0 ? (
              <p className="muted">No lifecycle events since page load.</p>
            ) : (
              <ol>
                {view.pluginEvents.map((e) => (
                  <li key={e.seq} className="timeline-item" data-testid="plugin-event" data-event={e.event} data-plugin={e.plugin} data-version={e.version ?? ''}>
                    <span className="num nowrap muted">{fmtClock(e.time)}</span>
                    <span className={`badge tone-${EVENT_TONE[e.event] ?? 'info'}`}>{e.event.replace(/_/g, ' ')}</span>
                    <span className="nowrap">
                      <strong>{e.plugin}</strong>
                      {e.version ? ` ${e.version}` : ''}
                    </span>
                    {e.hash && (
                      <code className="hash" title={e.hash}>
                        {shortHash(e.hash, 8)}
                      </code>
                    )}
                    {e.message && <span className="timeline-msg">{e.message}</span>}
                  </li>
                ))}
              </ol>
            )}
          </div>
        </div>
      </div>
    </section>
  );
}
