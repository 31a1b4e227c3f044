//! JSONL from a file or stdin (`--source file:PATH`, `file:-`), as fast as the
//! pipeline takes it. Offsets of events are 1-based line numbers, so a bad
//! line's dead-letter entry says exactly where it was.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use super::{Position, Source, SourceError, decode};
use crate::event::{EventBatch, Malformed, Origin};

const CHUNK: usize = 1 << 20;

pub struct FileSource {
    name: String,
    origin: Origin,
    reader: Box<dyn Read + Send>,
    seekable: Option<File>,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    eof: bool,
    pos: Position,
}

impl FileSource {
    /// `path` `-` is stdin.
    pub fn open(path: &str) -> Result<Self, SourceError> {
        let name = format!("file:{path}");
        let (reader, seekable): (Box<dyn Read + Send>, Option<File>) = if path == "-" {
            (Box::new(std::io::stdin()), None)
        } else {
            let f = File::open(path).map_err(|e| SourceError::Io {
                what: path.to_string(),
                source: e,
            })?;
            let clone = f.try_clone().map_err(|e| SourceError::Io {
                what: path.to_string(),
                source: e,
            })?;
            (Box::new(f), Some(clone))
        };
        Ok(FileSource {
            origin: Origin {
                source: Arc::from(name.as_str()),
                partition: 0,
            },
            name,
            reader,
            seekable,
            buf: Vec::with_capacity(CHUNK * 2),
            start: 0,
            eof: false,
            pos: Position::default(),
        })
    }

    fn fill(&mut self) -> Result<(), SourceError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let n = loop {
            match self.reader.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(SourceError::Io {
                        what: self.name.clone(),
                        source: e,
                    });
                }
            }
        };
        self.buf.truncate(len + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(())
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_batch(&mut self, max: usize) -> Result<Option<EventBatch>, SourceError> {
        let mut batch = EventBatch::new(self.origin.clone());
        batch.buf.reserve(max * 256);
        batch.events.reserve(max);
        while batch.events.len() + batch.malformed.len() < max {
            let line = match memchr::memchr(b'\n', &self.buf[self.start..]) {
                Some(n) => {
                    let l = self.start..self.start + n;
                    self.start += n + 1;
                    self.pos.offset += n as u64 + 1;
                    l
                }
                None if !self.eof => {
                    if batch.events.is_empty() && batch.malformed.is_empty() {
                        self.fill()?;
                        continue;
                    }
                    break;
                }
                None if self.start < self.buf.len() => {
                    let l = self.start..self.buf.len();
                    self.pos.offset += l.len() as u64;
                    self.start = self.buf.len();
                    l
                }
                None => break,
            };
            self.pos.seq += 1;
            let line_no = self.pos.seq;
            if let Err(e) = decode::decode_into(&self.buf[line.clone()], line_no, &mut batch) {
                let raw = String::from_utf8_lossy(&self.buf[line]).into_owned();
                batch.malformed.push(Malformed {
                    offset: line_no,
                    reason: e.to_string(),
                    raw,
                });
            }
        }
        batch.end = self.pos;
        if batch.events.is_empty() && batch.malformed.is_empty() {
            return Ok(None);
        }
        Ok(Some(batch))
    }

    fn seek(&mut self, positions: &[(i32, Position)]) -> Result<(), SourceError> {
        let Some(&(_, pos)) = positions.iter().find(|(p, _)| *p == 0) else {
            return Ok(());
        };
        let Some(f) = self.seekable.as_mut() else {
            return Err(SourceError::NotSeekable(self.name.clone()));
        };
        f.seek(SeekFrom::Start(pos.offset))
            .map_err(|e| SourceError::Io {
                what: self.name.clone(),
                source: e,
            })?;
        self.buf.clear();
        self.start = 0;
        self.eof = false;
        self.pos = pos;
        Ok(())
    }
}
