import type { ConnectionStatus } from '../stream/reconnect';

interface Props {
  status: ConnectionStatus;
  now: number;
  onRetry: () => void;
}

const LABEL: Record<ConnectionStatus['state'], string> = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  open: 'Live',
  waiting: 'Reconnecting',
  stopped: 'Stopped',
};

export function ConnectionIndicator({ status, now, onRetry }: Props) {
  const waitS = status.state === 'waiting' && status.retryAt !== null ? Math.max(0, Math.ceil((status.retryAt - now) / 1000)) : null;
  const title =
    status.state === 'waiting'
      ? `Connection lost (${status.lastError ?? 'unknown'}); attempt ${status.failures}, retrying in ${waitS ?? '?'} s`
      : status.state === 'open'
        ? `Connected to the host's /ws stream${status.connects > 1 ? ` (reconnected ${status.connects - 1}×)` : ''}`
        : LABEL[status.state];
  return (
    <div className={`conn conn-${status.state}`} data-testid="connection-status" data-state={status.state} title={title} role="status" aria-live="polite">
      <span className="conn-dot" aria-hidden="true" />
      <span className="conn-label">
        {LABEL[status.state]}
        {waitS !== null && <span className="num"> in {waitS} s</span>}
      </span>
      {status.state === 'waiting' && (
        <button type="button" className="btn btn-small" onClick={onRetry}>
          Retry now
        </button>
      )}
    </div>
  );
}
