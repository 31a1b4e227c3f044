// Wires the host's WebSocket to the store (outside React, one per page).

import { defaultWsUrl, ReconnectingSocket, type SocketLike } from './stream/reconnect';
import { DashboardStore } from './stream/store';

export interface Live {
  store: DashboardStore;
  socket: ReconnectingSocket;
}

export function startLive(url: string = defaultWsUrl(window.location)): Live {
  const store = new DashboardStore();
  const socket = new ReconnectingSocket({
    url,
    createSocket: (u) => new WebSocket(u) as unknown as SocketLike,
    onMessage: (data) => store.ingest(data),
    onStatus: (status) => store.setConnection(status),
    backoff: { initialMs: 500, factor: 2, maxMs: 30_000, jitter: 0.5 },
    staleMs: 15_000,
  });
  store.start();
  socket.start();
  return { store, socket };
}
