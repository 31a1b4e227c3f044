//! Ranges of key groups shared by hosts through a consumer group
//! (`rtap_host::exchange::Membership`) against the real broker: members
//! join, one leaves, one goes silent as a stuck host does, one joins
//! late. At every look no range has two owners among the members that
//! poll; once the group settles
//! each range has exactly one and the shares are even; what a member was
//! told it gained and lost adds up to what it holds; and a rebalance takes
//! nothing from a member that keeps its share (cooperative-sticky). The
//! times are printed: BENCHMARKS.md, "Membership".

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use rtap_host::exchange::{Change, Membership};

const RANGES: i32 = 16;

/// A member and what its changes add up to.
struct Member {
    m: Membership,
    told: BTreeSet<i32>,
    lost: usize,
}

impl Member {
    fn join(broker: &Broker, name: &str) -> Self {
        let cfg = kafka_config(broker, "g");
        Self {
            m: Membership::join(&cfg, "g-ranges", "g-exchange-ranges", name).unwrap(),
            told: BTreeSet::new(),
            lost: 0,
        }
    }

    fn poll(&mut self) {
        for c in self.m.poll(Duration::from_millis(10)) {
            match c {
                Change::Gained(g) => {
                    assert!(
                        self.told.is_disjoint(&g),
                        "gained {g:?} while holding {:?}",
                        self.told
                    );
                    self.told.extend(g);
                }
                Change::Lost(l) => {
                    assert!(l.is_subset(&self.told), "lost {l:?} of {:?}", self.told);
                    self.lost += l.len();
                    self.told.retain(|p| !l.contains(p));
                }
            }
        }
        assert_eq!(self.told, self.m.owned(), "changes and holdings disagree");
    }
}

/// Poll `live` until every range has one owner among them in even
/// shares; no range may ever have two owners among them. Returns how long
/// it took. (A member that stopped polling still believes it holds its
/// ranges: what keeps such a zombie from committing is the fencing of its
/// transactional ids, not the group.)
fn settle(live: &mut [&mut Member], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        for m in live.iter_mut() {
            m.poll();
        }
        let sets: Vec<BTreeSet<i32>> = live.iter().map(|m| m.m.owned()).collect();
        let all: Vec<i32> = sets.iter().flatten().copied().collect();
        let unique: BTreeSet<i32> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a range with two owners: {sets:?}");
        let share = RANGES as usize / live.len();
        if all.len() == RANGES as usize
            && sets
                .iter()
                .all(|s| s.len() >= share && s.len() <= share + 1)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "the group did not settle in {limit:?}: {sets:?}"
        );
    }
}

#[test]
fn ranges_have_one_owner_through_joins_leaves_and_a_silent_member() {
    let broker = Broker::start();
    rtap_host::kafka::ensure_topic(&kafka_config(&broker, "g"), "g-exchange-ranges", RANGES)
        .unwrap();
    let limit = Duration::from_secs(60);

    let mut a = Member::join(&broker, "host-a");
    let t = settle(&mut [&mut a], limit);
    eprintln!("one member holds all {RANGES} ranges after {t:?}");

    let mut b = Member::join(&broker, "host-b");
    let mut c = Member::join(&broker, "host-c");
    let t = settle(&mut [&mut a, &mut b, &mut c], limit);
    eprintln!("three members share them after {t:?}");
    assert_eq!(b.lost + c.lost, 0, "a newcomer lost ranges");

    // b leaves: a and c take its ranges and give up none of theirs.
    let (a_lost, c_lost) = (a.lost, c.lost);
    b.m.leave();
    let t = settle(&mut [&mut a, &mut c], limit);
    eprintln!("b left: a and c hold all after {t:?}");
    assert_eq!((a.lost, c.lost), (a_lost, c_lost), "a survivor lost ranges");

    // c goes silent, as a stuck host: its ranges move once the group
    // gives up on it (the membership's watchdog stops a member that is not
    // polled; until then librdkafka keeps heartbeating for it).
    let a_lost = a.lost;
    let t = settle(&mut [&mut a], limit);
    eprintln!("c silent: a holds all after {t:?}");
    assert_eq!(a.lost, a_lost, "the survivor lost ranges");
    drop(c);

    let mut d = Member::join(&broker, "host-d");
    let t = settle(&mut [&mut a, &mut d], limit);
    eprintln!("d joined: a and d share them after {t:?}");
    assert_eq!(d.lost, 0, "the newcomer lost ranges");
    assert_eq!(a.lost, a_lost + RANGES as usize / 2, "a gave d its half");
}
