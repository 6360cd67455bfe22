//! Typed paths: a granted root and a relative path inside it.

pub use crate::bindings::hokan::policy::types::Path;
use std::fmt;

/// A root the site grants, by name ("data", "backup", "set"...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root(&'static str);

impl Root {
    /// In a command behaviour's effect (`SimEffect::create_file(Root::CWD.join("out"))`):
    /// the root the command ran in, for a program that writes relative to its working
    /// directory, wherever the plan runs it.
    pub const CWD: Root = Root("{cwd}");

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

    /// The root as the site grants it on one of several servers: a policy's `dump = {
    /// servers = { tw-app1 = "/var/tmp/tw", ... } }` grants `dump@tw-app1` on `tw-app1`, for
    /// a step that runs the same program on every server with a directory of that server's
    /// own. Ask facts about it to learn whether the site granted it there.
    pub fn on(&self, server: &str) -> Path {
        Path {
            root: format!("{}@{server}", self.0),
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
    fn a_root_on_a_server_is_named_as_the_policy_grants_it() {
        let dump = Root::new("dump").on("tw-app1");
        assert_eq!(dump.root, "dump@tw-app1");
        assert_eq!(dump.join("tw-app1").to_string(), "dump@tw-app1:/tw-app1");
    }

    #[test]
    fn file_name_is_the_last_component() {
        let data = Root::new("data");
        assert_eq!(data.join("mw/back10").file_name(), "back10");
        assert_eq!(data.path().file_name(), "data");
    }
}
