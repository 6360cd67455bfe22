//! Exchange's transaction logs as files: `Edb<generation>.log` with the generation in hex, and
//! the check of the logs a backup program put in a set against the store's (`verify
//! ese-log-set`), for the real run and the dry run alike.

/// The generation of a full log named `Edb<hex>.log` (1 to 8 hex digits, any case); `None` for
/// any other name (`Edb.log`, the log being written, included).
pub fn generation(name: &[u8]) -> Option<u32> {
    let lower = name.to_ascii_lowercase();
    let hex = lower.strip_prefix(b"edb")?.strip_suffix(b".log")?;
    if hex.is_empty() || hex.len() > 8 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Checks the generations a set holds (`set`) against those the store holds now (`store`):
/// the set's are not empty and follow on with none missing, and every one the store still
/// has up to the set's newest is in the set. What the backup program copied started at the
/// checkpoint it found (which may have moved since the plan was made) and ended at the log it
/// renamed; the store keeps every log from that checkpoint on, so any it has in that range
/// and the set lacks was missed. `Ok` with a summary, `Err` naming what is missing.
pub fn check_set(set: &[u32], store: &[u32]) -> Result<String, String> {
    let mut set = set.to_vec();
    set.sort_unstable();
    set.dedup();
    let (Some(&low), Some(&high)) = (set.first(), set.last()) else {
        return Err("the set holds no full log (Edb<generation>.log)".into());
    };
    let name = |g: u32| format!("Edb{g:05X}.log");
    let gaps: Vec<String> = (low..=high)
        .filter(|g| set.binary_search(g).is_err())
        .map(name)
        .collect();
    if !gaps.is_empty() {
        return Err(format!(
            "the set's logs have gaps: {} missing between {} and {}; logs replay only in sequence",
            gaps.join(", "),
            name(low),
            name(high)
        ));
    }
    let missed: Vec<String> = store
        .iter()
        .filter(|&&g| g <= high && set.binary_search(&g).is_err())
        .map(|&g| name(g))
        .collect();
    if !missed.is_empty() {
        return Err(format!(
            "the store still has {}, which the set does not: the backup program did not back \
             up every log from its checkpoint on, or the store kept logs a full or incremental \
             backup deletes; read the program's log and the application event log",
            missed.join(", ")
        ));
    }
    Ok(format!(
        "{} to {} ({} log(s)) follow on, and hold every log the store has up to the newest",
        name(low),
        name(high),
        set.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_logs_are_named_by_their_hex_generation() {
        assert_eq!(generation(b"Edb00014.log"), Some(0x14));
        assert_eq!(generation(b"EDB0001A.LOG"), Some(0x1a));
        assert_eq!(generation(b"edb1.log"), Some(1));
        assert_eq!(generation(b"Edb.log"), None, "the log being written");
        assert_eq!(generation(b"Res1.log"), None);
        assert_eq!(generation(b"Edb123456789.log"), None, "more than 8 digits");
        assert_eq!(generation(b"Edb0001G.log"), None);
    }

    #[test]
    fn a_set_is_judged_against_the_store_as_it_is_after_the_backup() {
        // A full backup started after the checkpoint moved from 0x14 to 0x16: the set holds
        // 0x16 to 0x18, and the store (truncated before 0x16) holds 0x16 on, 0x19 written since.
        assert!(check_set(&[0x16, 0x17, 0x18], &[0x16, 0x17, 0x18, 0x19]).is_ok());
        // A log the program skipped, that the store still has.
        let e = check_set(&[0x16, 0x18], &[0x16, 0x17, 0x18]).unwrap_err();
        assert!(e.contains("gaps: Edb00017.log"), "{e}");
        let e = check_set(&[0x17, 0x18], &[0x16, 0x17, 0x18]).unwrap_err();
        assert!(e.contains("the store still has Edb00016.log"), "{e}");
        // A copy backup keeps every log, and so does the store.
        assert!(check_set(&[0x10, 0x11, 0x12], &[0x10, 0x11, 0x12]).is_ok());
        assert!(check_set(&[], &[0x10]).unwrap_err().contains("no full log"));
    }
}
