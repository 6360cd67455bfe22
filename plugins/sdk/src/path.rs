//! Typed paths: a granted root and a relative path inside it.

pub use crate::bindings::hokan::policy::types::Path;
use std::fmt;

/// A root the site grants, by name ("data", "backup", "set"...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root(&'static str);

impl Root {
    /// Names a root. The name must be one the plugin lists in its description.
    pub const fn new(name: &'static str) -> Self {
        Root(name)
    }

    /// The root's name.
    pub fn name(&self) -> &'static str {
        self.0
    }

    /// The root itself as a path.
    pub fn path(&self) -> Path {
        Path {
            root: self.0.into(),
            path: String::new(),
        }
    }

    /// A path below the root: `Root::new("data").join("mw/data")`.
    pub fn join(&self, rel: &str) -> Path {
        self.path().join(rel)
    }
}

impl Path {
    /// A path below this one. `rel` uses `/` and is appended as given; the host rejects
    /// absolute paths and `..` when it validates the plan.
    pub fn join(&self, rel: &str) -> Path {
        let rel = rel.trim_matches('/');
        let path = match (self.path.is_empty(), rel.is_empty()) {
            (_, true) => self.path.clone(),
            (true, false) => rel.to_string(),
            (false, false) => format!("{}/{}", self.path, rel),
        };
        Path {
            root: self.root.clone(),
            path,
        }
    }

    /// The last component of the path (the root's name for the root itself).
    pub fn file_name(&self) -> &str {
        self.path
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.root)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:/{}", self.root, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_builds_plain_relative_paths() {
        let data = Root::new("data");
        assert_eq!(data.path().path, "");
        assert_eq!(data.join("mw/data").path, "mw/data");
        assert_eq!(data.join("/mw/").join("data/").path, "mw/data");
        assert_eq!(data.join("mw").join("").path, "mw");
        assert_eq!(data.join("mw/data").to_string(), "data:/mw/data");
    }

    #[test]
    fn file_name_is_the_last_component() {
        let data = Root::new("data");
        assert_eq!(data.join("mw/back10").file_name(), "back10");
        assert_eq!(data.path().file_name(), "data");
    }
}
