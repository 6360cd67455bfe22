//! `cargo xtask`: set-up, plugin builds, tests, the demo and benchmarks.
//!
//! Everything a newcomer needs on a fresh machine goes through here, so the README's two
//! commands (`cargo xtask demo`, `cargo xtask test`) stay true.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "\
usage: cargo xtask <command>

  setup     find or install a wasm32-wasip2 toolchain and say which one is used
  plugins   build the plugins (and test fixtures) into target/plugins/
  test      plugins, then every test (host and plugins), clippy and rustfmt
  demo      build what is needed, make a demo site under target/demo/, show the
            validated plans of the bundled policies, and simulate them with every fault
  bench     plugins, then the runtime, simulation, execution and ESE benchmarks (release build)
  deb       the Debian package, target/deb/hokan_<version>_<arch>.deb (release build; --dev:
            a debug build; --check: check its files and, as root, install it, verify the
            unit, validate /etc/hokan/, start the daemon as the unit does, then purge it;
            `test` runs `deb --dev --check`)
";

const DEBIAN_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "lld", "wasi-libc"];
const WASM_TARGET: &str = "wasm32-wasip2";
/// Plugin crates whose components are products, and test fixtures.
const PRODUCTS: &[&str] = &["mailwise", "teamware", "groupmax", "exchange"];
const FIXTURES: &[&str] = &[
    "adversary",
    "careless",
    "future-contract",
    "contract-0-5",
    "contract-0-6",
    "contract-0-7",
];

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("setup") => setup().map(|t| println!("wasm toolchain: {}", t.describe())),
        Some("plugins") => plugins().map(drop),
        Some("test") => test(),
        Some("demo") => demo(),
        Some("bench") => bench(),
        Some("deb") => {
            let flags: Vec<String> = std::env::args().skip(2).collect();
            let has = |f: &str| flags.iter().any(|a| a == f);
            if let Some(other) = flags
                .iter()
                .find(|a| !["--dev", "--check"].contains(&a.as_str()))
            {
                eprintln!("unknown flag {other}\n{USAGE}");
                std::process::exit(2);
            }
            let deb = deb(has("--dev"))?;
            if has("--check") {
                check_deb(&deb)?;
            }
            println!("{}", deb.display());
            Ok(())
        }
        _ => {
            eprint!("{USAGE}");
            std::process::exit(2);
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where host builds go: `CARGO_TARGET_DIR` when set (relative to the repository), else `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root().join(d),
        _ => root().join("target"),
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The toolchain that builds plugins.
enum Toolchain {
    /// rustup's own target is installed: plain `cargo build --target wasm32-wasip2`.
    Rustup,
    /// Debian's rustc-web: -Zbuild-std with the wasi-libc package, linked by wasm-component-ld.
    Debian { linker: PathBuf },
}

impl Toolchain {
    fn describe(&self) -> String {
        match self {
            Toolchain::Rustup => format!("rustup's {WASM_TARGET} target"),
            Toolchain::Debian { linker } => format!(
                "Debian's rustc-web (/usr/bin/rustc, std built for {WASM_TARGET}), linked by {}",
                linker.display()
            ),
        }
    }

    fn cargo(&self) -> Command {
        match self {
            Toolchain::Rustup => {
                let mut c =
                    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                c.args(["build", "--release", "--target", WASM_TARGET]);
                c
            }
            Toolchain::Debian { linker } => {
                let mut c = Command::new("/usr/bin/cargo");
                // A `cargo xtask` runs under rustup's cargo: do not let its choice leak in.
                c.env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("CARGO")
                    .env_remove("RUSTC_WRAPPER")
                    .env("RUSTC", "/usr/bin/rustc")
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env(
                        "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
                        "-L/usr/lib/wasm32-wasi",
                    )
                    .env("CARGO_TARGET_WASM32_WASIP2_LINKER", linker);
                c.args([
                    "build",
                    "--release",
                    "-Zbuild-std=std,panic_abort",
                    "--target",
                    WASM_TARGET,
                ]);
                c
            }
        }
    }
}

fn rustup_has_target() -> bool {
    output(Command::new("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|s| s.lines().any(|l| l.trim() == WASM_TARGET))
}

fn debian_ready() -> bool {
    Path::new("/usr/lib/wasm32-wasi/libc.a").exists()
        && output(Command::new("/usr/bin/rustc").arg("--version"))
            .is_some_and(|v| rustc_minor(&v).is_some_and(|m| m >= 85))
        && Path::new("/usr/bin/cargo").exists()
}

fn rustc_minor(version: &str) -> Option<u32> {
    version
        .split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}

/// wasm-component-ld: rustup ships it beside the host's rustc; otherwise it is built from
/// crates.io into target/tools.
fn component_linker() -> Result<PathBuf> {
    if let Some(sysroot) = output(Command::new("rustc").args(["--print", "sysroot"])) {
        let host = output(Command::new("rustc").args(["-vV"]))
            .and_then(|v| {
                v.lines()
                    .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
            })
            .unwrap_or_else(|| "x86_64-unknown-linux-gnu".into());
        let p = Path::new(sysroot.trim()).join(format!("lib/rustlib/{host}/bin/wasm-component-ld"));
        if p.exists() {
            return Ok(p);
        }
    }
    let tools = target_dir().join("tools");
    let p = tools.join("bin/wasm-component-ld");
    if !p.exists() {
        eprintln!("wasm-component-ld not found beside rustc; installing it from crates.io");
        run(Command::new("cargo")
            .args(["install", "--locked", "wasm-component-ld", "--root"])
            .arg(&tools))?;
    }
    Ok(p)
}

fn setup() -> Result<Toolchain> {
    if rustup_has_target() {
        return Ok(Toolchain::Rustup);
    }
    if !debian_ready() {
        eprintln!(
            "rustup has no {WASM_TARGET} target and cannot download one here; installing Debian's packages: {}",
            DEBIAN_PACKAGES.join(" ")
        );
        apt_install(DEBIAN_PACKAGES)?;
        if !debian_ready() {
            bail!(
                "Debian's packages were installed but /usr/bin/rustc or /usr/lib/wasm32-wasi is still missing"
            );
        }
    }
    Ok(Toolchain::Debian {
        linker: component_linker()?,
    })
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// Builds every plugin and copies the components to target/plugins (fixtures in a subfolder).
fn plugins() -> Result<PathBuf> {
    let toolchain = setup()?;
    eprintln!("building plugins with {}", toolchain.describe());
    let ws = root().join("plugins");
    // The plugins keep their own target directory whatever CARGO_TARGET_DIR says: they may be
    // built by another toolchain, whose artefacts must not mix with the host's.
    let plugin_target = ws.join("target");
    run(toolchain
        .cargo()
        .current_dir(&ws)
        .env_remove("CARGO_TARGET_DIR")
        .arg("--target-dir")
        .arg(&plugin_target))?;
    let built = plugin_target.join(format!("{WASM_TARGET}/release"));
    let out = target_dir().join("plugins");
    std::fs::create_dir_all(out.join("fixtures"))?;
    for (names, dest) in [(PRODUCTS, out.clone()), (FIXTURES, out.join("fixtures"))] {
        for name in names {
            let file = format!("{}.wasm", name.replace('-', "_"));
            let target = dest.join(format!("{name}.wasm"));
            std::fs::copy(built.join(&file), &target)
                .with_context(|| format!("cannot copy {file} to {}", target.display()))?;
        }
    }
    std::fs::write(
        out.join("fixtures/not-a-component.wasm"),
        b"\0asm\x01\0\0\0this is not a component",
    )?;
    eprintln!("plugins are in {}", out.display());
    Ok(out)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Programs the tests compare hokan with or drive (rsync; headless Chromium for the status
/// page; aiosmtpd, the SMTP server notifications are sent to; OpenSSH's client and the sshd
/// instances that stand in for customers' servers; pv, which slows a "server's" link so that a
/// test can cut it in the middle of a copy), and the Debian packages that bring them; installed
/// when missing.
const TOOLS: &[(&str, &str)] = &[
    ("rsync", "rsync"),
    ("pv", "pv"),
    ("chromium", "chromium"),
    ("aiosmtpd", "python3-aiosmtpd"),
    ("ssh", "openssh-client"),
    ("ssh-keyscan", "openssh-client"),
    ("/usr/sbin/sshd", "openssh-server"),
];

/// OpenSSH's client and server, for the demo's site over ssh.
const SSH_TOOLS: &[(&str, &str)] = &[
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("/usr/sbin/sshd", "openssh-server"),
];

/// What the benchmarks compare hokan with, and the sshd the remote benchmark reaches.
const BENCH_TOOLS: &[(&str, &str)] = &[
    ("rsync", "rsync"),
    ("ssh", "openssh-client"),
    ("/usr/sbin/sshd", "openssh-server"),
];

fn tools(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| {
            output(Command::new("sh").args(["-c", &format!("command -v {bin}")])).is_none()
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    let mut missing = missing;
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing Debian's {}", missing.join(" "));
    apt_install(&missing)
}

/// `apt-get ARGS` as root (through sudo when not root), without questions.
fn apt(args: &[&str]) -> Command {
    let sudo = !is_root();
    let mut c = Command::new(if sudo { "sudo" } else { "apt-get" });
    if sudo {
        c.arg("apt-get");
    }
    c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// `apt-get update` and `apt-get install` of `packages` (through sudo when not root).
///
/// The tests start their own servers on loopback and stop them; a package's own service
/// (openssh-server's sshd on port 22) is never started by the set-up: Debian's maintainer
/// scripts ask `/usr/sbin/policy-rc.d`, which says no (101) for the install's duration.
fn apt_install(packages: &[&str]) -> Result<()> {
    const POLICY_RC: &str = "/usr/sbin/policy-rc.d";
    let as_root = |script: &str| {
        let mut c = Command::new(if is_root() { "sh" } else { "sudo" });
        if !is_root() {
            c.arg("sh");
        }
        c.args(["-c", script]);
        c
    };
    let ours = !Path::new(POLICY_RC).exists();
    if ours {
        run(&mut as_root(&format!(
            "printf '#!/bin/sh\\n# hokan xtask: no service starts while it installs test tools\\nexit 101\\n' > {POLICY_RC} && chmod 755 {POLICY_RC}"
        )))?;
    }
    let result = (|| {
        run(&mut apt(&["update", "-q"]))?;
        let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
        install.args(packages);
        run(&mut install)
    })();
    if ours {
        run(&mut as_root(&format!("rm -f {POLICY_RC}")))?;
    }
    result
}

/// Programs the tests take from a Debian package that is unpacked, not installed, into
/// `<target>/tools/deb/<package>/`: installing `prometheus` would start a Prometheus server
/// on the machine, and the tests want only its `promtool`.
const UNPACKED: &[(&str, &str)] = &[("promtool", "prometheus")];

fn unpacked_tools() -> Result<()> {
    let dir = target_dir().join("tools/deb");
    for (bin, pkg) in UNPACKED {
        let dest = dir.join(pkg);
        if dest.join("usr/bin").join(bin).exists() {
            continue;
        }
        let download = dir.join(format!("{pkg}.download"));
        let _ = std::fs::remove_dir_all(&download);
        std::fs::create_dir_all(&download)?;
        eprintln!(
            "unpacking {bin} from Debian's {pkg} package into {} (the package is not installed)",
            dest.display()
        );
        let mut get = Command::new("apt-get");
        get.args(["download", "-q", pkg]).current_dir(&download);
        if run(&mut get).is_err() {
            // A fresh machine has no package lists yet.
            run(&mut apt(&["update", "-q"]))?;
            run(&mut get)?;
        }
        let deb = std::fs::read_dir(&download)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .with_context(|| {
                format!(
                    "apt-get download {pkg} left no .deb in {}",
                    download.display()
                )
            })?;
        let partial = dir.join(format!("{pkg}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&partial, &dest)?;
        std::fs::remove_dir_all(&download)?;
    }
    Ok(())
}

fn test() -> Result<()> {
    plugins()?;
    tools(TOOLS)?;
    unpacked_tools()?;
    // The CLI tests run the `hokan` binary itself; `cargo test` alone does not build it.
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    run(cargo().args(["test", "--workspace", "--all-targets"]))?;
    run(cargo().args(["test", "--workspace", "--doc"]))?;
    // The workspace build turns on `test-hooks` (the test crate asks for it); the product's own
    // build must ignore HOKAN_TEST_*, so its unit tests run once more without the feature.
    run(cargo().args(["test", "-p", "hokan", "--lib"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The plugins' pure logic (paths, windows, set ids) is unit-tested on the host target:
    // wit-bindgen stubs the imports there.
    let plugins = ["--manifest-path", "plugins/Cargo.toml", "--workspace"];
    run(cargo().arg("test").args(plugins))?;
    run(cargo()
        .arg("clippy")
        .args(plugins)
        .args(["--all-targets", "--", "-D", "warnings"]))?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "fmt",
        "--all",
        "--check",
        "--manifest-path",
        "plugins/Cargo.toml",
    ]))?;
    // The package, from a build without test hooks: its files, its unit, and (as root, which CI
    // is) installed, validated and purged again.
    let package = deb(true)?;
    check_deb(&package)?;
    eprintln!("all checks passed");
    Ok(())
}

/// What the package holds besides the binary, the plugins and the docs.
const PACKAGING: &[(&str, &str, u32)] = &[
    (
        "packaging/hokan.service",
        "usr/lib/systemd/system/hokan.service",
        0o644,
    ),
    (
        "packaging/etc/example-site.toml",
        "etc/hokan/example-site.toml",
        0o644,
    ),
    ("packaging/etc/host.toml", "etc/hokan/host.toml", 0o644),
    ("packaging/postinst", "DEBIAN/postinst", 0o755),
    ("packaging/prerm", "DEBIAN/prerm", 0o755),
    ("packaging/postrm", "DEBIAN/postrm", 0o755),
];

/// The docs the package puts in /usr/share/doc/hokan/, by their file names.
const PACKAGE_DOCS: &[&str] = &[
    "README.md",
    "docs/notifications.md",
    "docs/monitoring.md",
    "docs/scheduling.md",
    "docs/execution.md",
    "docs/monitoring/hokan-alerts.yml",
];

/// Builds the Debian package with dpkg-deb: hokan built without test hooks (release, or
/// `dev`: the debug profile, which shares the test build's dependencies), the product plugins,
/// the unit, /etc/hokan's examples and the docs.
fn deb(dev: bool) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let plugin_dir = plugins()?;
    let mut build = cargo();
    build.args(["build", "-p", "hokan", "--bin", "hokan"]);
    if !dev {
        build.arg("--release");
    }
    run(&mut build)?;
    let built = target_dir()
        .join(if dev { "debug" } else { "release" })
        .join("hokan");
    let out = target_dir().join("deb");
    let stage = out.join("hokan");
    let _ = std::fs::remove_dir_all(&stage);
    let place = |from: &Path, to: &str, mode: u32| -> Result<()> {
        let dest = stage.join(to);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::copy(from, &dest)
            .with_context(|| format!("cannot copy {} into the package", from.display()))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    place(&built, "usr/bin/hokan", 0o755)?;
    // Shipped without debug information, as Debian's binaries are (the debug build's is most
    // of its size).
    run(Command::new("strip")
        .args(["--strip-debug", "--remove-section=.comment"])
        .arg(stage.join("usr/bin/hokan")))?;
    if dev {
        // The product build replaced target/debug/hokan; the tests run the one with hooks.
        run(cargo().args(["build", "--workspace", "--bins"]))?;
    }
    for p in PRODUCTS {
        place(
            &plugin_dir.join(format!("{p}.wasm")),
            &format!("usr/lib/hokan/plugins/{p}.wasm"),
            0o644,
        )?;
    }
    for (from, to, mode) in PACKAGING {
        place(&root().join(from), to, *mode)?;
    }
    for doc in PACKAGE_DOCS {
        let name = Path::new(doc).file_name().unwrap().to_string_lossy();
        place(
            &root().join(doc),
            &format!("usr/share/doc/hokan/{name}"),
            0o644,
        )?;
    }
    std::fs::write(
        stage.join("usr/share/doc/hokan/copyright"),
        "hokan\nLicense: Apache-2.0\nOn Debian systems the license is in /usr/share/common-licenses/Apache-2.0.\n",
    )?;
    std::fs::write(
        stage.join("DEBIAN/conffiles"),
        "/etc/hokan/example-site.toml\n/etc/hokan/host.toml\n",
    )?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))
        .context("dpkg --print-architecture failed: the package is built with Debian's dpkg")?
        .trim()
        .to_string();
    let version = env!("CARGO_PKG_VERSION");
    let size_kib = walk_size(&stage)?.div_ceil(1024);
    std::fs::write(
        stage.join("DEBIAN/control"),
        format!(
            "Package: hokan\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: hokan developers <hokan@example.invalid>\n\
             Installed-Size: {size_kib}\n\
             Depends: libc6 (>= 2.34), passwd\n\
             Recommends: systemd, ca-certificates\n\
             Section: admin\n\
             Priority: optional\n\
             Homepage: https://example.invalid/hokan\n\
             Description: product backup, restore and maintenance procedures as WebAssembly plugins\n \
             hokan runs the backup, restore and maintenance procedures of products (Cybozu\n \
             mailwise, Hitachi Groupmax, Fujitsu TeamWARE Office, Microsoft Exchange Server\n \
             5.5) as the vendors' manuals describe them, each encoded as a sandboxed\n \
             WebAssembly plugin, with verified backup sets, a crash-safe journal, a scheduler\n \
             daemon, metrics and notifications.\n"
        ),
    )?;
    let deb = out.join(format!("hokan_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    Ok(deb)
}

/// Starts the installed daemon as the unit does (the `hokan` user, the unit's command line) with
/// a notification socket of its own, and checks what systemd would hear: READY=1, watchdog
/// pings, and STOPPING=1 on SIGTERM, after which it exits 0.
fn daemon_as_the_unit_runs_it() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/hokan.service")?;
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .context("the unit has no ExecStart")?;
    let dir = target_dir().join("deb/notify");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path)?;
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o777))?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut argv = exec.split_whitespace();
    eprintln!("$ runuser -u hokan -- {exec}  (NOTIFY_SOCKET, WATCHDOG_USEC=2000000)");
    let mut child = Command::new("runuser")
        .args(["-u", "hokan", "--", "env"])
        .arg(format!("NOTIFY_SOCKET={}", sock_path.display()))
        .arg("WATCHDOG_USEC=2000000")
        .arg(argv.next().context("an empty ExecStart")?)
        .args(argv)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log"))?)
        .spawn()
        .context("cannot run runuser")?;
    let mut heard: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    let mut listen = |heard: &mut Vec<String>, until: &dyn Fn(&[String]) -> bool| -> Result<()> {
        while !until(heard) {
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not say what systemd expects; it said {heard:?}; its log:\n{}",
                    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
                );
            }
            if let Ok(n) = sock.recv(&mut buf) {
                heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Ok(())
    };
    let said = |what: &'static str| move |h: &[String]| h.iter().any(|m| m.contains(what));
    let result =
        listen(&mut heard, &said("READY=1")).and_then(|()| listen(&mut heard, &said("WATCHDOG=1")));
    // The daemon runs as hokan under runuser: signal the daemon itself, runuser's child.
    let _ = Command::new("pkill")
        .args(["-TERM", "-P", &child.id().to_string()])
        .status();
    let stopped = result.and_then(|()| listen(&mut heard, &said("STOPPING=1")));
    let status = child.wait()?;
    stopped?;
    if !status.success() {
        bail!("the daemon exited with {status} after SIGTERM");
    }
    eprintln!("the installed daemon, as the hokan user, said {heard:?} and stopped cleanly");
    Ok(())
}

fn walk_size(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            walk_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}

/// Checks the package: the files it must hold; as root, installed with dpkg, the unit verified
/// by systemd-analyze (where systemd is), `hokan validate /etc/hokan/` run, then purged.
fn check_deb(deb: &Path) -> Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .context("dpkg-deb --contents failed")?;
    let mut want: Vec<String> = vec![
        "./usr/bin/hokan".into(),
        "./usr/lib/systemd/system/hokan.service".into(),
        "./etc/hokan/example-site.toml".into(),
        "./etc/hokan/host.toml".into(),
    ];
    want.extend(
        PRODUCTS
            .iter()
            .map(|p| format!("./usr/lib/hokan/plugins/{p}.wasm")),
    );
    for w in &want {
        if !listing.lines().any(|l| l.ends_with(&format!(" {w}"))) {
            bail!("{} lacks {w}:\n{listing}", deb.display());
        }
    }
    eprintln!("{} holds {}", deb.display(), want.join(" "));
    if !is_root() {
        eprintln!("not root: the package is not installed here (CI installs it)");
        return Ok(());
    }
    run(Command::new("dpkg").arg("-i").arg(deb))?;
    let checked = (|| -> Result<()> {
        if output(Command::new("getent").args(["passwd", "hokan"])).is_none() {
            bail!("the package made no hokan user");
        }
        if output(Command::new("sh").args(["-c", "command -v systemd-analyze"])).is_some() {
            run(Command::new("systemd-analyze")
                .args(["verify", "/usr/lib/systemd/system/hokan.service"]))?;
        } else {
            eprintln!("no systemd-analyze here: the unit is not verified");
        }
        // As the daemon would see it: the installed binary, plugins and /etc/hokan.
        run(Command::new("/usr/bin/hokan")
            .args(["--cache-dir"])
            .arg(target_dir().join("deb/cache"))
            .args(["validate", "/etc/hokan/"]))?;
        daemon_as_the_unit_runs_it()
    })();
    run(Command::new("dpkg").args(["--purge", "hokan"]))?;
    checked
}

fn demo() -> Result<()> {
    let plugin_dir = plugins()?;
    run(cargo().args(["build", "-q", "-p", "hokan", "-p", "hokan-e2e", "--bins"]))?;
    let bin = target_dir().join("debug");
    // The bundled policies point at target/demo, wherever the build goes.
    let demo = root().join("target/demo");
    run(Command::new(bin.join("make-demo-site")).arg(&demo))?;
    let state = demo.join("state");
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    let hokan = |args: &[&str]| {
        let mut c = Command::new(bin.join("hokan"));
        c.arg("--plugin-dir")
            .arg(&plugin_dir)
            .arg("--cache-dir")
            .arg(root().join("target/hokan-cache"))
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            // The product stand-ins keep their state with the demo sites.
            .env("STANDIN_STATE", demo.join("standins"))
            .current_dir(root());
        c
    };
    println!("\n=== hokan plugins");
    run(&mut hokan(&["plugins"]))?;
    println!("\n=== hokan validate policies/");
    run(&mut hokan(&["validate", "policies"]))?;
    // A real backup first: the restores below read the set it writes.
    let policy = "policies/tokyo-hq.toml";
    println!("\n=== hokan run {policy} --job mailwise --op backup");
    run(&mut hokan(&[
        "run", policy, "--job", "mailwise", "--op", "backup",
    ]))?;
    let mut policies: Vec<PathBuf> = std::fs::read_dir(root().join("policies"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    policies.sort();
    for policy in policies {
        let rel = policy
            .strip_prefix(root())
            .unwrap_or(&policy)
            .to_string_lossy()
            .into_owned();
        for (job, ops) in demo_jobs(&policy)? {
            for op in ops {
                println!("\n=== hokan plan {rel} --job {job} --op {op}");
                run(&mut hokan(&["plan", &rel, "--job", &job, "--op", &op]))?;
            }
        }
    }
    // The multi-server products, for real against their stand-ins: Groupmax's master and mail
    // server (the two stop together), and TeamWARE's three servers in the guide's order.
    for (policy, job) in [
        ("policies/osaka-groupmax.toml", "groupmax-master"),
        ("policies/osaka-groupmax.toml", "groupmax-mail1"),
        ("policies/nagoya-teamware.toml", "teamware"),
    ] {
        println!("\n=== hokan run {policy} --job {job} --op backup");
        run(&mut hokan(&["run", policy, "--job", job, "--op", "backup"]))?;
    }
    // Exchange: an online full backup through the backup program, whose databases hokan then
    // checks page by page; an incremental one after it; and the operator's page check.
    for op in ["backup-full", "backup-incremental"] {
        // Set ids are seconds: the second backup must not start in the first one's second.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let policy = "policies/kyoto-exchange.toml";
        println!("\n=== hokan run {policy} --job exchange --op {op}");
        run(&mut hokan(&[
            "run", policy, "--job", "exchange", "--op", op,
        ]))?;
    }
    let edb = "target/demo/kyoto-exchange/exchsrvr/mdbdata/Priv.edb";
    println!("\n=== hokan ese-check {edb}");
    run(&mut hokan(&["ese-check", edb]))?;
    // Every bundled policy, dry-run in its bundled world (policies/worlds/), with every fault.
    println!("\n=== hokan simulate policies --faults each-step");
    run(&mut hokan(&[
        "simulate",
        "policies",
        "--faults",
        "each-step",
    ]))?;
    // What the scheduler would run in the week of the October daylight-saving change (London),
    // with mailwise's database check, TeamWARE's SearchPro indexing and Osaka's two jobs on one
    // server.
    println!(
        "\n=== hokan schedule policies --from 2026-10-22T00:00:00Z --until 2026-10-29T00:00:00Z"
    );
    run(&mut hokan(&[
        "schedule",
        "policies",
        "--from",
        "2026-10-22T00:00:00Z",
        "--until",
        "2026-10-29T00:00:00Z",
    ]))?;
    // The set just written: re-hashed against its manifest, proved by a restore test, listed,
    // and restored (over the live data, and onto the freshly installed standby). --yes confirms the restores' final
    // manual step (look at mailwise in a browser), which nobody can do in a demo.
    let sets_dir = demo.join("tokyo-hq/backups/tokyo-hq/mailwise");
    let newest = std::fs::read_dir(&sets_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("manifest.json").exists())
        .max()
        .context("the demo backup wrote no set")?;
    println!("\n=== hokan verify {}", newest.display());
    run(&mut hokan(&["verify", &newest.to_string_lossy()]))?;
    // A restore test: the set restored beside the sets and checked there, never over the live
    // data; `hokan sets` then shows that it passed.
    println!("\n=== hokan restore-test {policy} --job mailwise");
    run(&mut hokan(&["restore-test", policy, "--job", "mailwise"]))?;
    println!("\n=== hokan sets {policy} --job mailwise");
    run(&mut hokan(&["sets", policy, "--job", "mailwise"]))?;
    println!("\n=== hokan run {policy} --job mailwise --op restore --yes");
    run(&mut hokan(&[
        "run", policy, "--job", "mailwise", "--op", "restore", "--yes",
    ]))?;
    println!("\n=== hokan run {policy} --job mailwise-dr --op restore-elsewhere --yes");
    run(&mut hokan(&[
        "run",
        policy,
        "--job",
        "mailwise-dr",
        "--op",
        "restore-elsewhere",
        "--yes",
    ]))?;
    // One site whose mailwise data is on a server reached over ssh: a real sshd on loopback,
    // when Debian's can be had (installed as root, as for the tests).
    match tools(SSH_TOOLS) {
        Ok(()) => run(Command::new(bin.join("demo-over-ssh"))
            .arg(&demo)
            .arg(bin.join("hokan"))
            .arg(&plugin_dir)
            .arg(root().join("target/hokan-cache")))?,
        Err(e) => println!(
            "\n=== over ssh: skipped, no sshd here and none could be installed ({e}); \
             run `cargo xtask demo` as root to see it"
        ),
    }
    println!(
        "\nThe demo site is in {}; try `target/debug/hokan --plugin-dir target/plugins plan ... --json`\n\
         or `... simulate policies/tokyo-hq.toml --from-tree --job mailwise --op restore`.",
        demo.display()
    );
    Ok(())
}

/// The jobs of a policy and the operations the demo plans for each, read from a comment line
/// `# demo: op op ...` under the job's `[jobs.NAME]` header.
fn demo_jobs(policy: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let text = std::fs::read_to_string(policy)?;
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(job) = line
            .strip_prefix("[jobs.")
            .and_then(|l| l.strip_suffix(']'))
        {
            out.push((job.to_string(), Vec::new()));
        } else if let (Some(ops), Some((_, v))) = (line.strip_prefix("# demo:"), out.last_mut()) {
            v.extend(ops.split_whitespace().map(str::to_string));
        }
    }
    Ok(out)
}

fn bench() -> Result<()> {
    plugins()?;
    tools(BENCH_TOOLS)?;
    // The benchmark runs the release `hokan` binary for the cold-CLI figure.
    run(cargo().args(["build", "--release", "-p", "hokan"]))?;
    run(cargo().args(["bench", "-p", "hokan-e2e", "--bench", "runtime"]))?;
    run(cargo().args(["bench", "-p", "hokan-e2e", "--bench", "simulate"]))?;
    run(cargo().args(["bench", "-p", "hokan-e2e", "--bench", "execute"]))?;
    run(cargo().args(["bench", "-p", "hokan-e2e", "--bench", "ese"]))?;
    run(cargo().args(["bench", "-p", "hokan-e2e", "--bench", "remote"]))?;
    run(cargo().args(["bench", "-p", "hokan-e2e", "--bench", "schedule"]))
}
