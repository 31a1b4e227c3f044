//! Input partitions and workers (`--workers`, `--file-split-size`): the
//! outputs must not depend on how many workers process the input, the
//! windows' outputs not on how it is split either, and bad input on one partition is dead-lettered with
//! its partition and line while every worker goes on.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::Value;

/// The shipped detectors that take events: each sees a key's events in
/// arrival order, and a key whose events span byte-range splits arrives in
/// another interleaving under another split (see the README).
const EVENT_DETECTORS: [&str; 2] = ["bot-burst", "cart-abandonment"];

/// Every output line of the shipped plugins, sorted (outputs of different
/// windows may come in another order; each output itself must be equal).
fn sorted_outputs(data: &Path) -> Vec<String> {
    outputs_of(data, |_| true)
}

/// The sorted output lines of the shipped plugins but the event detectors:
/// windows and metric detectors, which no split of the input may change.
fn window_outputs(data: &Path) -> Vec<String> {
    outputs_of(data, |p| !EVENT_DETECTORS.contains(&p))
}

fn outputs_of(data: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = read_lines(&data.join("out.jsonl"))
        .into_iter()
        .filter(|l| {
            let p: Value = serde_json::from_str(l).unwrap();
            let plugin = p["plugin"].as_str().unwrap();
            SHIPPED.contains(&plugin) && keep(plugin)
        })
        .collect();
    v.sort();
    v
}

/// The first difference of two sorted output lists, for the failure message.
fn first_difference(want: &[String], got: &[String]) -> String {
    let w: BTreeSet<&String> = want.iter().collect();
    let g: BTreeSet<&String> = got.iter().collect();
    let missing = w.difference(&g).next();
    let extra = g.difference(&w).next();
    format!(
        "{} outputs wanted, {} got; first missing: {missing:?}; first extra: {extra:?}",
        want.len(),
        got.len()
    )
}

/// Property: for one partitioning of the input — the file as one partition
/// (whose batches are cut into runs for every worker's stage 1) or in four
/// splits — any number of workers gives exactly the outputs of one worker,
/// for every shipped plugin: stage 2 applies each round's records in the
/// same canonical order whichever worker sent them, and whether the
/// records crossed in memory or encoded as for another host (`--exchange
/// wire`). The worker counts are drawn (`RTAP_SPLIT_SEED` replays them).
#[test]
fn any_number_of_workers_gives_the_outputs_of_one() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    write_events(&events, 40_000, 23, 400);
    let quarter = (std::fs::metadata(&events).unwrap().len() / 4 + 1).to_string();
    let plugins = plugins_dir(&SHIPPED);
    let mut rng = Rng::from_var("RTAP_SPLIT_SEED");
    let seed = rng.seed;
    for (parts, split) in [("1 partition", None), ("4 partitions", Some(&quarter))] {
        let run = |workers: &str, exchange: &str, data: &Path| {
            let mut a = vec!["--out-of-orderness", "60s", "--batch-size", "500"];
            if let Some(s) = split {
                a.extend(["--file-split-size", s.as_str()]);
            }
            a.extend(["--workers", workers, "--exchange", exchange]);
            run_file(plugins.path(), &events, data, &a);
            sorted_outputs(data)
        };
        let want = run(
            "1",
            "memory",
            &tmp.path().join(format!("{parts}-reference")),
        );
        assert!(want.len() > 2_000, "only {} reference outputs", want.len());
        assert!(
            want.iter()
                .any(|l| l.contains("\"plugin\":\"cart-abandonment\""))
                && want.iter().any(|l| l.contains("\"plugin\":\"bot-burst\"")),
            "the event detectors have no outputs to compare"
        );
        // The second case sends every record between the workers on the
        // wire, encoded as for another host (`pipeline::wire`).
        for (case, exchange) in ["memory", "wire"].into_iter().enumerate() {
            let workers = (2 + rng.below(3)).to_string();
            let got = run(
                &workers,
                exchange,
                &tmp.path().join(format!("{parts}-{case}")),
            );
            assert!(
                got == want,
                "RTAP_SPLIT_SEED={seed}: {parts}, {workers} workers, exchange in {exchange}: {}",
                first_difference(&want, &got)
            );
            eprintln!(
                "{parts}, {workers} workers, exchange in {exchange}: {} outputs, equal",
                got.len()
            );
        }
    }
}

