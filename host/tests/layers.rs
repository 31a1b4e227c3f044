//! The host's modules are layered: `src/lib.rs` declares them from the
//! bottom layer up, and a module may use only those declared before it. So
//! the modules' imports have no cycle and nothing imports upward; this test
//! fails on the first `crate::…` path that breaks the order, and on a file
//! under `src/` that is too long to read (~700 lines without its tests)
//! unless it says in its first lines why it must be.

use std::path::{Path, PathBuf};

/// The top-level modules in the order `lib.rs` declares them.
fn layers(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None`: the crate
/// root, `main.rs`, a binary).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// The lines of a file without its `#[cfg(test)]` items (tests may use
/// anything, and do not count towards a file's length).
fn without_tests(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            // Skip the item that follows: up to its closing brace at the
            // indentation it opens with.
            let indent = line.len() - t.len();
            for (_, l) in lines.by_ref() {
                let lt = l.trim_start();
                if l.len() - lt.len() == indent && lt.starts_with('}') {
                    break;
                }
            }
            continue;
        }
        out.push((n + 1, line));
    }
    out
}

/// The code of a file: no tests, no comments.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    without_tests(text)
        .into_iter()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .collect()
}

/// The top-level modules a line names as `crate::<module>`.
fn crate_paths(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push(&after[..end]);
        rest = &after[end..];
    }
    out
}

#[test]
fn no_module_imports_one_declared_after_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = layers(&src);
    assert!(order.len() > 10, "lib.rs declares {order:?}");
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let Some(module) = module_of(&src, f) else {
            continue;
        };
        let Some(mine) = rank(&module) else {
            bad.push(format!(
                "{}: module `{module}` is not declared in lib.rs",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).expect("read a source file");
        for (n, line) in code_lines(&text) {
            for used in crate_paths(line) {
                match rank(used) {
                    Some(r) if r > mine => bad.push(format!(
                        "{}:{n}: `{module}` uses `crate::{used}`, declared after it in lib.rs: {}",
                        f.display(),
                        line.trim()
                    )),
                    Some(_) => {}
                    None => bad.push(format!(
                        "{}:{n}: `crate::{used}` is no top-level module",
                        f.display()
                    )),
                }
            }
        }
    }
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

/// Lines a source file may have, tests excluded, before it must say why
/// it is one file.
const LONG: usize = 700;

#[test]
fn every_file_is_short_or_says_why_not() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read a source file");
        let lines = without_tests(&text).len();
        let says_why = text
            .lines()
            .take(20)
            .any(|l| l.contains("one file because"));
        if lines > LONG && !says_why {
            long.push(format!("{}: {lines} lines", f.display()));
        }
    }
    assert!(
        long.is_empty(),
        "files over {LONG} lines (tests excluded) that do not say \"one file because\" in their first lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_check() {
    assert_eq!(
        crate_paths("use crate::state::{Key}; let x = crate::clock::now_ms();"),
        vec!["state", "clock"]
    );
    let code =
        "fn a() {}\n// crate::x\n#[cfg(test)]\nmod tests {\n    use crate::y;\n}\nfn b() {}\n";
    let lines: Vec<&str> = code_lines(code).into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines, vec!["fn a() {}", "fn b() {}"]);
}
