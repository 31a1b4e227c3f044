import { fmtAge, fmtClock } from '../stream/format';
import type { AlertEntry } from '../stream/reducer';

interface Props {
  alerts: AlertEntry[];
  windowMin: number;
  now: number;
}

/** Shown while a critical alert arrived within the last `windowMin` minutes. */
export function CriticalBanner({ alerts, windowMin, now }: Props) {
  if (alerts.length === 0) return null;
  const latest = alerts[0] as AlertEntry;
  const rules = [...new Set(alerts.map((a) => a.rule))];
  return (
    <div className="banner banner-crit" role="alert" data-testid="critical-banner" data-count={alerts.length}>
      <strong>
        {alerts.length} critical alert{alerts.length === 1 ? '' : 's'} in the last {windowMin} min
      </strong>
      <span className="banner-rules">{rules.join(', ')}</span>
      <span className="banner-latest">
        Latest: {latest.rule}
        {latest.key ? ` (${latest.key})` : ''} — {latest.message || 'no message'} at <span className="num">{fmtClock(latest.time)}</span> ({fmtAge(latest.receivedAt, now)})
      </span>
    </div>
  );
}
