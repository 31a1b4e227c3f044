//! Keyed state and its durable store.
//!
//! - [`keygroup`]: the key groups keys hash into, the unit state is
//!   stored and moved by;
//! - [`keyed`]: the in-memory per-key table every operator keeps its state
//!   in, marking the keys each change touches;
//! - [`table`]: what the window and detector operators share on top of it
//!   (a commit's changes, samples, migrations);
//! - [`codec`]: how changed keys are encoded for a commit;
//! - [`store`]: RocksDB, written by atomic commits or through a commit log;
//! - [`fold`]: merging logged commits into the per-key state.
//!
//! What a commit holds and when it is taken — the checkpoint protocol — is
//! `crate::checkpoint`'s.

pub mod codec;
pub mod fold;
pub mod keyed;
pub mod keygroup;
pub mod store;
pub mod table;

pub use codec::{
    Changes, put_varint, ser_bytes, take_bytes, take_varint, unzigzag, varint_len, zigzag,
};
pub use fold::Fold;
pub use keyed::{KeyedState, Vacant, hash_key, hash_keys};
pub use store::{Commit, Meta, PluginChanges, StateStore, StoreConfig};
pub use table::{StateDelta, Stored};

use std::path::PathBuf;

/// A key of an operator's state (a user, session or page id…): up to 24
/// bytes are stored inline, so a hash-map probe compares bytes that are in
/// the bucket already instead of chasing a pointer to a heap string — a
/// cache miss per lookup with hundreds of thousands of keys.
pub type Key = compact_str::CompactString;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {why}")]
    Db { path: PathBuf, why: String },
    #[error("state store {path} is corrupt or from another version: {why}")]
    Corrupt { path: PathBuf, why: String },
}

/// Ask the CPU to load `v`'s first bytes into its cache (a hint).
#[inline]
pub(crate) fn prefetch<T>(v: &[T]) {
    prefetch_ptr(v.as_ptr().cast());
}

/// Ask the CPU to load the cache line holding `p` (a hint; any address).
#[inline]
pub(crate) fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
