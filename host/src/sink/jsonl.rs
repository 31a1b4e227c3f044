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
}

impl JsonlWriter {
    /// `-` is stdout; a file is appended to (its folder is created).
    pub fn open(path: &str) -> Result<Self, SinkError> {
        let err = |source| SinkError {
            path: path.to_string(),
            source,
        };
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            let p = PathBuf::from(path);
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            Box::new(open_append(&p).map_err(err)?)
        };
        Ok(JsonlWriter {
            name: path.to_string(),
            out: BufWriter::with_capacity(1 << 16, out),
        })
    }

    pub fn write_line(&mut self, line: &str) -> Result<(), SinkError> {
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

fn open_append(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}
