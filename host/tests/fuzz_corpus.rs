//! Every input of the fuzz corpus (`fuzz/corpus/TARGET/`) and every input
//! that once broke a harness (`fuzz/regressions/TARGET/`) through the
//! harnesses of `rtap_host::fuzz`, without libFuzzer: the regressions stay
//! fixed in `cargo test`. `scripts/fuzz.sh` fuzzes them further.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let p = e.expect("corpus entry").path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let bytes = std::fs::read(&p).expect("read a corpus input");
            out.push((p, bytes));
        }
    }
    assert!(!out.is_empty(), "no corpus for `{target}`");
    out
}

fn replay(target: &str, harness: impl Fn(&[u8])) {
    for (path, bytes) in inputs(target) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness(&bytes)));
        assert!(
            r.is_ok(),
            "{target}: {} breaks the harness again",
            path.display()
        );
    }
}

#[test]
fn decode_corpus_and_regressions() {
    replay("decode", rtap_host::fuzz::decode);
}

#[test]
fn state_codec_corpus_and_regressions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rtap_host::checkpoint::Store::open(dir.path(), &Default::default()).expect("store");
    replay("state_codec", |b| {
        rtap_host::fuzz::state_codec_in(&store, b)
    });
}

#[test]
fn plugin_returns_corpus_and_regressions() {
    replay("plugin_returns", rtap_host::fuzz::plugin_returns);
}

#[test]
fn api_corpus_and_regressions() {
    replay("api", rtap_host::fuzz::api);
}

#[test]
fn exchange_wire_corpus_and_regressions() {
    replay("exchange_wire", rtap_host::fuzz::exchange_wire);
}

/// The decoder's regressions (the inputs libFuzzer found) are still there
/// for `decode_corpus_and_regressions` to replay.
#[test]
fn decode_regressions_are_kept() {
    let fixed = inputs("decode")
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("regressions"))
        .count();
    assert!(
        fixed >= 4,
        "the decoder's regressions are in fuzz/regressions/decode"
    );
}
