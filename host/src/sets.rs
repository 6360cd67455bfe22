//! Backup sets: where a job's sets live and how they are named.
//!
//! A set is a directory `<backup_root>/<site>/<job>/<id>/`, where the id is the UTC time the run
//! started (`20261121T021000Z`), so ids sort in time order. A set still being written carries a
//! leading `.` and is never listed as a set.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The directory holding a job's sets.
pub fn job_dir(backup_root: &Path, site: &str, job: &str) -> PathBuf {
    backup_root.join(site).join(job)
}

/// The id of a set started at `t`.
pub fn id_at(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Whether `name` has the form of a set id.
pub fn is_id(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// The complete sets in a job's directory, oldest first. A missing directory has none.
pub fn list(job_dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(job_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_id(&name) && entry.file_type()?.is_dir() {
            ids.push(name);
        }
    }
    ids.sort();
    Ok(ids)
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_are_utc_timestamps() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_227_000); // 2026-11-21T02:10:00Z
        assert_eq!(id_at(t), "20261121T021000Z");
        assert_eq!(id_at(UNIX_EPOCH), "19700101T000000Z");
        assert!(is_id("20261121T021000Z"));
        assert!(!is_id(".20261121T021000Z") && !is_id("latest"));
    }

    #[test]
    fn only_complete_sets_are_listed() {
        let tmp = tempfile::tempdir().unwrap();
        for d in [
            "20261121T021000Z",
            "20261120T021000Z",
            ".20261122T021000Z.partial",
            "notes",
        ] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        assert_eq!(
            list(tmp.path()).unwrap(),
            ["20261120T021000Z", "20261121T021000Z"]
        );
        assert!(list(&tmp.path().join("none")).unwrap().is_empty());
    }
}
