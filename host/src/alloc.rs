//! Tuning of mimalloc, the host's allocator (set in the `host` binary).
//!
//! mimalloc returns pages that stay free for `purge_delay` (1 s by default)
//! to the OS, and the next allocation that lands on them faults them back
//! in, zeroed. The host keeps each commit's encoded changes (~10 MB/s at
//! 100 000 events/s) until the next checkpoint, 10 s later, so most of that
//! memory was purged before the processing thread reused it. Measured at
//! 100 000 events/s, 60 s: 140 544 minor page faults on the processing
//! thread with the default, 8 204 with 30 s, 4 568 with purging off.

/// mimalloc's `mi_option_purge_delay`: its index in `mi_option_t` (the Rust
/// bindings have no constant for it). A test checks that the option at this
/// index has purge_delay's default.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Apply the host's allocator settings: free pages go back to the OS after
/// 30 s or three checkpoint intervals, whichever is longer, so memory freed
/// at a checkpoint is reused before it is purged, not faulted in again.
/// `MIMALLOC_PURGE_DELAY` (ms) in the environment wins.
pub fn tune(checkpoint_interval: std::time::Duration) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        let ms = (3 * checkpoint_interval.as_millis()).max(30_000);
        let ms = std::ffi::c_long::try_from(ms).unwrap_or(std::ffi::c_long::MAX);
        // SAFETY: sets one numeric option; mimalloc reads it at each purge.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, ms) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads a numeric option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        // purge_delay defaults to 1000 ms in mimalloc 3; no other option
        // defaults to that (an upgrade that moved it would fail here).
        assert_eq!(delay, 1000, "mimalloc option {PURGE_DELAY}");
    }
}
