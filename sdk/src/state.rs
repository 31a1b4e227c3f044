//! State encoding: `postcard`, compact and fast. An empty byte string is the
//! default state.

use serde::{Serialize, de::DeserializeOwned};

/// Decode a state; empty bytes give `S::default()`.
pub fn decode_state<S: Default + DeserializeOwned>(bytes: &[u8]) -> Result<S, String> {
    if bytes.is_empty() {
        return Ok(S::default());
    }
    postcard::from_bytes(bytes)
        .map_err(|e| format!("cannot decode state ({} bytes): {e}", bytes.len()))
}

/// Encode a state, appending to `out`.
pub fn encode_state<S: Serialize>(state: &S, out: &mut Vec<u8>) -> Result<(), String> {
    let bytes = postcard::to_allocvec(state).map_err(|e| format!("cannot encode state: {e}"))?;
    out.extend_from_slice(&bytes);
    Ok(())
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
