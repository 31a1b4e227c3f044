import { StrictMode, useEffect, useRef, useState } from 'react';
import { createRoot } from 'react-dom/client';
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { App } from './App';
import { ApiClient, checkReadToken } from './api/client';
import { ReadTokenGate } from './components/ReadTokenGate';
import { startLive, type Live } from './live';
import { defaultWsUrl } from './stream/reconnect';

const READ_TOKEN_KEY = 'rtap.readToken';

function storedReadToken(): string {
  try {
    return localStorage.getItem(READ_TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

function storeReadToken(token: string) {
  try {
    if (token) localStorage.setItem(READ_TOKEN_KEY, token);
    else localStorage.removeItem(READ_TOKEN_KEY);
  } catch {
    // storage unavailable: asked again after a reload
  }
}

interface Session {
  live: Live;
  api: ApiClient;
}

/** The dashboard, once reading is allowed: without a read token at once, else after the gate. */
function Root() {
  const [session, setSession] = useState<Session | null>(null);
  const [ask, setAsk] = useState<null | { refused: boolean }>(null);
  const started = useRef(false);

  const open = (token: string) => {
    if (started.current) return;
    started.current = true;
    storeReadToken(token);
    setAsk(null);
    setSession({ live: startLive(defaultWsUrl(window.location, token), token), api: new ApiClient(undefined, '', token) });
  };

  useEffect(() => {
    const saved = storedReadToken();
    void checkReadToken(saved).then((r) => {
      if (r === 'ok') open(saved);
      else {
        storeReadToken('');
        setAsk({ refused: saved !== '' });
      }
    });
  }, []);

  if (session) return <App store={session.live.store} socket={session.live.socket} history={session.live.history} api={session.api} />;
  if (ask) return <ReadTokenGate refused={ask.refused} onAccepted={open} />;
  return null;
}

createRoot(document.getElementById('root') as HTMLElement).render(
  <StrictMode>
    <Root />
  </StrictMode>,
);
