//! What the many-host plan (`docs/kafka-exactly-once-plan.md`, steps 4–5)
//! can take from the broker the tests run on (tansu), and what it cannot:
//! checked against the real broker with librdkafka, as the host uses it.
//!
//! - cooperative-sticky assignment works: a member that joins takes
//!   partitions over and the others keep the rest (it settles in seconds,
//!   printed);
//! - one transaction commits offsets of two consumer groups (stage 1's
//!   input offsets and stage 2's exchange offsets in one commit);
//! - a producer whose transactional id another producer took over cannot
//!   commit: the fencing rtap relies on;
//! - **tansu does not fence by consumer-group metadata (KIP-447)**: a member
//!   that left the group still commits offsets for partitions now assigned to
//!   another. The plan therefore fences with transactional ids, not with
//!   `send_offsets_to_transaction`'s group metadata. If this test starts
//!   failing, tansu has learnt KIP-447 and the plan can use it.
//! - **tansu holds a committed transaction's offsets, and its records on
//!   every partition, back while a transaction that wrote to the same
//!   partitions earlier is still open**
//!   (its `txn_end` completes only transactions whose overlapping ones are
//!   all prepared). Kafka applies them at the commit. So two transactional
//!   producers that share partitions see each other delay their offsets,
//!   for seconds under load, and an offset read just after a commit can be
//!   an older one: the exchange topic gives every partition one writer
//!   (`crate::exchange`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// A member of `group` subscribed to `topic` with cooperative-sticky
/// assignment, as a host in shared mode would be.
fn member(broker: &Broker, group: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = broker
        .client()
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "7000")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Poll every member until `done` holds for their assignments (or panic
/// after `limit`); returns how long that took.
fn settle(
    members: &[&BaseConsumer],
    limit: Duration,
    done: impl Fn(&[BTreeSet<i32>]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        for c in members {
            let _ = c.poll(Duration::from_millis(20));
        }
        let now: Vec<BTreeSet<i32>> = members.iter().map(|c| assigned(c)).collect();
        if done(&now) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "the group did not settle in {limit:?}: {now:?}"
        );
    }
}

/// Each partition of `0..n` assigned to exactly one member, and every
/// member holding between floor and ceiling of an equal share.
fn balanced(sets: &[BTreeSet<i32>], n: i32) -> bool {
    let all: Vec<i32> = sets.iter().flatten().copied().collect();
    let unique: BTreeSet<i32> = all.iter().copied().collect();
    let share = n as usize / sets.len();
    all.len() == n as usize
        && unique.len() == n as usize
        && sets
            .iter()
            .all(|s| s.len() >= share && s.len() <= share + 1)
}

#[test]
fn cooperative_sticky_hands_over_partitions_and_the_others_keep_the_rest() {
    let broker = Broker::start();
    let topic = "coop-in";
    broker.create_topic(topic, 12);
    let a = member(&broker, "coop", topic);
    let took = settle(&[&a], Duration::from_secs(30), |s| s[0].len() == 12);
    println!("one member: all 12 partitions after {took:?}");
    let a_before = assigned(&a);

    let b = member(&broker, "coop", topic);
    let took = settle(&[&a, &b], Duration::from_secs(60), |s| balanced(s, 12));
    println!("a second member: 6 + 6 after {took:?}");
    let (a_two, b_two) = (assigned(&a), assigned(&b));
    assert!(a_two.is_subset(&a_before));

    let c = member(&broker, "coop", topic);
    let took = settle(&[&a, &b, &c], Duration::from_secs(60), |s| balanced(s, 12));
    println!("a third member: 4 + 4 + 4 after {took:?}");
    // Sticky: the first two only lost partitions, each kept 4 of its 6,
    // and the third got exactly what they gave up.
    let (a3, b3, c3) = (assigned(&a), assigned(&b), assigned(&c));
    assert!(a3.is_subset(&a_two), "{a3:?} ⊄ {a_two:?}");
    assert!(b3.is_subset(&b_two), "{b3:?} ⊄ {b_two:?}");
    let given: BTreeSet<i32> = a_two
        .difference(&a3)
        .chain(b_two.difference(&b3))
        .copied()
        .collect();
    assert_eq!(given, c3);
}

fn producer(broker: &Broker, id: &str) -> BaseProducer {
    let p: BaseProducer = broker
        .client()
        .set("transactional.id", id)
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p
}

fn offsets(topic: &str, partition: i32, offset: i64) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    tpl
}

