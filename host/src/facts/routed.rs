//! Facts from several machines at once: a job whose roots are on the host and on servers
//! reached over ssh plans against one view, each question going to the machine its root is on.

use super::{DirEntry, FactError, FactSource, FileStat, Topology};
use crate::plan::Location;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Routes each fact by its root: to the source that holds the root, else to the host's.
pub struct Routed {
    host: Arc<dyn FactSource>,
    /// Root name to the source of the machine it is on, for roots not on the host.
    by_root: BTreeMap<String, Arc<dyn FactSource>>,
}

impl Routed {
    /// A view answering from `host` except for the roots of `by_root`. The clock and the
    /// topology are always the host's: a plan has one time and one site.
    pub fn new(host: Arc<dyn FactSource>, by_root: BTreeMap<String, Arc<dyn FactSource>>) -> Self {
        Routed { host, by_root }
    }

    fn of(&self, root: &str) -> &dyn FactSource {
        self.by_root.get(root).unwrap_or(&self.host).as_ref()
    }
}

impl FactSource for Routed {
    fn exists(&self, p: &Location) -> Result<bool, FactError> {
        self.of(&p.root).exists(p)
    }
    fn list_dir(&self, p: &Location) -> Result<Vec<DirEntry>, FactError> {
        self.of(&p.root).list_dir(p)
    }
    fn stat(&self, p: &Location) -> Result<FileStat, FactError> {
        self.of(&p.root).stat(p)
    }
    fn tree_size(&self, p: &Location) -> Result<u64, FactError> {
        self.of(&p.root).tree_size(p)
    }
    fn backup_size(&self, p: &Location) -> Result<u64, FactError> {
        self.of(&p.root).backup_size(p)
    }
    fn free_space(&self, root: &str) -> Result<u64, FactError> {
        self.of(root).free_space(root)
    }
    /// Roots on two machines never share a volume; on one, that machine says.
    fn same_volume(&self, a: &str, b: &str) -> Result<bool, FactError> {
        let (sa, sb) = (self.of(a), self.of(b));
        if std::ptr::addr_eq(sa, sb) {
            sa.same_volume(a, b)
        } else {
            // Each root must still be granted where it is, as a local question would check.
            sa.free_space(a)?;
            sb.free_space(b)?;
            Ok(false)
        }
    }
    fn read(&self, p: &Location, max_bytes: u32) -> Result<Vec<u8>, FactError> {
        self.of(&p.root).read(p, max_bytes)
    }
    fn now_ms(&self) -> i64 {
        self.host.now_ms()
    }
    fn topology(&self) -> Topology {
        self.host.topology()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RealFacts;

    #[test]
    fn each_root_is_answered_where_it_is_and_two_machines_share_no_volume() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["host", "far"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        std::fs::write(tmp.path().join("far/only-there"), b"x").unwrap();
        let host = RealFacts::open(
            [("set".to_string(), tmp.path().join("host"))],
            Topology {
                site: "acme".into(),
                ..Topology::default()
            },
        )
        .unwrap()
        .with_now_ms(42);
        // The same directory's volume, seen as another machine's.
        let far = RealFacts::open(
            [("data".to_string(), tmp.path().join("far"))],
            Topology::default(),
        )
        .unwrap();
        let r = Routed::new(
            Arc::new(host),
            BTreeMap::from([("data".to_string(), Arc::new(far) as Arc<dyn FactSource>)]),
        );
        assert_eq!(r.exists(&Location::new("data", "only-there")), Ok(true));
        assert_eq!(r.exists(&Location::new("set", "only-there")), Ok(false));
        assert_eq!(r.same_volume("set", "set"), Ok(true));
        assert_eq!(r.same_volume("data", "set"), Ok(false));
        assert_eq!(
            r.same_volume("data", "nothing"),
            Err(FactError::RootNotGranted("nothing".into()))
        );
        assert_eq!((r.now_ms(), r.topology().site.as_str()), (42, "acme"));
    }
}