/// Property: random splits of the same events into partitions (split size,
/// batch size) processed by a random number of workers give exactly the
/// windows' and the metric detectors' outputs of one partition and one
/// worker — the disorder of the input (≤ 30 s) stays within the
/// out-of-orderness bound, so no event is late under any split. The draws
/// come from `RTAP_SPLIT_SEED` or the clock and are printed, so a failing
/// case can be replayed.
#[test]
fn random_splits_and_workers_give_the_same_window_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    write_events(&events, 40_000, 21, 400);
    let size = std::fs::metadata(&events).unwrap().len();
    let plugins = plugins_dir(&SHIPPED);
    let bound = ["--out-of-orderness", "60s"];

    let reference = tmp.path().join("reference");
    let mut args = bound.to_vec();
    args.extend(["--workers", "1", "--file-split-size", "1GiB"]);
    run_file(plugins.path(), &events, &reference, &args);
    let want = window_outputs(&reference);
    assert!(want.len() > 2_000, "only {} reference outputs", want.len());
    assert!(
        read_lines(&reference.join("late-events.jsonl")).is_empty(),
        "the reference run has late events: the bound does not cover the input's disorder"
    );

    let mut rng = Rng::from_var("RTAP_SPLIT_SEED");
    let seed = rng.seed;
    for case in 0..4 {
        // From one split per ~40 lines to a handful of splits.
        let split = 8_192 + rng.below(size / 3);
        let workers = 1 + rng.below(4);
        let batch = [64, 500, 4096][rng.below(3) as usize];
        let data = tmp.path().join(format!("case-{case}"));
        let (split_s, workers_s, batch_s) =
            (split.to_string(), workers.to_string(), batch.to_string());
        let mut args = bound.to_vec();
        args.extend([
            "--file-split-size",
            &split_s,
            "--workers",
            &workers_s,
            "--batch-size",
            &batch_s,
        ]);
        run_file(plugins.path(), &events, &data, &args);
        assert!(
            read_lines(&data.join("late-events.jsonl")).is_empty(),
            "RTAP_SPLIT_SEED={seed}: splits of {split} bytes: late events"
        );
        let got = window_outputs(&data);
        assert!(
            got == want,
            "RTAP_SPLIT_SEED={seed}: splits of {split} bytes ({} partitions), {workers} workers, \
             batches of {batch}: {}",
            size.div_ceil(split),
            first_difference(&want, &got)
        );
        eprintln!(
            "splits of {split} bytes ({} partitions), {workers} workers, batches of {batch}: \
             {} outputs, equal",
            size.div_ceil(split),
            got.len()
        );
    }
}

/// Bad input on one partition — malformed lines and an event that makes one
/// plugin trap, all in the last split of the file — is dead-lettered with
/// that split's partition and each line's number; the other partitions and
/// workers go on, and the windows' and metric detectors' outputs equal those
/// of the clean input through one worker.
#[test]
fn bad_input_on_one_partition_is_dead_lettered_and_the_rest_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    // The poisoned event (page "/trap") is valid input for every other
    // plugin: the clean input has it too, the malformed lines it lacks.
    let mut clean = gen_events(20_000, 5, 200);
    let poisoned_at = 17_000;
    let mut v: Value = serde_json::from_str(&clean[poisoned_at]).unwrap();
    v["page"] = "/trap".into();
    clean[poisoned_at] = v.to_string();
    let clean_path = tmp.path().join("clean.jsonl");
    std::fs::write(&clean_path, clean.join("\n") + "\n").unwrap();

    // The bad lines go into the last quarter: splits of a quarter of the
    // file put them all in partition 3.
    let mut lines = clean.clone();
    let malformed = [
        (16_000, "{\"event_type\": \"page_view\", \"ts\": "),
        (18_500, "not json at all"),
        (19_000, "{\"user_id\": 7}"),
    ];
    for (at, text) in malformed.iter().rev() {
        lines.insert(*at, text.to_string());
    }
    let bad_path = tmp.path().join("bad.jsonl");
    let body = lines.join("\n") + "\n";
    std::fs::write(&bad_path, &body).unwrap();
    let quarter = (body.len() / 4 + 1).to_string();
    // Where each bad line ended up: 1-based line numbers.
    let line_of = |needle: &str| lines.iter().position(|l| l == needle).unwrap() as u64 + 1;
    let trap_line = line_of(&v.to_string());

    let reference = tmp.path().join("reference");
    run_file(
        plugins_dir(&SHIPPED).path(),
        &clean_path,
        &reference,
        &["--workers", "1", "--out-of-orderness", "60s"],
    );
    let want = window_outputs(&reference);

    let mut all = SHIPPED.to_vec();
    all.push("hostile-trap");
    let data = tmp.path().join("bad");
    run_file(
        plugins_dir(&all).path(),
        &bad_path,
        &data,
        &[
            "--workers",
            "2",
            "--file-split-size",
            &quarter,
            "--out-of-orderness",
            "60s",
            "--batch-size",
            "500",
        ],
    );
    let got = window_outputs(&data);
    assert!(
        got == want,
        "the shipped plugins' outputs changed: {}",
        first_difference(&want, &got)
    );

    let dead = read_json(&data.join("dead-letter.jsonl"));
    for (_, text) in malformed {
        let line = line_of(text);
        let d = dead
            .iter()
            .find(|d| d["reason"] == "malformed" && d["offset"] == line)
            .unwrap_or_else(|| panic!("line {line} ({text:?}) not dead-lettered: {dead:?}"));
        assert_eq!(d["partition"], 3, "line {line}: {d}");
        assert_eq!(d["event"], text);
        assert!(!d["detail"].as_str().unwrap().is_empty(), "no detail: {d}");
    }
    let trapped: Vec<&Value> = dead
        .iter()
        .filter(|d| d["plugin"] == "hostile-trap")
        .collect();
    let t = trapped
        .iter()
        .find(|d| d["offset"] == trap_line)
        .unwrap_or_else(|| {
            panic!("the poisoned line {trap_line} is not dead-lettered: {trapped:?}")
        });
    assert_eq!(t["partition"], 3, "{t}");
    assert_eq!(t["reason"], "trap");
    assert!(t["event"].as_str().unwrap().contains("/trap"));
    assert_eq!(
        dead.iter().filter(|d| d["reason"] == "malformed").count(),
        malformed.len(),
        "malformed lines dead-lettered: {dead:?}"
    );
}
