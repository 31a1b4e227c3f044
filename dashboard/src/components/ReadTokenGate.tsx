import { useId, useState } from 'react';
import { checkReadToken } from '../api/client';

interface Props {
  /** A token the host refused (kept from an earlier visit), if any. */
  refused: boolean;
  /** Called with a token the host accepted. */
  onAccepted: (token: string) => void;
}

/**
 * Asked once when the host guards reading (`--read-token`): the token is
 * checked against the host before the dashboard reads anything, then kept
 * in localStorage (every tab of this browser) by the caller.
 */
export function ReadTokenGate({ refused, onAccepted }: Props) {
  const id = useId();
  const [draft, setDraft] = useState('');
  const [error, setError] = useState<string | null>(refused ? 'The saved read token was refused: enter it again.' : null);
  const [busy, setBusy] = useState(false);

  const submit = async () => {
    const token = draft.trim();
    if (!token) return;
    setBusy(true);
    const r = await checkReadToken(token);
    setBusy(false);
    if (r === 'ok') onAccepted(token);
    else setError(r === 'wrong' ? 'Wrong read token (HTTP 403).' : 'The host still asks for a token (HTTP 401).');
  };

  return (
    <div className="app read-gate">
      <form
        className="panel read-gate-form"
        data-testid="read-token-gate"
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <h1>rtap</h1>
        <p className="muted">This host asks for a read token (RTAP_READ_TOKEN) before it shows its data.</p>
        <label htmlFor={`${id}-read-token`}>Read token</label>
        <input
          id={`${id}-read-token`}
          type="password"
          autoComplete="off"
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          data-testid="read-token-input"
        />
        <button type="submit" className="btn" disabled={busy || draft.trim() === ''} data-testid="read-token-save">
          Open the dashboard
        </button>
        {error && (
          <p className="error" role="alert" data-testid="read-token-error">
            {error}
          </p>
        )}
      </form>
    </div>
  );
}
