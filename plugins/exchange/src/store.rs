//! The information store's files, as KB 271987 describes them: the databases `Priv.edb` and
//! `Pub.edb`, their patch files `Priv.pat` and `Pub.pat`, the current log `Edb.log`, the full
//! logs `Edb<generation>.log` (hexadecimal), and the checkpoint `Edb.chk`. Exchange runs on
//! Windows, so names match without regard to case.

/// What one file of the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `Priv.edb` or `Pub.edb`.
    Database,
    /// `Priv.pat` or `Pub.pat`.
    Patch,
    /// `Edb.log`, the log being written.
    Current,
    /// `Edb<gen>.log`, a full log of that generation.
    Log(u32),
    /// `Edb.chk`.
    Checkpoint,
    /// Anything else (`Res1.log`, `Res2.log`, `tmp.edb`...): not part of a backup.
    Other,
}

/// Classifies a file name.
pub fn kind(name: &str) -> Kind {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "priv.edb" | "pub.edb" => return Kind::Database,
        "priv.pat" | "pub.pat" => return Kind::Patch,
        "edb.log" => return Kind::Current,
        "edb.chk" => return Kind::Checkpoint,
        _ => {}
    }
    lower
        .strip_prefix("edb")
        .and_then(|r| r.strip_suffix(".log"))
        .filter(|hex| (1..=8).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .map_or(Kind::Other, Kind::Log)
}

/// The name Exchange 5.5 gives the full log of generation `gen` (five hex digits).
pub fn log_name(generation: u32) -> String {
    format!("Edb{generation:05X}.log")
}

/// A full log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Its generation.
    pub generation: u32,
    /// Its file name as found.
    pub name: String,
}

/// The store's files as found in the databases and logs directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    /// `Priv.edb`, `Pub.edb` (as named on disk), sorted.
    pub databases: Vec<String>,
    /// `.pat` files.
    pub patches: Vec<String>,
    /// Full logs, by generation.
    pub logs: Vec<Log>,
    /// `Edb.log` as named, when present.
    pub current: Option<String>,
    /// `Edb.chk` as named, when present (in the logs directory).
    pub checkpoint: Option<String>,
}

impl Store {
    /// Sorts the names of the two directories into a store.
    pub fn from_names<'a>(
        databases: impl IntoIterator<Item = &'a str>,
        logs: impl IntoIterator<Item = &'a str>,
    ) -> Store {
        let mut s = Store::default();
        for n in databases {
            match kind(n) {
                Kind::Database => s.databases.push(n.to_string()),
                Kind::Patch => s.patches.push(n.to_string()),
                _ => {}
            }
        }
        for n in logs {
            match kind(n) {
                Kind::Log(generation) => s.logs.push(Log {
                    generation,
                    name: n.to_string(),
                }),
                Kind::Current => s.current = Some(n.to_string()),
                Kind::Checkpoint => s.checkpoint = Some(n.to_string()),
                _ => {}
            }
        }
        s.databases.sort();
        s.patches.sort();
        s.logs.sort_by_key(|l| l.generation);
        s
    }

    /// The full logs before the checkpoint generation (already written to the databases).
    pub fn before(&self, checkpoint: u32) -> Vec<&Log> {
        self.logs
            .iter()
            .filter(|l| l.generation < checkpoint)
            .collect()
    }

    /// The full logs from the checkpoint generation on.
    pub fn from(&self, checkpoint: u32) -> Vec<&Log> {
        self.logs
            .iter()
            .filter(|l| l.generation >= checkpoint)
            .collect()
    }

    /// The generation `Edb.log` gets when a backup renames it: one after the newest full log
    /// (or the checkpoint's, when no full log is left).
    pub fn next_generation(&self, checkpoint: u32) -> u32 {
        self.logs
            .last()
            .map_or(checkpoint, |l| l.generation + 1)
            .max(checkpoint)
    }

    /// Generations missing between the oldest and the newest full log: a gap makes every log
    /// after it useless for replay.
    pub fn gaps(&self) -> Vec<u32> {
        self.logs
            .windows(2)
            .flat_map(|w| w[0].generation + 1..w[1].generation)
            .collect()
    }
}

