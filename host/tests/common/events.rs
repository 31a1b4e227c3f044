//! Simulated events: the real `rtap-gen`.

use std::path::Path;
use std::process::Command;

pub fn gen_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rtap-gen")
}

/// An `rtap-gen` command for `n` events from `seed` at `rate` events/s;
/// add the output options.
pub fn gen_command(n: u64, seed: u64, rate: u32) -> Command {
    let mut c = Command::new(gen_bin());
    c.args([
        "--events",
        &n.to_string(),
        "--seed",
        &seed.to_string(),
        "--rate",
        &rate.to_string(),
    ]);
    c
}

/// `n` simulated events (`rtap-gen`), one JSON line each.
pub fn gen_events(n: u64, seed: u64, rate: u32) -> Vec<String> {
    let out = gen_command(n, seed, rate).output().expect("run rtap-gen");
    assert!(out.status.success(), "rtap-gen failed: {}", out.status);
    String::from_utf8(out.stdout)
        .expect("rtap-gen writes UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The same events written to `path` (streamed, not held in memory).
pub fn write_events(path: &Path, n: u64, seed: u64, rate: u32) {
    let st = gen_command(n, seed, rate)
        .stdout(std::fs::File::create(path).expect("create the events file"))
        .status()
        .expect("run rtap-gen");
    assert!(st.success(), "rtap-gen failed: {st}");
}

/// The latest `timestamp` of simulated events.
pub fn max_timestamp(lines: &[String]) -> i64 {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamp"]
                .as_i64()
                .unwrap()
        })
        .max()
        .unwrap()
}
