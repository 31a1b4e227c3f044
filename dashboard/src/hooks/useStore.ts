import { useSyncExternalStore } from 'react';
import type { DashboardStore, StoreSnapshot } from '../stream/store';

export function useStoreSnapshot(store: DashboardStore): StoreSnapshot {
  return useSyncExternalStore(store.subscribe, store.getSnapshot);
}
