//! The encoding of changed keys: what an operator hands to a commit, and
//! what the commit log and a fold read back. Varints as postcard writes
//! them, so entries encoded by hand on the hot path stay readable by
//! `postcard`.

use serde::{Deserialize, Serialize};

/// Changed keys with their new entries, encoded back to back in one buffer
/// as they are taken from an operator — no allocation per key, and the
/// commit log record embeds the buffer with one copy. Per entry: a varint
/// key length, the key, then `0` (the key is gone) or `1`, a varint entry
/// length and the entry.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    n: usize,
    buf: Vec<u8>,
}

/// The bytes [`put_varint`] writes for `v`.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// `v` as postcard writes an `i64`: zigzag, so small negatives stay short.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The `i64` that [`zigzag`] made `v` of.
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A LEB128 varint, as postcard writes lengths and integers: entries
/// encoded by hand (the hot commit path) stay readable by `postcard`.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

pub fn take_bytes<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = usize::try_from(take_varint(buf)?).ok()?;
    if n > buf.len() {
        return None;
    }
    let (b, rest) = buf.split_at(n);
    *buf = rest;
    Some(b)
}

impl Changes {
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Append every entry of `other` (keys `self` does not hold).
    pub fn append(&mut self, other: Changes) {
        if self.n == 0 {
            *self = other;
            return;
        }
        self.buf.extend_from_slice(&other.buf);
        self.n += other.n;
    }

    /// Append `key`: its new entry, or `None` when it is gone.
    pub fn put(&mut self, key: &str, entry: Option<&[u8]>) {
        put_varint(&mut self.buf, key.len() as u64);
        self.buf.extend_from_slice(key.as_bytes());
        match entry {
            None => self.buf.push(0),
            Some(e) => {
                self.buf.push(1);
                put_varint(&mut self.buf, e.len() as u64);
                self.buf.extend_from_slice(e);
            }
        }
        self.n += 1;
    }

    /// Append `key` with an entry of exactly `len` bytes that `write`
    /// appends straight to the buffer: no scratch copy. Panics if `write`
    /// breaks the promise, which would corrupt every later entry.
    pub fn put_sized(&mut self, key: &str, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        put_varint(&mut self.buf, key.len() as u64);
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push(1);
        put_varint(&mut self.buf, len as u64);
        let at = self.buf.len();
        self.buf.reserve(len);
        write(&mut self.buf);
        assert_eq!(
            self.buf.len() - at,
            len,
            "state entry of key `{key}`: size promised and written differ"
        );
        self.n += 1;
    }

    /// The entries in the order they were put.
    pub fn iter(&self) -> impl Iterator<Item = Result<(&str, Option<&[u8]>), String>> {
        let mut rest = self.buf.as_slice();
        (0..self.n).map(move |i| {
            let bad = || format!("changed key #{i} is truncated or not UTF-8");
            let key = take_bytes(&mut rest).ok_or_else(bad)?;
            let key = std::str::from_utf8(key).map_err(|_| bad())?;
            let (&tag, tail) = rest.split_first().ok_or_else(bad)?;
            rest = tail;
            let entry = match tag {
                0 => None,
                1 => Some(take_bytes(&mut rest).ok_or_else(bad)?),
                _ => return Err(bad()),
            };
            Ok((key, entry))
        })
    }
}

impl Serialize for Changes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&(self.n as u64))?;
        t.serialize_element(&AsBytes(&self.buf))?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Changes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Buf(Vec<u8>);
        impl<'de> Deserialize<'de> for Buf {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Buf;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Buf, E> {
                        Ok(Buf(b.to_vec()))
                    }
                }
                d.deserialize_bytes(V)
            }
        }
        let (n, Buf(buf)) = <(u64, Buf)>::deserialize(d)?;
        let n = usize::try_from(n).map_err(serde::de::Error::custom)?;
        Ok(Changes { n, buf })
    }
}

/// Serializes a byte slice as bytes (one copy) rather than as a sequence of
/// `u8` (one call per byte); postcard writes both the same way.
struct AsBytes<'a>(&'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// For `#[serde(serialize_with)]` on `&[u8]` fields: the slice as bytes (one
/// copy), not as a sequence of `u8`.
pub fn ser_bytes<S: serde::Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    AsBytes(b).serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_is_what_put_varint_writes() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX >> 1, u64::MAX]
            .into_iter()
            .chain((0..64).map(|b| 1u64 << b))
        {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            assert_eq!(b, postcard::to_allocvec(&v).unwrap(), "{v}");
        }
        for v in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, zigzag(v));
            assert_eq!(b, postcard::to_allocvec(&v).unwrap(), "{v}");
        }
    }

    #[test]
    #[should_panic(expected = "size promised and written differ")]
    fn a_broken_size_promise_is_caught() {
        Changes::default().put_sized("k", 3, |b| b.push(1));
    }

    #[test]
    fn changes_survive_the_commit_log_and_a_cut_buffer_is_an_error() {
        let mut c = Changes::default();
        c.put("k1", Some(b"one"));
        c.put("", None);
        c.put_sized("k\u{e9}", 300, |b| b.extend_from_slice(&[7; 300]));
        c.put("gone", None);
        let bytes = postcard::to_allocvec(&c).unwrap();
        let back: Changes = postcard::from_bytes(&bytes).unwrap();
        let got: Vec<(String, Option<Vec<u8>>)> = back
            .iter()
            .map(|r| {
                r.map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("k1".into(), Some(b"one".to_vec())),
                ("".into(), None),
                ("k\u{e9}".into(), Some(vec![7; 300])),
                ("gone".into(), None),
            ]
        );
        let mut cut = back.clone();
        cut.buf.truncate(cut.buf.len() - 10);
        let err = cut.iter().find_map(Result::err).expect("an error");
        assert!(err.contains("changed key #2"), "{err}");
    }
}
