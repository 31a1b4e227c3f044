//! JSONL from a file or stdin (`--source file:PATH`, `file:-`), as fast as the
//! pipeline takes it. Offsets of events are 1-based line numbers, so a bad
//! line's dead-letter entry says exactly where it was.
//!
//! A file is read as *splits*, as Flink splits files: line-aligned byte
//! ranges of about `--file-split-size` (a line belongs to the split it
//! starts in), each an input partition read side by side with the others;
//! stdin is one partition.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use super::{Position, Source, SourceError, decode};
use crate::event::{EventBatch, Malformed, Origin};

const CHUNK: usize = 1 << 20;

/// A split of a file: a line-aligned byte range and the number of lines
/// before it (so its events keep the file's line numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub range: std::ops::Range<u64>,
    pub lines_before: u64,
}

/// The splits of the file at `path` for splits of about `size` bytes: each
/// boundary moved to the start of the next line.
pub fn splits(path: &str, size: u64) -> Result<Vec<Split>, SourceError> {
    let io = |e| SourceError::Io {
        what: path.to_string(),
        source: e,
    };
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let size = size.max(1);
    let mut out: Vec<Split> = Vec::new();
    let (mut start, mut lines) = (0u64, 0u64);
    let mut buf = vec![0u8; CHUNK];
    while start < len || out.is_empty() {
        // The first line starting at or after start + size.
        let mut end = len;
        if start.saturating_add(size) < len {
            f.seek(SeekFrom::Start(start + size - 1)).map_err(io)?;
            let mut at = start + size - 1;
            'find: loop {
                let n = f.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                    end = at + i as u64 + 1;
                    break 'find;
                }
                at += n as u64;
            }
        }
        out.push(Split {
            range: start..end,
            lines_before: lines,
        });
        // The lines of this split.
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut left = end - start;
        while left > 0 {
            let n = f
                .read(&mut buf[..left.min(CHUNK as u64) as usize])
                .map_err(io)?;
            if n == 0 {
                break;
            }
            lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            left -= n as u64;
        }
        start = end;
    }
    Ok(out)
}

pub struct FileSource {
    name: String,
    /// The bytes of this split: lines starting before `end` are its.
    end: u64,
    /// Where the split starts (its first line's offset and number - 1).
    start: Position,
    origin: Origin,
    reader: Box<dyn Read + Send>,
    seekable: Option<File>,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    at: usize,
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
            at: 0,
            eof: false,
            pos: Position::default(),
            end: u64::MAX,
            start: Position::default(),
        })
    }

    /// One split of a file: partition `partition`, the lines starting in
    /// `split.range`.
    pub fn open_split(path: &str, partition: i32, split: &Split) -> Result<Self, SourceError> {
        let mut s = FileSource::open(path)?;
        s.origin.partition = partition;
        s.end = split.range.end;
        s.start = Position {
            offset: split.range.start,
            seq: split.lines_before,
        };
        s.seek_to(s.start)?;
        Ok(s)
    }

    fn seek_to(&mut self, pos: Position) -> Result<(), SourceError> {
        let Some(f) = self.seekable.as_mut() else {
            return Err(SourceError::NotSeekable(self.name.clone()));
        };
        f.seek(SeekFrom::Start(pos.offset))
            .map_err(|e| SourceError::Io {
                what: self.name.clone(),
                source: e,
            })?;
        self.buf.clear();
        self.at = 0;
        self.eof = false;
        self.pos = pos;
        Ok(())
    }

    fn fill(&mut self) -> Result<(), SourceError> {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
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
        while batch.events.len() + batch.malformed.len() < max && self.pos.offset < self.end {
            let line = match memchr::memchr(b'\n', &self.buf[self.at..]) {
                Some(n) => {
                    let l = self.at..self.at + n;
                    self.at += n + 1;
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
                None if self.at < self.buf.len() => {
                    let l = self.at..self.buf.len();
                    self.pos.offset += l.len() as u64;
                    self.at = self.buf.len();
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
        let p = self.origin.partition;
        let Some(&(_, pos)) = positions.iter().find(|(q, _)| *q == p) else {
            return Ok(());
        };
        if pos.offset < self.start.offset || pos.offset > self.end {
            return Err(SourceError::Config(format!(
                "{}: the checkpoint's position {} of partition {p} is outside that split ({}..{}): \
                 the file or --file-split-size changed since; start with --no-restore or the same split size",
                self.name, pos.offset, self.start.offset, self.end
            )));
        }
        self.seek_to(pos)
    }
}
