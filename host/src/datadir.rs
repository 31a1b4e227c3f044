//! The data directory (`--data-dir`): state, checkpoints, dead letters,
//! late events and compiled plugins live there. It is checked before
//! anything starts: a folder the host cannot write is refused at once with
//! a message naming it, instead of failing later half-way through a
//! start. A disk that fills during a run surfaces as the write error of
//! the sink or the state store that hit it; the host then stops without
//! committing (see `crate::checkpoint`), and [`explain`] adds what to do.

use std::io::Write;
use std::path::Path;

/// The data directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "the data directory {path} is not writable ({why}): state, checkpoints, dead letters and late events live there; \
     give the host's user write access or choose another with --data-dir / RTAP_DATA_DIR"
)]
pub struct DataDirError {
    pub path: String,
    pub why: String,
}

/// Create the folder if needed and prove it takes a file: write, fsync
/// and remove a probe.
pub fn ensure_writable(dir: &Path) -> Result<(), DataDirError> {
    let fail = |why: std::io::Error| DataDirError {
        path: dir.display().to_string(),
        why: why.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".rtap-write-probe");
    let res = std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(b"rtap").and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    res.map_err(fail)
}

/// A run's error, with advice when it is a full disk (ENOSPC anywhere in
/// the message: RocksDB reports it as text).
pub fn explain(error: String) -> String {
    let full = error.contains("No space left on device")
        || error.contains("os error 28")
        || error.contains("StorageFull");
    if full {
        format!(
            "{error} — the disk is full: the host stopped without committing what it could not write, \
             so nothing committed is lost or corrupted; free space (or move the data directory to a \
             larger disk, keeping its paths) and start it again: it resumes from the last commit"
        )
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_folder_is_created_and_left_clean() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_writable(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_folder_under_a_file_is_refused_with_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = ensure_writable(&file.join("data")).unwrap_err().to_string();
        assert!(e.contains("f/data") && e.contains("not writable"), "{e}");
    }

    #[test]
    fn a_full_disk_is_explained() {
        let e = explain("cannot write d/out.jsonl: No space left on device (os error 28)".into());
        assert!(e.contains("the disk is full"), "{e}");
        assert_eq!(explain("other".into()), "other");
    }
}