fn committed(broker: &Broker, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let c: BaseConsumer = broker.client().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    match got.elements()[0].offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

const TXN: Duration = Duration::from_secs(30);

#[test]
fn one_transaction_commits_the_offsets_of_two_groups() {
    let broker = Broker::start();
    broker.create_topic("two-in", 2);
    broker.create_topic("two-out", 1);
    let input = member(&broker, "two-a", "two-in");
    settle(&[&input], Duration::from_secs(30), |s| s[0].len() == 2);
    let exchange: BaseConsumer = broker.client().set("group.id", "two-b").create().unwrap();
    let p = producer(&broker, "two-host");
    p.begin_transaction().unwrap();
    p.send(BaseRecord::<(), str>::to("two-out").payload("x"))
        .unwrap();
    p.send_offsets_to_transaction(
        &offsets("two-in", 0, 7),
        &input.group_metadata().unwrap(),
        TXN,
    )
    .unwrap();
    p.send_offsets_to_transaction(
        &offsets("two-in", 1, 3),
        &exchange.group_metadata().unwrap(),
        TXN,
    )
    .unwrap();
    p.commit_transaction(TXN).unwrap();
    assert_eq!(committed(&broker, "two-a", "two-in", 0), Some(7));
    assert_eq!(committed(&broker, "two-b", "two-in", 1), Some(3));
}

#[test]
fn a_producer_whose_transactional_id_was_taken_over_cannot_commit() {
    let broker = Broker::start();
    broker.create_topic("tid-in", 1);
    broker.create_topic("tid-out", 1);
    let group: BaseConsumer = broker.client().set("group.id", "tid").create().unwrap();
    let meta = group.group_metadata().unwrap();
    let old = producer(&broker, "tid-task-3");
    old.begin_transaction().unwrap();
    old.send(BaseRecord::<(), str>::to("tid-out").payload("zombie"))
        .unwrap();
    let new = producer(&broker, "tid-task-3");
    let started = Instant::now();
    let err = old
        .send_offsets_to_transaction(&offsets("tid-in", 0, 5), &meta, Duration::from_secs(10))
        .and_then(|()| old.commit_transaction(Duration::from_secs(10)))
        .expect_err("the zombie committed");
    // Refused at once ("a newer producer with the same transactionalId
    // fences the current one") when it sends its offsets. (A commit of
    // records alone is not refused: it times out, 30 s here.)
    println!("the zombie's commit, after {:?}: {err}", started.elapsed());
    assert_eq!(committed(&broker, "tid", "tid-in", 0), None);
    new.begin_transaction().unwrap();
    new.send(BaseRecord::<(), str>::to("tid-out").payload("owner"))
        .unwrap();
    new.send_offsets_to_transaction(&offsets("tid-in", 0, 9), &meta, TXN)
        .unwrap();
    new.commit_transaction(TXN).unwrap();
    assert_eq!(committed(&broker, "tid", "tid-in", 0), Some(9));
}

#[test]
fn tansu_does_not_fence_a_member_that_left_the_group() {
    let broker = Broker::start();
    broker.create_topic("kip447-in", 4);
    broker.create_topic("kip447-out", 1);
    let a = member(&broker, "kip447", "kip447-in");
    settle(&[&a], Duration::from_secs(30), |s| s[0].len() == 4);
    let zombie_meta = a.group_metadata().unwrap();
    let pa = producer(&broker, "kip447-a");
    pa.begin_transaction().unwrap();
    pa.send(BaseRecord::<(), str>::to("kip447-out").payload("zombie"))
        .unwrap();
    // `a` stops polling: past max.poll.interval.ms it leaves the group and
    // `b` is given every partition.
    let b = member(&broker, "kip447", "kip447-in");
    let took = settle(&[&b], Duration::from_secs(60), |s| s[0].len() == 4);
    println!("the stalled member's partitions moved after {took:?}");
    let res = pa
        .send_offsets_to_transaction(&offsets("kip447-in", 0, 5), &zombie_meta, TXN)
        .and_then(|()| pa.commit_transaction(TXN));
    match res {
        Ok(()) => {
            assert_eq!(committed(&broker, "kip447", "kip447-in", 0), Some(5));
            println!("as known: tansu took the offsets of a member that left (no KIP-447 fencing)");
        }
        Err(KafkaError::Transaction(e)) => panic!(
            "tansu now fences a stale group generation ({e}): KIP-447 works, update \
             docs/kafka-exactly-once-plan.md (steps 4-5) and this test"
        ),
        Err(e) => panic!("unexpected error: {e}"),
    }
    drop(a);
}

#[test]
fn tansu_holds_a_transactions_offsets_and_records_while_an_earlier_one_on_its_partitions_is_open() {
    let broker = Broker::start();
    broker.create_topic("overlap-out", 1);
    broker.create_topic("overlap-in", 1);
    broker.create_topic("overlap-own", 1);
    let group: BaseConsumer = broker.client().set("group.id", "overlap").create().unwrap();
    let meta = group.group_metadata().unwrap();
    let early = producer(&broker, "overlap-early");
    early.begin_transaction().unwrap();
    early
        .send(BaseRecord::<(), str>::to("overlap-out").payload("early"))
        .unwrap();
    early.flush(Duration::from_secs(10)).unwrap();
    let late = producer(&broker, "overlap-late");
    late.begin_transaction().unwrap();
    late.send(BaseRecord::<(), str>::to("overlap-out").payload("late"))
        .unwrap();
    late.send(BaseRecord::<(), str>::to("overlap-own").payload("own"))
        .unwrap();
    late.send_offsets_to_transaction(&offsets("overlap-in", 0, 5), &meta, TXN)
        .unwrap();
    late.commit_transaction(TXN).unwrap();
    let held = committed(&broker, "overlap", "overlap-in", 0);
    let own_held = broker.read_records("overlap-own", 1).len();
    early.commit_transaction(TXN).unwrap();
    let after = committed(&broker, "overlap", "overlap-in", 0);
    let own_after = broker.read_records("overlap-own", 1).len();
    println!(
        "the later transaction's offset: {held:?} while the earlier was open, {after:?} after; \
         its record on a partition of its own: {own_held} then {own_after}"
    );
    assert_eq!((after, own_after), (Some(5), 1));
    assert_eq!(
        own_held, 0,
        "tansu now shows a committed transaction's records while an earlier overlapping one is open"
    );
    assert_eq!(
        held, None,
        "tansu now applies a committed transaction's offsets while an earlier one on the same \
         partitions is open (as Kafka does): the exchange need not give each task its own \
         partitions any more (crate::exchange, docs/kafka-exactly-once-plan.md)"
    );
}
