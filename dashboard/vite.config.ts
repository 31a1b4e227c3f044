/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// `npm run dev` proxies the host's API and WebSocket; point it elsewhere with
// RTAP_HOST=http://127.0.0.1:3001 npm run dev
const host = process.env.RTAP_HOST ?? 'http://127.0.0.1:3000';

export default defineConfig({
  plugins: [react()],
  // Relative asset URLs: the host may serve dist/ at `/` or under a prefix.
  base: './',
  build: {
    target: 'es2022',
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      '/api': { target: host, changeOrigin: true },
      '/health': { target: host, changeOrigin: true },
      '/ws': { target: host.replace(/^http/, 'ws'), ws: true, changeOrigin: true },
    },
  },
  preview: {
    proxy: {
      '/api': { target: host, changeOrigin: true },
      '/health': { target: host, changeOrigin: true },
      '/ws': { target: host.replace(/^http/, 'ws'), ws: true, changeOrigin: true },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
    pool: 'threads',
    maxWorkers: 1,
  },
});
