//! The exchange between the workers of a round: stage 1's records for
//! each stage-2 owner, moved in memory or, with `--exchange wire`, encoded
//! as for another host (`crate::pipeline::wire`) and decoded at the owner.

use crate::pipeline::Pipeline;
use crate::pipeline::exchange::{LateFound, Record, Round};
use crate::pipeline::wire::{Encoder, Inbox as WireInbox, WireError};

/// What one worker's stage 1 sends each stage-2 owner.
pub(super) enum Sent {
    Memory(Vec<Record>),
    /// A payload of `crate::pipeline::wire`, with its record count.
    Wire(Vec<u8>, u64),
}

impl Sent {
    /// Stage 1's records of `round` for each owner, encoded with `wire`.
    pub(super) fn of(
        p: &Pipeline,
        round: &Round,
        records: Vec<Vec<Record>>,
        wire: bool,
    ) -> Vec<Sent> {
        if !wire {
            return records.into_iter().map(Sent::Memory).collect();
        }
        let encoder = Encoder::new(&p.slot_ids());
        records
            .into_iter()
            .map(|r| {
                let mut buf = Vec::new();
                if !r.is_empty() {
                    encoder.encode(round, &r, &mut buf);
                }
                Sent::Wire(buf, r.len() as u64)
            })
            .collect()
    }
}

/// What a stage-2 owner received in a round.
#[derive(Default)]
pub(super) struct Inbox {
    memory: Vec<Record>,
    payloads: Vec<Vec<u8>>,
    /// The records received (for the workers' counters).
    pub(super) records: u64,
}

impl Inbox {
    pub(super) fn take(&mut self, s: Sent) {
        match s {
            Sent::Memory(mut r) => {
                self.records += r.len() as u64;
                self.memory.append(&mut r);
            }
            Sent::Wire(b, n) => {
                self.records += n;
                if !b.is_empty() {
                    self.payloads.push(b);
                }
            }
        }
    }

    /// Stage 2 on `p` (worker `p.shard.worker`) with what it received:
    /// the payloads decoded into a round of its own, else `round`. The late
    /// marks of a decoded round come back resolved against it, as an owner
    /// on another host will report them; the others stay in `p`.
    pub(super) fn stage2(
        self,
        p: &mut Pipeline,
        round: &Round,
    ) -> Result<Vec<LateFound>, WireError> {
        if self.payloads.is_empty() {
            p.stage2(round, self.memory);
            return Ok(Vec::new());
        }
        let mut wire = WireInbox::new(&p.slot_ids());
        for b in &self.payloads {
            wire.add(b)?;
        }
        crate::metrics::metrics()
            .worker_exchange_bytes
            .with_label_values(&[&p.shard.worker.to_string()])
            .inc_by(wire.bytes);
        let (own, records) = wire.finish(round.end_wm);
        p.stage2(&own, records);
        Ok(std::mem::take(&mut p.late_marks)
            .iter()
            .map(|m| m.resolve(&own))
            .collect())
    }
}
