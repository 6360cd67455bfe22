//! Small files written whole or not at all: a hidden temporary beside the file, fsynced,
//! renamed over it, and the directory fsynced, so that a power cut leaves the old content or
//! the new one, never a torn file. What restore-test records and the agent's ledger entries
//! are written with.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` whole (see the module's documentation).
pub fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
    let tmp = dir.join(name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_is_left() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("exit.json");
        super::write_whole(&p, b"old").unwrap();
        super::write_whole(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["exit.json"]);
        // A directory that is not there: an error, and nothing made.
        assert!(super::write_whole(&d.path().join("no/such"), b"x").is_err());
    }
}
