//! Sharing plugin changes with the group's other hosts on
//! `<group>-control` (see [`super::group`]): ahead of a change's barrier,
//! taken back when the barrier refuses it, and again until the broker
//! takes it.

use std::sync::Arc;

use serde_json::Value;

use super::{Control, SHARE_AGAIN, SHARE_WAIT, Version, group};
use crate::plugin::Loaded;

impl Control {
    /// From now on, share every change on the group's control topic; first
    /// share what this host runs and `known` (the topic as read at start)
    /// does not say.
    pub fn share_with_group(&self, publisher: group::Publisher, known: &group::GroupPlugins) {
        let names: Vec<String> = self
            .entries
            .lock()
            .expect("entries lock")
            .keys()
            .cloned()
            .collect();
        let mut shared = Vec::new();
        for name in names {
            let (current, previous) = self.versions(&name);
            let same = known.plugins.get(&name).is_some_and(|s| {
                s.current == current.as_ref().map(|(_, v)| v.clone())
                    && s.previous == previous.as_ref().map(|(_, v)| v.clone())
            });
            if same
                || self
                    .held_back
                    .lock()
                    .expect("held back lock")
                    .contains(&name)
            {
                continue;
            }
            let queued = publisher.queue(
                &name,
                current.as_ref().map(|(b, v)| (&b[..], v.clone())),
                previous.as_ref().map(|(b, v)| (&b[..], v.clone())),
                false,
            );
            match queued {
                Ok(()) => shared.push(name),
                Err(e) => {
                    tracing::warn!(plugin = %name, "not shared with the group's other hosts yet: {e}");
                    self.unshared.lock().expect("unshared lock").insert(name);
                }
            }
        }
        match publisher.flush() {
            Ok(()) if !shared.is_empty() => {
                tracing::info!(plugins = ?shared, "shared with the group's hosts")
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(plugins = ?shared, "not shared with the group's other hosts yet: {e}");
                self.unshared.lock().expect("unshared lock").extend(shared);
            }
        }
        let _ = self.group.set(publisher);
    }

    /// The running and previous versions of `name`, as shared.
    #[allow(clippy::type_complexity)]
    pub(super) fn versions(
        &self,
        name: &str,
    ) -> (
        Option<(Arc<[u8]>, group::Version)>,
        Option<(Arc<[u8]>, group::Version)>,
    ) {
        let entries = self.entries.lock().expect("entries lock");
        let Some(e) = entries.get(name) else {
            return (None, None);
        };
        let of = |v: &Version| {
            v.loaded.bytes.clone().map(|b| {
                (
                    b,
                    group::Version {
                        hash: v.loaded.hash.clone(),
                        config: v.config.clone(),
                    },
                )
            })
        };
        (of(&e.current), e.previous.as_ref().and_then(of))
    }

    /// Share `name` as it will run once a barrier has applied a change to
    /// it (`next`: the version and config that will run; `None`: removed),
    /// before the barrier: the processing thread may commit state written
    /// by the new version right after the switch, and a host that takes
    /// over from one that died then must not pair it with the old code.
    /// Returns whether the group has the change (or this host does not
    /// share): when the broker did not take it, the change is shared again
    /// once it has happened ([`Control::shared_after`]). A change that then
    /// fails at its barrier is taken back by sharing the running versions
    /// again ([`Control::share`]).
    /// `reset`: the change starts the plugin's state empty.
    pub(super) fn share_ahead(
        &self,
        name: &str,
        next: Option<(&Arc<Loaded>, &Value)>,
        reset: bool,
    ) -> bool {
        let Some(p) = self.group.get() else {
            return true;
        };
        let current = match next {
            Some((l, c)) => {
                // No bytes to share (cannot happen for a version this host
                // loaded): shared after the change instead.
                let Some(bytes) = l.bytes.clone() else {
                    return false;
                };
                let v = group::Version {
                    hash: l.hash.clone(),
                    config: c.clone(),
                };
                Some((bytes, v))
            }
            None => None,
        };
        let (running, previous) = self.versions(name);
        // The version a rollback goes back to once the change is made: the
        // running one when the code changes (as `book` keeps it).
        let previous = match (&current, running) {
            (Some((_, n)), Some(r)) if r.1.hash != n.hash => Some(r),
            _ => previous,
        };
        let res = p.share(
            name,
            current.as_ref().map(|(b, v)| (&b[..], v.clone())),
            previous.as_ref().map(|(b, v)| (&b[..], v.clone())),
            reset,
            SHARE_WAIT,
        );
        match res {
            Ok(()) => {
                tracing::debug!(
                    plugin = name,
                    "shared with the group's hosts ahead of the barrier"
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    plugin = name,
                    "the change is not shared with the group's other hosts yet (shared again once made, every {:?}): {e}",
                    SHARE_AGAIN
                );
                false
            }
        }
    }

    /// After a change went through its barrier: `ahead`, whether
    /// [`Control::share_ahead`] shared it; if not, it is shared again
    /// every [`SHARE_AGAIN`] until the broker takes it.
    pub(super) fn shared_after(&self, name: &str, ahead: bool) {
        if ahead {
            self.unshared.lock().expect("unshared lock").remove(name);
            if self.group.get().is_some() {
                tracing::info!(plugin = name, "shared with the group's hosts");
            }
        } else if self.group.get().is_some() {
            self.unshared
                .lock()
                .expect("unshared lock")
                .insert(name.to_string());
        }
    }

    /// A change shared ahead of its barrier that did not go through (the
    /// barrier refused it, or it was abandoned before the processing thread
    /// took it): share the versions that run, which takes it back. Also
    /// when sharing ahead failed: its record may still be in the producer's
    /// queue, delivered once the broker is back, and this one follows it
    /// (one partition, one request in flight) or is shared again until
    /// the broker takes it.
    pub(super) fn unshare_failed(&self, name: &str) {
        self.share(name);
    }

    /// Share `name` as it runs now (removed when it does not run) with the
    /// group, when this host shares; a failure is logged — the change has
    /// happened here, and the other hosts get it with the next one.
    pub(super) fn share(&self, name: &str) {
        let Some(p) = self.group.get() else { return };
        let (current, previous) = self.versions(name);
        let res = p.share(
            name,
            current.as_ref().map(|(b, v)| (&b[..], v.clone())),
            previous.as_ref().map(|(b, v)| (&b[..], v.clone())),
            false,
            SHARE_WAIT,
        );
        let mut unshared = self.unshared.lock().expect("unshared lock");
        match res {
            Ok(()) => {
                unshared.remove(name);
                tracing::info!(
                    plugin = name,
                    hash = current.as_ref().map_or("", |(_, v)| v.hash.as_str()),
                    "shared with the group's hosts"
                )
            }
            Err(e) => {
                unshared.insert(name.to_string());
                tracing::warn!(
                    plugin = name,
                    "the change is not shared with the group's other hosts yet (tried again every {:?}): {e}",
                    SHARE_AGAIN
                )
            }
        }
    }

    /// Share again what could not be shared (a change made while the
    /// broker was away): the versions running now, between lifecycle
    /// operations (skipped while one runs; the next try comes).
    pub fn share_again(&self) {
        if self.unshared.lock().expect("unshared lock").is_empty() {
            return;
        }
        let Ok(_busy) = self.busy.try_lock() else {
            return;
        };
        let names: Vec<String> = self
            .unshared
            .lock()
            .expect("unshared lock")
            .iter()
            .cloned()
            .collect();
        for name in names {
            self.share(&name);
        }
    }
}
