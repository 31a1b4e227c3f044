//! The hosts of one `--kafka-group` (issue #28):
//! - [`view`]: what each host is and does, published to `<group>-cluster`
//!   and read back, for `GET /api/cluster`;
//! - [`ranges`]: the key-group ranges one host runs (stage 2), as the
//!   ranges' consumer group assigns them, with their state restored from
//!   the changelog;
//! - [`tasks`]: the input partitions one host runs (stage 1), as the input
//!   topic's consumer group assigns them, each sending to the ranges
//!   through the exchange topic and committing its input offsets there;
//! - [`stages`]: the pipeline's stages 1 and 2 on those two;
//! - [`shared`]: `--share`, a host running both for its group;
//! - [`units`]: what those two share: opening, working, committing and
//!   closing the units the group gives the host, and opening a failed one
//!   again.
//!
//! `ranges` and `tasks` are the two halves of sharing the work; the
//! pipeline does not run on them yet (`docs/kafka-exactly-once-plan.md`,
//! step 5).

pub mod ranges;
pub mod shared;
pub mod stages;
pub mod tasks;
pub mod units;
pub mod view;

pub use view::{Cluster, EVERY, FORGET_AFTER_MS, Identity, LOST_AFTER_MS, Member, member};
