//! Bad set-ups fail at start with one clear message naming the file and the
//! problem, and a non-zero exit; bad input lines are dead-lettered with their
//! line number, never a crash.

mod common;

use common::*;

fn start(plugins: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("in.jsonl");
    std::fs::write(&input, "").unwrap();
    let out = HostCmd::new(plugins)
        .file_source(&input)
        .no_server()
        .jsonl_sink("-")
        .data_dir(data.path())
        .args(extra)
        .output();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_plugins_folder() {
    let (code, err) = start(std::path::Path::new("/nonexistent/plugins"), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/plugins") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn empty_plugins_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = start(dir.path(), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("contains no .wasm plugins"), "{err}");
}

#[test]
fn not_wasm_core_module_and_foreign_component() {
    let dir = plugins_dir(&["page-views"]);
    let bad = dir.path().join("zz-notes.wasm");
    std::fs::write(&bad, "this is not wasm").unwrap();
    let (code, err) = start(dir.path(), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("zz-notes.wasm") && err.contains("not a WebAssembly file"),
        "{err}"
    );

    // A core module (what `--target wasm32-unknown-unknown` produces).
    std::fs::write(&bad, b"\0asm\x01\0\0\0").unwrap();
    let (code, err) = start(dir.path(), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("zz-notes.wasm") && err.contains("core Wasm module, not a component"),
        "{err}"
    );

    // A component that exports nothing of the contract.
    std::fs::write(&bad, b"\0asm\x0d\0\x01\0").unwrap();
    let (code, err) = start(dir.path(), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("zz-notes.wasm")
            && err.contains("does not implement the rtap:plugin contract"),
        "{err}"
    );
}

#[test]
fn bad_config_is_refused_by_name() {
    let dir = plugins_dir(&["bot-burst"]);
    let (code, err) = start(
        dir.path(),
        &["--plugin-config", r#"bot-burst={"min_page_views":"many"}"#],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("`bot-burst`") && err.contains("config refused"),
        "{err}"
    );
    let (code, err) = start(dir.path(), &["--plugin-config", r#"no-such-plugin={}"#]);
    assert_eq!(code, 2);
    assert!(err.contains("no-such-plugin"), "{err}");
    let (code, err) = start(dir.path(), &["--plugin-config", "bot-burst={oops"]);
    assert_eq!(code, 2);
    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn malformed_lines_are_dead_lettered_with_line_numbers() {
    let plugins = plugins_dir(&["page-views"]);
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"event_type\":\"page_view\",\"page\":\"/a\",\"timestamp\":1000}\nnot json\n{\"page\":\"/a\"}\n\n{\"page\":\"/b\",\"timestamp\":\"yesterday\"}\n{\"event_type\":\"page_view\",\"page\":\"/a\",\"timestamp\":2000}\n",
    )
    .unwrap();
    run_file(plugins.path(), &input, data.path(), &[]);
    let dead = read_json(&data.path().join("dead-letter.jsonl"));
    let lines: Vec<u64> = dead.iter().map(|d| d["offset"].as_u64().unwrap()).collect();
    assert_eq!(lines, vec![2, 3, 5]);
    assert!(
        dead.iter()
            .all(|d| d["reason"] == "malformed" && d["plugin"].is_null())
    );
    assert!(dead[1]["detail"].as_str().unwrap().contains("timestamp"));
    assert_eq!(dead[0]["event"], "not json");
    let out = read_json(&data.path().join("out.jsonl"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["value"], 2.0, "the two good events are counted");
}

/// Compiled plugins are kept in `DATA_DIR/compiled`: a restart loads them
/// (the file is not rewritten), a damaged entry is compiled again and
/// replaced with a warning, and `--no-compile-cache` keeps nothing.
#[test]
fn compiled_plugins_are_cached_and_a_bad_entry_is_replaced() {
    use std::os::unix::fs::MetadataExt;
    let plugins = plugins_dir(&["page-views"]);
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"event_type\":\"page_view\",\"page\":\"/a\",\"timestamp\":1000}\n{\"event_type\":\"page_view\",\"page\":\"/a\",\"timestamp\":2000}\n",
    )
    .unwrap();
    let entries = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(data.path().join("compiled"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    // Each run of a file to its end starts over and appends its outputs.
    let run = |extra: &[&str]| {
        let out = run_file(plugins.path(), &input, data.path(), extra);
        let results = read_json(&data.path().join("out.jsonl"));
        assert_eq!(results.last().unwrap()["value"], 2.0, "{results:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    run(&[]);
    let cached = entries();
    assert_eq!(cached.len(), 1, "one entry per plugin: {cached:?}");
    let name = cached[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.ends_with(".cwasm"), "{name}");
    let meta = std::fs::metadata(&cached[0]).unwrap();

    run(&[]);
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().ino(),
        meta.ino(),
        "a restart loads the entry instead of compiling and writing it again"
    );

    std::fs::write(&cached[0], b"not native code").unwrap();
    let err = run(&[]);
    assert!(
        err.contains("not usable, compiling again"),
        "a damaged entry is reported: {err}"
    );
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().len(),
        meta.len(),
        "and replaced"
    );
    assert_eq!(entries().len(), 1);

    let fresh = tempfile::tempdir().unwrap();
    run_file(
        plugins.path(),
        &input,
        fresh.path(),
        &["--no-compile-cache"],
    );
    assert!(!fresh.path().join("compiled").exists());
}
