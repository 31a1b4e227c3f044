//! Watch the plugins folder: a `.wasm` added, replaced or removed goes through
//! the same lifecycle path as the API. Polling (no inotify dependency), with a
//! debounce: a file is taken only once its size and mtime held still for one
//! poll and it is at least [`SETTLE`] old, so a half-copied file is never
//! loaded. A file whose content is what already runs is ignored, so the
//! host's own writes (API uploads, rollbacks) do not loop back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::Control;

/// Minimum age of a file before it is loaded.
pub const SETTLE: Duration = Duration::from_millis(500);

type Signature = (u64, SystemTime);

fn scan(dir: &Path) -> HashMap<PathBuf, Signature> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "wasm")
            && let Ok(m) = e.metadata()
            && m.is_file()
        {
            out.insert(p, (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        }
    }
    out
}

pub fn spawn(control: Arc<Control>, dir: PathBuf, interval: Duration, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("plugin-watch".into())
        .spawn(move || {
            // The files the plugins were loaded from, each with a signature
            // no file has: every file is looked at once (one that already
            // runs is skipped by its content hash below), so one copied in
            // or changed between the plugins' loading and this first scan
            // (the server may answer before it) is still a change, and one
            // deleted meanwhile is still a removal.
            let unseen: Signature = (u64::MAX, SystemTime::UNIX_EPOCH);
            let mut known: HashMap<PathBuf, Signature> = control
                .loaded_paths()
                .into_iter()
                .map(|p| (p, unseen))
                .collect();
            let mut last = scan(&dir);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                let now = scan(&dir);
                for (path, sig) in &now {
                    let settled = last.get(path) == Some(sig)
                        && sig.1.elapsed().is_ok_and(|age| age >= SETTLE);
                    if !settled || known.get(path) == Some(sig) {
                        continue;
                    }
                    known.insert(path.clone(), *sig);
                    let Ok(bytes) = std::fs::read(path) else { continue };
                    let hash = hex::encode(Sha256::digest(&bytes));
                    let running = control.plugin_at(path).and_then(|n| control.running_hash(&n));
                    if running.as_deref() == Some(hash.as_str()) {
                        continue;
                    }
                    match control.put_file(path, &bytes) {
                        Ok(r) => tracing::info!(file = %path.display(), result = %r, "plugins folder: change applied"),
                        Err(e) => tracing::warn!(file = %path.display(), status = e.status, "plugins folder: change refused: {}", e.message),
                    }
                }
                for path in known.keys().filter(|p| !now.contains_key(*p)).cloned().collect::<Vec<_>>() {
                    known.remove(&path);
                    if let Some(name) = control.plugin_at(&path) {
                        match control.delete(&name) {
                            Ok(_) => tracing::info!(file = %path.display(), plugin = %name, "plugins folder: plugin removed"),
                            Err(e) => tracing::warn!(file = %path.display(), "plugins folder: removal refused: {}", e.message),
                        }
                    }
                }
                last = now;
            }
        })
        .expect("spawn plugin watch");
}
