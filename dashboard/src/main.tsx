import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { App } from './App';
import { ApiClient } from './api/client';
import { startLive } from './live';

const live = startLive();
const api = new ApiClient();

createRoot(document.getElementById('root') as HTMLElement).render(
  <StrictMode>
    <App store={live.store} socket={live.socket} history={live.history} api={api} />
  </StrictMode>,
);
