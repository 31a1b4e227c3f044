// Wires the host's WebSocket to the store (outside React, one per page), and
// loads the history of the selected range each time the stream opens.

import { HistorySync, httpHistorySource } from './stream/history';
import { defaultWsUrl, ReconnectingSocket, type SocketLike } from './stream/reconnect';
import { DashboardStore } from './stream/store';

export interface Live {
  store: DashboardStore;
  socket: ReconnectingSocket;
  history: HistorySync;
}

/** `readToken`: sent with the history's reads when the host has one (`--read-token`). */
export function startLive(url: string = defaultWsUrl(window.location), readToken = ''): Live {
  const store = new DashboardStore();
  const headers: Record<string, string> = readToken ? { Authorization: `Bearer ${readToken}` } : {};
  const history = new HistorySync(store, httpHistorySource((u) => fetch(u, { cache: 'no-store', headers })));
  let open = false;
  const socket = new ReconnectingSocket({
    url,
    createSocket: (u) => new WebSocket(u) as unknown as SocketLike,
    onMessage: (data) => store.ingest(data),
    onStatus: (status) => {
      store.setConnection(status);
      // Opened (first time or after a reconnect): the live frames from now
      // on are held while the range loads, then applied after it.
      const nowOpen = status.state === 'open';
      if (nowOpen && !open) void history.onOpen();
      open = nowOpen;
    },
    backoff: { initialMs: 500, factor: 2, maxMs: 30_000, jitter: 0.5 },
    staleMs: 15_000,
  });
  store.start();
  socket.start();
  return { store, socket, history };
}
