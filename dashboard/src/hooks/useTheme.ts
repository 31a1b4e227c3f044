import { useCallback, useEffect, useState, useSyncExternalStore } from 'react';

export type ThemeMode = 'system' | 'light' | 'dark';
export type ResolvedTheme = 'light' | 'dark';

const KEY = 'rtap.theme';
const QUERY = '(prefers-color-scheme: dark)';

function readMode(): ThemeMode {
  try {
    const v = localStorage.getItem(KEY);
    return v === 'light' || v === 'dark' ? v : 'system';
  } catch {
    return 'system';
  }
}

function subscribeSystem(cb: () => void): () => void {
  const mq = window.matchMedia(QUERY);
  mq.addEventListener('change', cb);
  return () => mq.removeEventListener('change', cb);
}

const systemDark = () => window.matchMedia(QUERY).matches;

/** Light/dark theme: follows prefers-color-scheme unless toggled (saved in localStorage). */
export function useTheme(): { mode: ThemeMode; resolved: ResolvedTheme; cycle: () => void } {
  const [mode, setMode] = useState<ThemeMode>(readMode);
  const dark = useSyncExternalStore(subscribeSystem, systemDark);
  const resolved: ResolvedTheme = mode === 'system' ? (dark ? 'dark' : 'light') : mode;

  useEffect(() => {
    const root = document.documentElement;
    if (mode === 'system') delete root.dataset.theme;
    else root.dataset.theme = mode;
    try {
      if (mode === 'system') localStorage.removeItem(KEY);
      else localStorage.setItem(KEY, mode);
    } catch {
      // storage unavailable: the toggle still works for this page
    }
  }, [mode]);

  const cycle = useCallback(() => {
    setMode((m) => (m === 'system' ? (systemDark() ? 'light' : 'dark') : m === 'light' ? 'dark' : 'system'));
  }, []);

  return { mode, resolved, cycle };
}

function subscribeMedia(query: string) {
  return (cb: () => void) => {
    const mq = window.matchMedia(query);
    mq.addEventListener('change', cb);
    return () => mq.removeEventListener('change', cb);
  };
}

export function useMediaQuery(query: string): boolean {
  const [subscribe] = useState(() => subscribeMedia(query));
  return useSyncExternalStore(subscribe, () => window.matchMedia(query).matches);
}
