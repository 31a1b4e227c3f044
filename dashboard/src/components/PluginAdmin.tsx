import { useId, useState, type FormEvent } from 'react';
import type { ApiClient, ApiResult } from '../api/client';
import { useAdminToken } from '../hooks/usePolling';
import { fmtClock, shortHash } from '../stream/format';
import { describeChangeReport, isValidPluginName, pluginNameFromFile, validateConfigJson, type PluginRow } from '../stream/plugins';

interface Props {
  api: ApiClient;
  rows: PluginRow[];
  /** Re-reads `/api/plugins`; resolves once the fresh list is applied. */
  onChanged: () => Promise<void>;
}

interface Outcome {
  ok: boolean;
  text: string;
  at: number;
}

/** Upload / roll back / configure / delete plugins through the host's control API. */
export function PluginAdmin({ api, rows, onChanged }: Props) {
  const id = useId();
  const [token, setToken] = useAdminToken();
  const [tokenDraft, setTokenDraft] = useState('');
  const [selectedName, setSelectedName] = useState('');
  const [configDraft, setConfigDraft] = useState<{ name: string; text: string } | null>(null);
  const [file, setFile] = useState<File | null>(null);
  // Bumped to remount (clear) the file input after an upload.
  const [fileInputKey, setFileInputKey] = useState(0);
  const [uploadName, setUploadName] = useState('');
  const [uploadConfig, setUploadConfig] = useState('');
  const [resetState, setResetState] = useState(false);
  const [asShadow, setAsShadow] = useState(false);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<Outcome | null>(null);

  const selected = rows.find((r) => r.name === selectedName) ?? rows[0] ?? null;
  const name = selected?.name ?? '';
  const configText = configDraft && configDraft.name === name ? configDraft.text : JSON.stringify(selected?.config ?? {}, null, 2);
  const configCheck = validateConfigJson(configText);
  const configDirty = configDraft !== null && configDraft.name === name;

  const effectiveUploadName = uploadName || (file ? pluginNameFromFile(file.name) : name);
  const uploadConfigCheck = uploadConfig.trim() === '' ? null : validateConfigJson(uploadConfig);

  async function run(label: string, call: () => Promise<ApiResult<unknown>>, after?: () => void) {
    if (!token) {
      setOutcome({ ok: false, text: `${label}: enter the admin token first.`, at: Date.now() });
      return;
    }
    setBusy(true);
    try {
      const res = await call();
      if (res.ok) {
        setOutcome({ ok: true, text: `${label}: ${describeChangeReport(res.data) ?? `done (HTTP ${res.status}).`}`, at: Date.now() });
        // Clear drafts only once the table shows the change, so the editor
        // never flashes the old value.
        await onChanged();
        after?.();
      } else {
        setOutcome({ ok: false, text: `${label} failed — ${res.error}${errorHint(res.status, res.error, label.startsWith('Upload'))}`, at: Date.now() });
      }
    } finally {
      setBusy(false);
    }
  }

  const onUpload = (e: FormEvent) => {
    e.preventDefault();
    if (!file) return;
    const target = effectiveUploadName;
    if (!isValidPluginName(target)) {
      setOutcome({ ok: false, text: `Upload: "${target}" is not a valid plugin name ([a-z0-9-]+).`, at: Date.now() });
      return;
    }
    if (uploadConfigCheck && !uploadConfigCheck.ok) {
      setOutcome({ ok: false, text: `Upload: ${uploadConfigCheck.error}`, at: Date.now() });
      return;
    }
    const config = uploadConfigCheck?.ok ? uploadConfigCheck.value : undefined;
    void run(`Upload ${target}`, () => api.uploadPlugin(target, file, token, { config, resetState, shadow: asShadow }), () => {
      setFile(null);
      setFileInputKey((k) => k + 1);
      setUploadName('');
      setAsShadow(false);
    });
  };

  const onConfig = (e: FormEvent) => {
    e.preventDefault();
    if (!selected || !configCheck.ok) return;
    const value = configCheck.value;
    void run(`Config of ${name}`, () => api.patchConfig(name, value, token), () => setConfigDraft(null));
  };

  const onSaveToken = (e: FormEvent) => {
    e.preventDefault();
    setToken(tokenDraft.trim());
    setTokenDraft('');
  };

  return (
    <div className="panel admin" data-testid="plugin-admin">
      <h3>Manage plugins</h3>

      <form className="admin-row" onSubmit={onSaveToken}>
        <label htmlFor={`${id}-token`}>Admin token</label>
        {token ? (
          <>
            <span className="muted" data-testid="admin-token-state">
              set for this tab
            </span>
            <button type="button" className="btn btn-small" onClick={() => setToken('')} data-testid="admin-token-forget">
              Forget
            </button>
          </>
        ) : (
          <>
            <input
              id={`${id}-token`}
              type="password"
              autoComplete="off"
              placeholder="Bearer token"
              value={tokenDraft}
              onChange={(e) => setTokenDraft(e.target.value)}
              data-testid="admin-token-input"
            />
            <button type="submit" className="btn btn-small" disabled={tokenDraft.trim() === ''} data-testid="admin-token-save">
              Save
            </button>
          </>
        )}
      </form>

      <div className="admin-row">
        <label htmlFor={`${id}-sel`}>Plugin</label>
        <select
          id={`${id}-sel`}
          value={name}
          onChange={(e) => {
            setSelectedName(e.target.value);
            setConfirmDelete(false);
          }}
          disabled={rows.length === 0}
          data-testid="plugin-select"
        >
          {rows.length === 0 && <option value="">(none)</option>}
          {rows.map((r) => (
            <option key={r.name} value={r.name}>
              {r.name} {r.version}
            </option>
          ))}
        </select>
        {selected && (
          <span className="muted small">
            <code className="hash" title={selected.hash}>
              {shortHash(selected.hash)}
            </code>{' '}
            {selected.state_schema && `state ${selected.state_schema}`}
          </span>
        )}
      </div>

      {selected && (
        <div className="admin-actions">
          <button
            type="button"
            className="btn"
            disabled={busy}
            title={
              selected.previous
                ? `Roll back to ${selected.previous.version} (${shortHash(selected.previous.hash)})`
                : 'No previous version as of the last poll; the host decides.'
            }
            onClick={() => void run(`Rollback of ${name}`, () => api.rollback(name, token))}
            data-testid="plugin-rollback"
          >
            Roll back{selected.previous ? ` to ${selected.previous.version}` : ''}
          </button>
          {selected.shadow && (
            <>
              <button
                type="button"
                className="btn btn-primary"
                disabled={busy}
                title={`Make ${selected.shadow.version} the live version: it goes on with the state it built (${selected.shadow.compared} compared, ${selected.shadow.different} different so far)`}
                onClick={() => void run(`Promote ${name}`, () => api.promoteShadow(name, token))}
                data-testid="plugin-shadow-promote"
              >
                Promote shadow {selected.shadow.version}
              </button>
              <button type="button" className="btn" disabled={busy} onClick={() => void run(`Discard shadow of ${name}`, () => api.discardShadow(name, token))} data-testid="plugin-shadow-discard">
                Discard shadow
              </button>
            </>
          )}
          {confirmDelete ? (
            <>
              <button
                type="button"
                className="btn btn-danger"
                disabled={busy}
                onClick={() => {
                  setConfirmDelete(false);
                  void run(`Delete ${name}`, () => api.remove(name, token));
                }}
              >
                Confirm delete {name}
              </button>
              <button type="button" className="btn" onClick={() => setConfirmDelete(false)}>
                Cancel
              </button>
            </>
          ) : (
            <button type="button" className="btn" disabled={busy} onClick={() => setConfirmDelete(true)} data-testid="plugin-delete">
              Delete…
            </button>
          )}
        </div>
      )}

      {selected && (
        <form className="admin-block" onSubmit={onConfig}>
          <label htmlFor={`${id}-cfg`}>
            Config of <strong>{name}</strong> <span className="muted small">(JSON object)</span>
          </label>
          <textarea
            id={`${id}-cfg`}
            rows={6}
            spellCheck={false}
            value={configText}
            onChange={(e) => setConfigDraft({ name, text: e.target.value })}
            aria-invalid={!configCheck.ok}
            data-testid="plugin-config"
          />
          <div className="admin-row">
            <button type="submit" className="btn" disabled={busy || !configCheck.ok || !configDirty} data-testid="plugin-config-apply">
              Apply config
            </button>
            {configDirty && (
              <button type="button" className="btn" onClick={() => setConfigDraft(null)}>
                Revert
              </button>
            )}
            <span className={configCheck.ok ? 'muted small' : 'error-text small'}>{configCheck.ok ? (configDirty ? 'valid JSON' : 'unchanged') : configCheck.error}</span>
          </div>
        </form>
      )}

      <form className="admin-block" onSubmit={onUpload}>
        <label htmlFor={`${id}-file`}>Upload a .wasm (new plugin or new version)</label>
        <input
          key={fileInputKey}
          id={`${id}-file`}
          type="file"
          accept=".wasm,application/wasm"
          onChange={(e) => setFile(e.target.files?.[0] ?? null)}
          data-testid="plugin-upload-file"
        />
        <div className="admin-row">
          <label htmlFor={`${id}-uname`}>Name</label>
          <input id={`${id}-uname`} type="text" placeholder={effectiveUploadName || 'plugin-name'} value={uploadName} onChange={(e) => setUploadName(e.target.value)} />
          <label className="check">
            <input type="checkbox" checked={resetState} onChange={(e) => setResetState(e.target.checked)} data-testid="plugin-upload-reset" /> reset state
          </label>
          <label className="check" title="Run it beside the live version on the same events; its outputs are compared per window and alert id, not emitted. Promote or discard it afterwards.">
            <input type="checkbox" checked={asShadow} onChange={(e) => setAsShadow(e.target.checked)} data-testid="plugin-upload-shadow" /> as shadow
          </label>
        </div>
        <textarea
          rows={2}
          spellCheck={false}
          placeholder='Optional config, e.g. {"threshold": 30}'
          value={uploadConfig}
          onChange={(e) => setUploadConfig(e.target.value)}
          aria-invalid={uploadConfigCheck !== null && !uploadConfigCheck.ok}
        />
        {uploadConfigCheck && !uploadConfigCheck.ok && <div className="error-text small">{uploadConfigCheck.error}</div>}
        <div className="admin-row">
          <button
            type="submit"
            className="btn btn-primary"
            disabled={busy || !file || (uploadConfigCheck !== null && !uploadConfigCheck.ok)}
            data-testid="plugin-upload-submit"
          >
            {asShadow ? `Shadow ${effectiveUploadName || ''}` : rows.some((r) => r.name === effectiveUploadName) ? `Swap ${effectiveUploadName}` : `Deploy ${effectiveUploadName || ''}`}
          </button>
          {file && <span className="muted small num">{(file.size / 1024).toFixed(1)} KiB</span>}
        </div>
      </form>

      <div
        className="admin-result"
        data-testid="plugin-action-result"
        data-outcome={busy ? 'busy' : outcome ? (outcome.ok ? 'ok' : 'error') : 'none'}
        data-at={outcome?.at ?? 0}
        aria-live="polite"
      >
        {busy ? (
          <span className="muted">Working…</span>
        ) : outcome ? (
          <span className={outcome.ok ? 'ok-text' : 'error-text'}>
            <span className="num muted">{fmtClock(outcome.at)}</span> {outcome.text}
          </span>
        ) : (
          <span className="muted">Actions need the admin token; results and API errors show here.</span>
        )}
      </div>
    </div>
  );
}

function errorHint(status: number, error: string, upload: boolean): string {
  if (status === 404 || status === 405) return ' (this host may not support plugin control yet)';
  if (status === 401 || status === 403) return ' (check the admin token)';
  if (status === 409 && upload && error.includes('state=reset')) return ' (tick "reset state" to replace it and start from empty state)';
  if (status === 429) return ' (wait a moment and retry)';
  return '';
}
