import type { ApiClient } from '../api/client';
import { useCluster } from '../hooks/usePolling';
import { describeRebalance, fmtRanges, type HostRole } from '../stream/cluster';
import { fmtAge, fmtCompact, fmtNumber } from '../stream/format';

const ROLE_TONE: Record<HostRole, string> = {
  active: 'ok',
  standby: 'info',
  restoring: 'warn',
  starting: 'muted',
  unknown: 'muted',
};

/** The group's hosts (`GET /api/cluster`): who processes which partitions and key groups. */
export function ClusterPanel({ api, now }: { api: ApiClient; now: number }) {
  const { cluster, error } = useCluster(api);
  const hosts = cluster?.hosts ?? [];
  return (
    <div className="panel" data-testid="cluster" data-count={hosts.length} data-group={cluster?.group ?? ''}>
      <h3>
        Hosts{' '}
        <span className="muted">
          {cluster?.group ? `Kafka group ${cluster.group}` : 'one host, no Kafka group'}
          {cluster?.lastRebalance && (
            <span data-testid="last-rebalance">
              {' '}
              · last rebalance {fmtAge(cluster.lastRebalance.at, now)}: {describeRebalance(cluster.lastRebalance)}
            </span>
          )}
        </span>
      </h3>
      {error && <p className="muted">Cluster view unavailable: {error}</p>}
      {hosts.length === 0 ? (
        <p className="muted">No hosts reported yet.</p>
      ) : (
        <table className="table">
          <thead>
            <tr>
              <th>Host</th>
              <th>Role</th>
              <th>Input partitions</th>
              <th className="right">Key groups</th>
              <th className="right">Lag</th>
              <th className="right">Events in</th>
              <th className="right">Last seen</th>
            </tr>
          </thead>
          <tbody>
            {hosts.map((h) => (
              <tr key={h.id} data-testid="cluster-host" data-host={h.id} data-role={h.role} data-status={h.status} data-partitions={h.partitions.join(',')}>
                <td className="nowrap">
                  {h.api ? (
                    <a href={h.api} title={`${h.api} · ${h.workers} worker${h.workers === 1 ? '' : 's'} · v${h.version}`}>
                      {h.id}
                    </a>
                  ) : (
                    h.id
                  )}
                  {h.self && <span className="muted"> (this host)</span>}
                </td>
                <td>
                  <span className={`badge tone-${h.status === 'lost' ? 'crit' : ROLE_TONE[h.role]}`}>{h.status === 'lost' ? `lost (${h.role})` : h.role}</span>
                </td>
                <td className="num">{fmtRanges(h.partitions)}</td>
                <td className="num right" title={fmtRanges(h.keyGroups)}>
                  {h.keyGroups.length}
                </td>
                <td className="num right">{h.partitions.length > 0 ? fmtNumber(h.lagTotal) : '—'}</td>
                <td className="num right">{fmtCompact(h.eventsIn)}</td>
                <td className="num right">{h.self ? 'now' : fmtAge(now - h.seenMsAgo, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
