//! State encoding: `postcard`, compact and fast. An empty byte string is the
//! default state. Decoding takes every byte: a state with bytes left over
//! was written by another layout, and reading its prefix as this one would
//! silently give wrong values.

use serde::{Serialize, de::DeserializeOwned};

/// Decode a state; empty bytes give `S::default()`.
pub fn decode_state<S: Default + DeserializeOwned>(bytes: &[u8]) -> Result<S, String> {
    if bytes.is_empty() {
        return Ok(S::default());
    }
    let (state, rest) = postcard::take_from_bytes(bytes)
        .map_err(|e| format!("cannot decode state ({} bytes): {e}", bytes.len()))?;
    if !rest.is_empty() {
        return Err(format!(
            "cannot decode state ({} bytes): {} bytes left over; it was written by another state layout (a version that changed `State` must bump its state_schema)",
            bytes.len(),
            rest.len()
        ));
    }
    Ok(state)
}

/// Encode a state, appending to `out` (every state of a call goes into one
/// buffer, without a buffer of its own in between: an allocation, a copy
/// and a free per key and call, in the plugin's allocator).
pub fn encode_state<S: Serialize>(state: &S, out: &mut Vec<u8>) -> Result<(), String> {
    postcard::serialize_with_flavor(state, Append(out))
        .map_err(|e| format!("cannot encode state: {e}"))
}

/// A postcard output that appends to a `Vec`.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// States of several groups as one blob: state `i` is
/// `data[ends[i-1]..ends[i]]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packed {
    pub data: Vec<u8>,
    pub ends: Vec<u32>,
}

impl Packed {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// State `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }

    /// Append one state.
    pub fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.ends.push(self.data.len() as u32);
    }

    /// Close the state that was appended to `data` directly.
    pub fn seal(&mut self) {
        self.ends.push(self.data.len() as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_appends_exactly_what_postcard_writes() {
        let mut out = vec![9u8];
        let a: (u32, Vec<i64>, String) = (300, vec![-1, 1 << 40], "ß".into());
        encode_state(&a, &mut out).unwrap();
        encode_state(&7u8, &mut out).unwrap();
        let mut want = vec![9u8];
        want.extend(postcard::to_allocvec(&a).unwrap());
        want.push(7);
        assert_eq!(out, want);
        let back: (u32, Vec<i64>, String) = decode_state(&out[1..out.len() - 1]).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn a_state_with_bytes_left_over_is_refused() {
        let mut bytes = Vec::new();
        encode_state(&(7u64, 9u64), &mut bytes).unwrap();
        let err = decode_state::<u64>(&bytes).unwrap_err();
        assert!(err.contains("1 bytes left over"), "{err}");
        assert!(err.contains("bump its state_schema"), "{err}");
    }
}
