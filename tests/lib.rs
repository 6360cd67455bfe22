//! Fixtures for hokan's end-to-end tests and its demo: product directory trees built on the fly,
//! and the location of the built plugin components.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub mod sshd;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

/// Where `cargo xtask plugins` puts the product plugins: `plugins/` in the target directory this
/// test or benchmark was built into (so `CARGO_TARGET_DIR` is honoured), or
/// `HOKAN_TEST_PLUGIN_DIR` when set.
pub fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOKAN_TEST_PLUGIN_DIR") {
        return PathBuf::from(dir);
    }
    // The executable is <target>/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.ancestors()
        .nth(3)
        .map(|target| target.join("plugins"))
        .unwrap_or_else(|| repo_root().join("target/plugins"))
}

/// The `hokan` binary built beside this test or benchmark: `<target>/<profile>/hokan` (cargo
/// builds it for `cargo xtask test` and, in release, for `cargo xtask bench`), or a panic that
/// says how to build it.
pub fn hokan_bin() -> PathBuf {
    // The executable is <target>/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("the test executable's path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("<target>/<profile>")
        .join("hokan");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p hokan`, with --release for benchmarks; \
         `cargo xtask test` and `cargo xtask bench` do)",
        bin.display()
    );
    bin
}

/// Prometheus' `promtool`: the one `cargo xtask test` unpacks from Debian's `prometheus`
/// package into `<target>/tools/deb/`, or one on the PATH; a panic that says how to get it.
pub fn promtool() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    if let Some(p) = exe
        .ancestors()
        .nth(3)
        .map(|target| target.join("tools/deb/prometheus/usr/bin/promtool"))
        .filter(|p| p.exists())
    {
        return p;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    on_path.expect(
        "promtool is missing: `cargo xtask test` unpacks it from Debian's prometheus package \
         into <target>/tools/deb/ (or install the package)",
    )
}

/// Debian's headless `chromium`, which `cargo xtask test` installs; a panic that says so.
pub fn chromium() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("chromium"))
                .find(|p| p.is_file())
        })
        .expect("chromium is missing: `cargo xtask test` installs Debian's chromium package")
}

/// The median of some timings.
pub fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// A built component by file name (`mailwise.wasm`, `fixtures/adversary.wasm`), or a panic that
/// says how to build it.
pub fn component(name: &str) -> PathBuf {
    let p = plugin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the plugins first with `cargo xtask plugins` (or run `cargo xtask test`)",
        p.display()
    );
    p
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Deterministic filler content of `len` bytes.
pub fn filler(seed: &str, len: usize) -> Vec<u8> {
    seed.bytes().cycle().take(len).collect()
}

/// The shape of a mailwise data directory to build.
#[derive(Debug, Clone)]
pub struct MailwiseTree {
    /// Database names in mw/data (each gets `X.odb` and, unless listed in `missing_mirrors`,
    /// `X.odb.mrr`).
    pub databases: Vec<&'static str>,
    /// Databases whose mirror is left out.
    pub missing_mirrors: Vec<&'static str>,
    /// Mail spaces `mw/file/ws<N>`.
    pub mail_spaces: Vec<u32>,
    /// Archives `mw/back<N>`.
    pub archives: Vec<u32>,
    /// Bytes per database file.
    pub db_bytes: usize,
    /// Bytes per mail file.
    pub mail_bytes: usize,
    /// Whether the archive's command file `mwsave` is there, made after the last archive (the
    /// archives' directories are dated a day back).
    pub archive_command: bool,
}

impl Default for MailwiseTree {
    fn default() -> Self {
        MailwiseTree {
            databases: vec!["mail", "address", "system"],
            missing_mirrors: vec![],
            mail_spaces: vec![1, 2, 10],
            archives: vec![1, 2, 10],
            db_bytes: 4096,
            mail_bytes: 1500,
            archive_command: true,
        }
    }
}

impl MailwiseTree {
    /// Builds the tree under `data` (the directory that holds `mw/`).
    pub fn build(&self, data: &Path) {
        let mw = data.join("mw");
        for db in &self.databases {
            write(
                &mw.join(format!("data/{db}.odb")),
                &filler(db, self.db_bytes),
            );
            if !self.missing_mirrors.contains(db) {
                write(
                    &mw.join(format!("data/{db}.odb.mrr")),
                    &filler(db, self.db_bytes),
                );
            }
        }
        write(&mw.join("data/config.ini"), b"[mailwise]\nversion=5.4\n");
        for ws in &self.mail_spaces {
            for n in 0..3 {
                write(
                    &mw.join(format!("file/ws{ws}/{n:04}.eml")),
                    &filler(&format!("ws{ws}-{n}"), self.mail_bytes),
                );
            }
        }
        for b in &self.archives {
            write(
                &mw.join(format!("back{b}/data/mail.odb")),
                &filler("old", self.db_bytes),
            );
            write(
                &mw.join(format!("back{b}/data/mail.odb.mrr")),
                &filler("old", self.db_bytes),
            );
        }
        write(&mw.join("log/sched/dynamic/Maintenance.log"), b"");
        std::fs::create_dir_all(mw.join("back-notes")).unwrap();
        // The last archive ran a day ago; the command file for the next one was made since.
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        for b in &self.archives {
            std::fs::File::open(mw.join(format!("back{b}")))
                .and_then(|d| d.set_modified(day_ago))
                .unwrap();
        }
        if self.archive_command {
            write(
                &data.join("mwsave"),
                b"#!/bin/sh\n# made by mailwise: archive ws1 up to 2026-06-30\n",
            );
        }
    }

    /// Builds a backup set of this tree at `set`, with its manifest, as a hokan backup of job
    /// `mailwise` at site `test-site` would have made it.
    pub fn build_set(&self, set: &Path) {
        let tmp = tempfile::tempdir().unwrap();
        self.build(tmp.path());
        let mw = tmp.path().join("mw");
        let mut dirs = vec!["data".to_string(), "file".to_string()];
        dirs.extend(self.archives.iter().map(|b| format!("back{b}")));
        for d in dirs {
            copy_dir(&mw.join(&d), &set.join(&d));
        }
        write_manifest(set);
    }
}

/// Writes the manifest of the tree at `set`, as a hokan backup of job `mailwise` at site
/// `test-site` would have (making the directory if needed): the set is then complete.
pub fn write_manifest(set: &Path) {
    std::fs::create_dir_all(set).unwrap();
    let id = set.file_name().unwrap().to_string_lossy().into_owned();
    let head = hokan::sets::Manifest {
        format_version: hokan::sets::manifest::FORMAT_VERSION.into(),
        hokan_version: "test".into(),
        site: "test-site".into(),
        job: "mailwise".into(),
        set: id,
        operation: "backup".into(),
        plugin: hokan::plan::document::PluginRef {
            name: "mailwise".into(),
            version: "test".into(),
            sha256: String::new(),
        },
        started: String::new(),
        kept: None,
        finished: String::new(),
        digest: String::new(),
        owners: hokan::tree::meta::is_root(),
        entries: vec![],
    };
    hokan::sets::manifest::write(set, head, &Default::default(), Vec::new()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A throwaway site: a policy file, a mailwise data directory and a backup root, in a temporary
/// directory that lives as long as the value.
pub struct Site {
    /// The temporary directory.
    pub dir: tempfile::TempDir,
}

/// A policy for one mailwise job at `data`, with backups under `backups`, both relative to the
/// policy file.
pub const MAILWISE_POLICY: &str = r#"
[site]
name = "test-site"
timezone = "Asia/Tokyo"

[[servers]]
name = "mw1"
role = "mailwise"

[[servers]]
name = "mw2"
role = "mailwise"

[jobs.mailwise]
plugin = "mailwise"
servers = ["mw1"]
backup_root = "backups"
roots = { data = "data" }
commands = { maintenance-mode = "/usr/local/bin/mw-maintenance", mwsave = "/opt/mailwise/mwsave" }
params = { maintenance_method = "command" }

[jobs.standby]
plugin = "mailwise"
servers = ["mw2"]
sets_of = "mailwise"
roots = { data = "standby" }
commands = { maintenance-mode = "/usr/local/bin/mw-maintenance" }
params = { maintenance_method = "command" }
"#;

impl Site {
    /// A site with `policy` written as `site.toml`.
    pub fn new(policy: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("site.toml"), policy).unwrap();
        Site { dir }
    }

    /// The policy file.
    pub fn policy(&self) -> PathBuf {
        self.dir.path().join("site.toml")
    }

    /// A path inside the site.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// Real facts with knobs for tests and benchmarks: a fixed free space per root (so plans do not
/// depend on this machine's disk), a delay before every answer (a slow disk), and a tally of the
/// time spent answering.
pub struct TestFacts {
    inner: hokan::facts::RealFacts,
    free: std::collections::BTreeMap<String, u64>,
    other_free: Option<u64>,
    delay: std::time::Duration,
    spent: std::sync::Mutex<std::time::Duration>,
}

impl TestFacts {
    /// Answers exactly as `inner` does until a knob is set.
    pub fn new(inner: hokan::facts::RealFacts) -> Self {
        TestFacts {
            inner,
            free: Default::default(),
            other_free: None,
            delay: std::time::Duration::ZERO,
            spent: Default::default(),
        }
    }

    /// Reports `bytes` free for `root`.
    pub fn free(mut self, root: &str, bytes: u64) -> Self {
        self.free.insert(root.to_string(), bytes);
        self
    }

    /// Reports `bytes` free for every root not given to [`TestFacts::free`].
    pub fn other_roots_free(mut self, bytes: u64) -> Self {
        self.other_free = Some(bytes);
        self
    }

    /// Sleeps this long before every answer.
    pub fn delay(mut self, d: std::time::Duration) -> Self {
        self.delay = d;
        self
    }

    /// The time spent answering since the last call.
    pub fn take_spent(&self) -> std::time::Duration {
        std::mem::take(&mut *self.spent.lock().unwrap())
    }

    fn answer<R>(&self, query: impl FnOnce(&hokan::facts::RealFacts) -> R) -> R {
        let t = std::time::Instant::now();
        std::thread::sleep(self.delay);
        let r = query(&self.inner);
        *self.spent.lock().unwrap() += t.elapsed();
        r
    }
}

impl hokan::facts::FactSource for TestFacts {
    fn exists(&self, p: &hokan::plan::Location) -> Result<bool, hokan::facts::FactError> {
        self.answer(|f| f.exists(p))
    }
    fn list_dir(
        &self,
        p: &hokan::plan::Location,
    ) -> Result<Vec<hokan::facts::DirEntry>, hokan::facts::FactError> {
        self.answer(|f| f.list_dir(p))
    }
    fn stat(
        &self,
        p: &hokan::plan::Location,
    ) -> Result<hokan::facts::FileStat, hokan::facts::FactError> {
        self.answer(|f| f.stat(p))
    }
    fn tree_size(&self, p: &hokan::plan::Location) -> Result<u64, hokan::facts::FactError> {
        self.answer(|f| f.tree_size(p))
    }
    fn backup_size(&self, p: &hokan::plan::Location) -> Result<u64, hokan::facts::FactError> {
        self.answer(|f| f.backup_size(p))
    }
    fn free_space(&self, root: &str) -> Result<u64, hokan::facts::FactError> {
        let real = self.answer(|f| f.free_space(root))?;
        Ok(self
            .free
            .get(root)
            .copied()
            .or(self.other_free)
            .unwrap_or(real))
    }
    fn same_volume(&self, a: &str, b: &str) -> Result<bool, hokan::facts::FactError> {
        self.answer(|f| f.same_volume(a, b))
    }
    fn read(
        &self,
        p: &hokan::plan::Location,
        max: u32,
    ) -> Result<Vec<u8>, hokan::facts::FactError> {
        self.answer(|f| f.read(p, max))
    }
    fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }
    fn topology(&self) -> hokan::facts::Topology {
        self.inner.topology()
    }
}

/// ESE's checkpoint file `Edb.chk` (4 KiB) pointing at log generation `generation`: its XOR-32
/// checksum, the last full backup's log position, then the checkpoint's, whose generation is at
/// offset 16.
pub fn ese_checkpoint(generation: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[16..20].copy_from_slice(&generation.to_le_bytes());
    let sum = b[4..].chunks(4).fold(0x89ab_cdefu32, |x, w| {
        x ^ u32::from_le_bytes(w.try_into().expect("4 bytes"))
    });
    b[..4].copy_from_slice(&sum.to_le_bytes());
    b
}

/// Runs a command to completion and returns how long it took; fails unless it succeeded.
pub fn timed(mut c: std::process::Command) -> std::time::Duration {
    let t = std::time::Instant::now();
    let out = c.output().unwrap();
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

/// Writes `len` bytes of `noise`, starting at an offset that depends on `seed`.
fn write_noise(path: &Path, noise: &[u8], seed: usize, len: usize) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut at = seed.wrapping_mul(7919) % noise.len();
    let mut left = len;
    while left > 0 {
        let n = left.min(noise.len() - at);
        f.write_all(&noise[at..at + n]).unwrap();
        left -= n;
        at = 0;
    }
    f.flush().unwrap();
}

/// The benchmarks' mailwise tree in `data`, of about `mib` MiB (at 1024: 10,000 mail files of
/// 8 to 136 KiB, four database files of 32 and 128 MiB, one archive), the same bytes every time;
/// returns its size in bytes.
pub fn bench_tree(data: &Path, mib: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..(1 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let scale = mib as f64 / 1024.0;
    let big = ((128 << 20) as f64 * scale) as usize;
    let mid = ((32 << 20) as f64 * scale) as usize;
    let mw = data.join("mw");
    let mut total = 0u64;
    for (name, len) in [("mail", big), ("address", mid)] {
        for suffix in [".odb", ".odb.mrr"] {
            write_noise(&mw.join(format!("data/{name}{suffix}")), &noise, len, len);
            total += len as u64;
        }
    }
    write_noise(&mw.join("data/config.ini"), &noise, 1, 64);
    for i in 0..10_000usize {
        let len = (((8 << 10) + (i * 7919) % (128 << 10)) as f64 * scale) as usize;
        write_noise(
            &mw.join(format!("file/ws{}/{:04}.eml", i / 1000 + 1, i % 1000)),
            &noise,
            i,
            len,
        );
        total += len as u64;
    }
    for suffix in [".odb", ".odb.mrr"] {
        write_noise(
            &mw.join(format!("back1/data/mail{suffix}")),
            &noise,
            3,
            1 << 20,
        );
        total += 1 << 20;
    }
    std::fs::create_dir_all(mw.join("log")).unwrap();
    total
}

/// Readies the machine for a timed command that writes about `writes` bytes: waits until
/// nothing is left to write back (`sync`), so that it is not charged for what the one before it
/// left in the page cache, then touches and frees three times that much memory, so that the
/// page-cache pages it takes are ones the machine has already backed.
///
/// On a virtual machine whose memory the hypervisor backs only when the guest first touches it
/// (this one's), copying into fresh page-cache pages cost 5 to 12 s per GiB against 0.3 s for
/// pages touched before (`dd` of 1 GiB, measured here): which tool of a comparison drew the
/// fresh pages decided it, and the same run's hokan-to-rsync ratio swung from 0.37 to 1.31.
/// On a machine that backs its memory up front this costs a moment and changes nothing.
pub fn settle(writes: u64) {
    let ok = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "sync failed");
    let n = usize::try_from(writes.saturating_mul(3)).unwrap_or(usize::MAX);
    let mut touched = vec![0u8; n];
    for b in touched.iter_mut().step_by(4096) {
        *b = 1;
    }
    std::hint::black_box(&touched);
}

/// The median of `rounds` backups of an unchanged tree, after an untimed one that makes the set
/// they link from. Each starts in a second of its own (set ids are seconds) and after
/// [`settle`].
pub fn incremental_backups(
    rounds: usize,
    backup: impl Fn() -> std::process::Command,
) -> std::time::Duration {
    let next_second = || std::thread::sleep(std::time::Duration::from_millis(1100));
    next_second();
    timed(backup());
    let times = (0..rounds)
        .map(|_| {
            next_second();
            // An incremental writes directories, links and its manifest: a few MiB.
            settle(64 << 20);
            timed(backup())
        })
        .collect();
    median(times)
}

/// A benchmark's size: `(smoke, mib)`. Without `--bench` (as `cargo test --all-targets` runs it)
/// it is a smoke run of 16 MiB that claims no figures; `HOKAN_BENCH_MIB` overrides the size.
pub fn bench_size(default_mib: u64) -> (bool, u64) {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mib = std::env::var("HOKAN_BENCH_MIB")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(if smoke { 16 } else { default_mib });
    (smoke, mib)
}

/// The operator of a run driven by a test: confirms every manual gate but the one named.
#[derive(Debug, Default)]
pub struct Gates {
    /// The gate the operator refuses, if any.
    pub refuse: Option<String>,
}

impl hokan::execute::Observer for Gates {
    fn gate(
        &self,
        step: &hokan::plan::Step,
        _instructions: &str,
        _reference: Option<&str>,
    ) -> hokan::execute::Gate {
        if self.refuse.as_deref() == Some(step.id.as_str()) {
            hokan::execute::Gate::NotConfirmed("the operator said no".into())
        } else {
            hokan::execute::Gate::Confirmed("the test confirmed it".into())
        }
    }
}