/// Reads the checkpoint generation from `Edb.chk`: a 32-bit checksum (the XOR of the file's
/// other little-endian words, seeded with 0x89abcdef), the log position of the last full
/// backup, then the checkpoint's log position, whose generation is the word at offset 16.
pub fn checkpoint_generation(bytes: &[u8]) -> Result<u32, String> {
    if bytes.len() < 24 || !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "it is {} bytes long; a checkpoint file is at least 24 bytes, in whole 32-bit words",
            bytes.len()
        ));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let computed = (4..bytes.len())
        .step_by(4)
        .fold(0x89ab_cdefu32, |x, at| x ^ word(at));
    if computed != word(0) {
        return Err(format!(
            "its checksum is {:#010x}, but its contents give {computed:#010x}: it is damaged",
            word(0)
        ));
    }
    Ok(word(16))
}

/// A checkpoint file pointing at `generation` (for tests and fixtures): 24 bytes, or `len`.
pub fn checkpoint_file(generation: u32, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len.max(24)];
    b[16..20].copy_from_slice(&generation.to_le_bytes());
    let sum = (4..b.len()).step_by(4).fold(0x89ab_cdefu32, |x, at| {
        x ^ u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    });
    b[..4].copy_from_slice(&sum.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_without_regard_to_case() {
        assert_eq!(kind("Priv.edb"), Kind::Database);
        assert_eq!(kind("PUB.EDB"), Kind::Database);
        assert_eq!(kind("priv.pat"), Kind::Patch);
        assert_eq!(kind("EDB.LOG"), Kind::Current);
        assert_eq!(kind("Edb.chk"), Kind::Checkpoint);
        assert_eq!(kind("Edb0001A.log"), Kind::Log(0x1a));
        assert_eq!(kind("EDB0001a.LOG"), Kind::Log(0x1a));
        assert_eq!(kind("Res1.log"), Kind::Other);
        assert_eq!(kind("Edbxyz.log"), Kind::Other);
        assert_eq!(kind("Edb123456789.log"), Kind::Other);
        assert_eq!(kind("tmp.edb"), Kind::Other);
        assert_eq!(log_name(0x1a), "Edb0001A.log");
    }

    #[test]
    fn logs_split_at_the_checkpoint() {
        let s = Store::from_names(
            ["Priv.edb", "Pub.edb", "Priv.pat", "notes.txt"],
            [
                "Edb00012.log",
                "Edb00010.log",
                "Edb00011.log",
                "Edb.log",
                "Edb.chk",
                "Res1.log",
            ],
        );
        assert_eq!(s.databases, ["Priv.edb", "Pub.edb"]);
        assert_eq!(s.patches, ["Priv.pat"]);
        assert_eq!(s.current.as_deref(), Some("Edb.log"));
        assert_eq!(s.checkpoint.as_deref(), Some("Edb.chk"));
        let gens = |v: Vec<&Log>| v.iter().map(|l| l.generation).collect::<Vec<_>>();
        assert_eq!(gens(s.before(0x11)), [0x10]);
        assert_eq!(gens(s.from(0x11)), [0x11, 0x12]);
        assert_eq!(s.next_generation(0x11), 0x13);
        assert!(s.gaps().is_empty());
        let gappy = Store::from_names([], ["Edb00001.log", "Edb00004.log"]);
        assert_eq!(gappy.gaps(), [2, 3]);
        // No full log left (a fresh store, or circular logging): Edb.log is the checkpoint's.
        assert_eq!(Store::default().next_generation(7), 7);
    }

    #[test]
    fn the_checkpoint_is_read_and_checked() {
        for len in [24, 4096] {
            let b = checkpoint_file(0x2a, len);
            assert_eq!(checkpoint_generation(&b), Ok(0x2a));
            let mut bad = b.clone();
            bad[100.min(len - 1)] ^= 1;
            assert!(checkpoint_generation(&bad).unwrap_err().contains("damaged"));
        }
        assert!(
            checkpoint_generation(b"short")
                .unwrap_err()
                .contains("5 bytes")
        );
    }
}
