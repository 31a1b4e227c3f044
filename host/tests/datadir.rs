//! The data directory: a folder the host cannot write is refused at start,
//! naming it; a disk that fills during a run (a small tmpfs) stops the host
//! with an error that says so, without corrupting anything: started again
//! on a larger disk (the same tmpfs, remounted larger), it resumes from its
//! last commit and its output file ends up equal to an uninterrupted run's.
//! The tmpfs steps need `mount` (root): without it they are skipped with a
//! message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A tmpfs mounted on a fresh folder, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with a message) where mounting is not permitted.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({}): run as root to test a full or read-only disk",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn start_error(plugins: &Path, data: &Path) -> String {
    let out = HostCmd::new(plugins)
        .no_server()
        .no_watch()
        .jsonl_sink("/dev/null")
        .data_dir(data)
        .output();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

#[test]
fn a_data_dir_that_cannot_be_written_is_refused_by_name() {
    let plugins = plugins_dir(&["page-views"]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    let err = start_error(plugins.path(), &file.join("data"));
    assert!(
        err.contains("not-a-folder/data") && err.contains("is not writable"),
        "{err}"
    );

    let Some(ro) = Tmpfs::mount("1m") else { return };
    ro.remount("ro");
    let err = start_error(plugins.path(), &ro.path());
    assert!(
        err.contains("is not writable") && err.contains("Read-only file system"),
        "{err}"
    );
}

/// One file job over 150 000 events with the shipped plugins; the data
/// dir and the output file where the caller puts them.
fn full_disk_case(disk_for: &str, room: impl Fn(usize) -> String) {
    let plugins = plugins_dir(&SHIPPED);
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("events.jsonl");
    write_events(&input, 150_000, 41, 1_000);
    let job = |data: &Path, out: &Path| {
        HostCmd::new(plugins.path())
            .file_source(&input)
            .no_server()
            .data_dir(data)
            .jsonl_sink(out)
            .checkpoint_interval("1s")
            .args(["--no-compile-cache"])
    };
    let reference = tempfile::tempdir().unwrap();
    let want_path = reference.path().join("out.jsonl");
    job(&reference.path().join("data"), &want_path).run();
    let want = std::fs::read(&want_path).unwrap();

    let Some(disk) = Tmpfs::mount(&room(want.len())) else {
        return;
    };
    let (data, out_path) = match disk_for {
        "outputs" => (disk.path().join("data"), disk.path().join("out.jsonl")),
        _ => (disk.path(), work.path().join("out.jsonl")),
    };
    let out = job(&data, &out_path).output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    eprintln!(
        "the full disk stopped the host: {}",
        err.lines().last().unwrap_or("")
    );
    assert!(err.contains("the disk is full"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");

    disk.remount("size=256m");
    job(&data, &out_path).run();
    // The same lines, each once (windows that fire at the same watermark
    // step may come in another order after a restore, as in kill.rs).
    let lines = |p: &Path| {
        let mut l = read_lines(p);
        l.sort();
        l
    };
    let (got, want) = (lines(&out_path), lines(&want_path));
    assert_eq!(got.len(), want.len(), "outputs lost or written twice");
    assert!(
        got == want,
        "the outputs after the restart differ from an uninterrupted run's"
    );
}

/// The output file fills the disk (room for half of it).
#[test]
fn a_full_disk_stops_the_host_and_a_larger_one_resumes_exactly() {
    full_disk_case("outputs", |out| format!("{}k", out / 2048));
}

/// The state store fills the disk (the outputs elsewhere).
#[test]
fn a_state_store_on_a_full_disk_stops_the_host_and_resumes_exactly() {
    full_disk_case("state", |_| "512k".to_string());
}
