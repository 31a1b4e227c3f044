//! What the lifecycle API changed, kept beside the code in the plugins
//! folder so that a restart runs the plugins as they were: each plugin's
//! config (set by `PATCH …/config`, `PUT ?config=`, a rollback or a
//! promotion) and the previous version a rollback goes back to, under
//! `<plugins>/.rtap/` (a hidden folder: the folder watch reads only the
//! `.wasm` files at the top):
//!
//! - `NAME.config.json`: the running version's config;
//! - `NAME.previous.wasm` and `NAME.previous.config.json`: the version
//!   before it, with its config.
//!
//! Writes go through a temporary file and a rename; a write that fails is
//! logged and changes nothing else (the change itself has happened).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The saved lifecycle state of one plugins folder.
pub struct Saved {
    dir: PathBuf,
}

impl Saved {
    pub fn new(plugins_dir: &Path) -> Self {
        Saved {
            dir: plugins_dir.join(".rtap"),
        }
    }

    fn path(&self, name: &str, what: &str) -> PathBuf {
        self.dir.join(format!("{name}.{what}"))
    }

    fn write(&self, name: &str, what: &str, bytes: &[u8]) {
        let path = self.path(name, what);
        let tmp = self.path(name, &format!("{what}.tmp"));
        let res = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = res {
            tracing::warn!(plugin = name, path = %path.display(), "cannot save for the next start: {e}");
        }
    }

    fn remove(&self, name: &str, what: &str) {
        let _ = std::fs::remove_file(self.path(name, what));
    }

    /// The running version's config.
    pub fn save_config(&self, name: &str, config: &Value) {
        self.write(name, "config.json", config.to_string().as_bytes());
    }

    /// The version a rollback goes back to (`None`: there is none).
    pub fn save_previous(&self, name: &str, previous: Option<(&[u8], &Value)>) {
        match previous {
            Some((bytes, config)) => {
                self.write(name, "previous.wasm", bytes);
                self.write(name, "previous.config.json", config.to_string().as_bytes());
            }
            None => {
                self.remove(name, "previous.wasm");
                self.remove(name, "previous.config.json");
            }
        }
    }

    /// A removed plugin leaves nothing behind.
    pub fn forget(&self, name: &str) {
        for what in ["config.json", "previous.wasm", "previous.config.json"] {
            self.remove(name, what);
        }
    }

    /// The saved config of `name`, if any (an unreadable one is logged and
    /// ignored).
    pub fn config(&self, name: &str) -> Option<Value> {
        read_json(&self.path(name, "config.json"))
    }

    /// The saved previous version of `name`: its bytes and config.
    pub fn previous(&self, name: &str) -> Option<(Vec<u8>, Value)> {
        let bytes = std::fs::read(self.path(name, "previous.wasm")).ok()?;
        let config = read_json(&self.path(name, "previous.config.json"))?;
        Some((bytes, config))
    }
}

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.is_object() => Some(v),
        Ok(_) | Err(_) => {
            tracing::warn!(path = %path.display(), "ignoring a saved plugin config that is not a JSON object");
            None
        }
    }
}
