//! Mergeable, fixed-size summaries for plugin states.
//!
//! Aggregator states are encoded after every call and merged when windows
//! touch, so they must stay small and combine exactly: a [`HyperLogLog`]
//! counts distinct values in a few kilobytes, a [`DdSketch`] answers quantiles
//! with a relative-error guarantee. Both are deterministic (no randomness, no
//! clock) and serialize with serde, so they can sit inside any `State`.

mod ddsketch;
mod hll;

pub use ddsketch::DdSketch;
pub use hll::{HyperLogLog, hash64};

/// Serde for byte vectors as one byte string (postcard copies it in one go
/// instead of element by element), without a `serde_bytes` dependency.
pub(crate) mod bytes {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}
