//! Byte strings that keep every byte: file names, link targets and extended attributes.
//!
//! A Unix file name is any bytes but `/` and NUL. Japanese mail servers are full of Shift_JIS and
//! EUC-JP names that are not UTF-8, so nothing here is converted lossily. In JSON a
//! value that is UTF-8 is written as a plain string, so manifests stay readable; any other value
//! is written as `{"hex": "..."}`, which no plain string can be mistaken for.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Bytes that are shown as text where they are UTF-8 and escaped (`\xNN`) where they are not.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as an OS string, for system calls.
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
}

impl From<&[u8]> for Bytes {
    fn from(b: &[u8]) -> Bytes {
        Bytes(b.to_vec())
    }
}

impl From<&str> for Bytes {
    fn from(s: &str) -> Bytes {
        Bytes(s.as_bytes().to_vec())
    }
}

impl From<&OsStr> for Bytes {
    fn from(s: &OsStr) -> Bytes {
        Bytes(s.as_bytes().to_vec())
    }
}

impl From<OsString> for Bytes {
    fn from(s: OsString) -> Bytes {
        Bytes(s.into_vec())
    }
}

/// Writes `b` as text: valid UTF-8 as it is, every other byte as `\xNN`, and a backslash as
/// `\\` so that the escapes cannot be confused with a name that contains them.
pub fn escape(b: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        for byte in chunk.invalid() {
            write!(f, "\\x{byte:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape(&self.0, f)
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("hex", &hex(&self.0))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Hex { hex: String },
        }
        match Form::deserialize(d)? {
            Form::Text(t) => Ok(Bytes(t.into_bytes())),
            Form::Hex { hex } => unhex(&hex)
                .map(Bytes)
                .ok_or_else(|| serde::de::Error::custom(format!("`{hex}` is not hex"))),
        }
    }
}

fn hex(b: &[u8]) -> String {
    use fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A `/`-separated path below a root, as bytes. The empty path is the root itself. Components
/// are never empty, `.` or `..`: a [`RelPath`] is built only by joining names read from a
/// directory, or by [`RelPath::parse`], which checks.
///
/// Read from JSON (a manifest, an agent's answer), it is checked as [`RelPath::parse`] checks:
/// a peer that sends `../etc` gets an error, never a path outside the root.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RelPath(Bytes);

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RelPath, D::Error> {
        let b = Bytes::deserialize(d)?;
        RelPath::parse(&b.0).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{b}` is not a path below a root (an empty, `.` or `..` component, a leading `/` or a NUL)"
            ))
        })
    }
}

impl RelPath {
    /// The root itself.
    pub fn root() -> RelPath {
        RelPath::default()
    }

    /// A path from a manifest or a plan, refused when it could leave its root.
    pub fn parse(b: &[u8]) -> Option<RelPath> {
        let ok = b.is_empty()
            || (!b.starts_with(b"/")
                && !b.contains(&0)
                && b.split(|&c| c == b'/')
                    .all(|c| !c.is_empty() && c != b"." && c != b".."));
        ok.then(|| RelPath(Bytes(b.to_vec())))
    }

    /// This path with one more component.
    pub fn join(&self, name: &[u8]) -> RelPath {
        let mut v = Vec::with_capacity(self.0.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath(Bytes(v))
    }

    /// This path below `base`.
    pub fn under(&self, base: &RelPath) -> RelPath {
        if base.is_empty() {
            self.clone()
        } else if self.is_empty() {
            base.clone()
        } else {
            base.join(self.as_bytes())
        }
    }

    /// The path with `prefix`'s components taken off the front, if it starts with them.
    pub fn strip_prefix(&self, prefix: &RelPath) -> Option<RelPath> {
        if prefix.is_empty() {
            return Some(self.clone());
        }
        let b = self.as_bytes();
        let p = prefix.as_bytes();
        if b == p {
            return Some(RelPath::root());
        }
        b.strip_prefix(p)
            .and_then(|rest| rest.strip_prefix(b"/"))
            .map(|rest| RelPath(Bytes(rest.to_vec())))
    }

    /// Whether this is the root.
    pub fn is_empty(&self) -> bool {
        self.0.0.is_empty()
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0.0
    }

    /// The path as an OS path, for path-based calls inside a root (`.` for the root).
    pub fn as_path(&self) -> &std::path::Path {
        if self.is_empty() {
            std::path::Path::new(".")
        } else {
            std::path::Path::new(OsStr::from_bytes(&self.0.0))
        }
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        let b = self.as_bytes();
        b.rsplit(|&c| c == b'/').next().unwrap_or(b)
    }

    /// Everything but the last component.
    pub fn parent(&self) -> RelPath {
        let b = self.as_bytes();
        match b.iter().rposition(|&c| c == b'/') {
            Some(i) => RelPath(Bytes(b[..i].to_vec())),
            None => RelPath::root(),
        }
    }

    /// The components.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.as_bytes()
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty())
    }
}

impl From<&str> for RelPath {
    /// A path written in code or a plan (already validated as relative and plain).
    fn from(s: &str) -> RelPath {
        RelPath(Bytes::from(s.trim_matches('/')))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape(self.as_bytes(), f)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_survive_json_and_utf8_stays_readable() {
        let sjis = Bytes(b"\x83e\x83X\x83g.eml".to_vec()); // "テスト" in Shift_JIS
        let json = serde_json::to_string(&sjis).unwrap();
        assert_eq!(json, r#"{"hex":"8365835883672e656d6c"}"#);
        assert_eq!(serde_json::from_str::<Bytes>(&json).unwrap(), sjis);
        let text = Bytes::from("メール\\a.txt");
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json, r#""メール\\a.txt""#);
        assert_eq!(serde_json::from_str::<Bytes>(&json).unwrap(), text);
        assert!(serde_json::from_str::<Bytes>(r#"{"hex":"zz"}"#).is_err());
    }

    #[test]
    fn display_escapes_what_is_not_text_and_backslashes() {
        assert_eq!(
            Bytes(b"a\\b\xff\x83e\n".to_vec()).to_string(),
            "a\\\\b\\xff\\x83e\\u{a}"
        );
        assert_eq!(RelPath::from("メール/x").to_string(), "メール/x");
    }

    #[test]
    fn paths_join_split_and_refuse_to_leave_their_root() {
        let p = RelPath::root().join(b"mw").join(b"data\xff");
        assert_eq!(p.as_bytes(), b"mw/data\xff");
        assert_eq!(p.file_name(), b"data\xff");
        assert_eq!(p.parent(), RelPath::from("mw"));
        assert_eq!(
            p.strip_prefix(&RelPath::from("mw")).unwrap().as_bytes(),
            b"data\xff"
        );
        assert!(p.strip_prefix(&RelPath::from("m")).is_none());
        assert_eq!(
            RelPath::from("x").under(&RelPath::from("set")),
            RelPath::from("set/x")
        );
        for bad in [&b"/etc"[..], b"a/../b", b"a//b", b"./a", b"a\0b"] {
            assert!(RelPath::parse(bad).is_none(), "{bad:?}");
        }
        assert!(RelPath::parse(b"a/b\\c/\xfe").is_some());
    }
}
