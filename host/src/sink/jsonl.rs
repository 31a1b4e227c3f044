//! Line-delimited JSON to stdout or a file (metrics, alerts, dead letters,
//! late events).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct SinkError {
    pub path: String,
    pub source: std::io::Error,
}

pub struct JsonlWriter {
    name: String,
    out: BufWriter<Box<dyn Write + Send>>,
    /// The file (not stdout) and its length including buffered bytes.
    file: Option<(File, u64)>,
}

impl JsonlWriter {
    /// `-` is stdout; a file is appended to (its folder is created).
    pub fn open(path: &str) -> Result<Self, SinkError> {
        let err = |source| SinkError {
            path: path.to_string(),
            source,
        };
        let (out, file): (Box<dyn Write + Send>, _) = if path == "-" {
            (Box::new(std::io::stdout()), None)
        } else {
            let p = PathBuf::from(path);
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let f = open_append(&p).map_err(err)?;
            let meta = f.metadata().map_err(err)?;
            // Only a regular file can be fsynced and cut back (not
            // /dev/null or a pipe).
            let file = if meta.is_file() {
                Some((f.try_clone().map_err(err)?, meta.len()))
            } else {
                None
            };
            (Box::new(f), file)
        };
        Ok(JsonlWriter {
            name: path.to_string(),
            out: BufWriter::with_capacity(1 << 16, out),
            file,
        })
    }

    pub fn write_line(&mut self, line: &str) -> Result<(), SinkError> {
        if let Some((_, len)) = &mut self.file {
            *len += line.len() as u64 + 1;
        }
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| SinkError {
                path: self.name.clone(),
                source,
            })
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError {
            path: self.name.clone(),
            source,
        })
    }
}

impl JsonlWriter {
    /// For a file: its path and length after flushing it (what a state
    /// commit records).
    /// `fsync`: also make it durable (else it is with the OS, which
    /// survives a crash of the process).
    pub fn sync(&mut self, fsync: bool) -> Result<Option<(String, u64)>, SinkError> {
        self.flush()?;
        let Some((f, len)) = &self.file else {
            return Ok(None);
        };
        if fsync {
            f.sync_data().map_err(|source| SinkError {
                path: self.name.clone(),
                source,
            })?;
        }
        Ok(Some((self.name.clone(), *len)))
    }
}

/// Cut a JSONL file back to the length recorded by the last commit: what
/// was written after it belongs to work the restarted host does again.
/// Returns the number of bytes removed.
pub fn truncate_to(path: &str, len: u64) -> Result<u64, SinkError> {
    let err = |source| SinkError {
        path: path.to_string(),
        source,
    };
    let f = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(err(e)),
    };
    let now = f.metadata().map_err(err)?.len();
    if now <= len {
        return Ok(0);
    }
    f.set_len(len).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(now - len)
}

fn open_append(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}
