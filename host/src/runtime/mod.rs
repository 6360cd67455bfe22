//! Loads untrusted plugin components and calls them under limits.
//!
//! One [`Runtime`] holds one wasmtime engine, a linker with the host's imports, and a
//! [`CompileCache`]. Each [`Plugin`] is compiled once (or loaded from the cache) and
//! pre-instantiated; every call gets a fresh store with an epoch deadline and a memory cap, so a
//! plugin that loops, traps or hoards memory fails that call alone and the host carries on.

mod bindings;
mod cache;
mod contract;

pub use crate::describe::{
    CallError, CommandBehaviour, Conflict, Deadline, Description, MaintenanceMarker, ModelledState,
    NameInfo, OperationInfo, ParamInfo, PlanRefusal, PlanRequest, Planner, RoleInfo, RootInfo,
    SetUse, SimEffect, WindowRules,
};
pub use cache::CacheOutcome;
use cache::CompileCache;
pub use contract::{CONTRACT_VERSION, Contract, PLUGIN_INTERFACE, inspect};

use crate::facts::FactSource;
use crate::plan::Plan;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The limit `deadline` counts against.
fn limit(deadline: Deadline, limits: &Limits) -> Duration {
    match deadline {
        Deadline::OwnTime => limits.call_timeout,
        Deadline::WallTime => limits.call_wall_timeout,
    }
}

/// How much of a plugin's stderr (panic messages) is kept for the error report.
const STDERR_CAPTURE: usize = 16 * 1024;

/// Limits applied to every call into a plugin.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time one call may spend computing inside the plugin. Time the host spends answering the
    /// plugin's facts (walking a large tree on a slow disk) does not count.
    pub call_timeout: Duration,
    /// Wall-clock time one call may take in all, facts included.
    pub call_wall_timeout: Duration,
    /// Linear memory one call's instance may grow to.
    pub memory_bytes: usize,
    /// Steps in a plan, body, group members and cleanup together.
    pub max_steps: usize,
    /// Bytes of text in a plan.
    pub max_plan_bytes: usize,
    /// Bytes of one string in a plan.
    pub max_string_bytes: usize,
    /// Bytes of one write-file's contents.
    pub max_write_file_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(5),
            call_wall_timeout: Duration::from_secs(300),
            memory_bytes: 64 << 20,
            max_steps: 2_000,
            max_plan_bytes: 4 << 20,
            max_string_bytes: 64 << 10,
            max_write_file_bytes: 1 << 20,
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// Not WebAssembly, or a core module rather than a component.
    #[error(
        "{path} is not a WebAssembly component ({reason}); build plugins with `cargo xtask plugins`"
    )]
    NotAComponent {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// A component that does not export the plugin interface.
    #[error(
        "{path} is a component but not a hokan plugin: it does not export `{PLUGIN_INTERFACE}`"
    )]
    NotAPlugin {
        /// The file.
        path: PathBuf,
    },
    /// Built against a version of the contract this host does not speak.
    #[error(
        "{path} was built for contract hokan:policy@{found}, but this host speaks hokan:policy@{accepted}; rebuild the plugin against one of those (wit/<version>/ of this hokan), or use a hokan that speaks {found}"
    )]
    ContractMismatch {
        /// The file.
        path: PathBuf,
        /// The plugin's version.
        found: String,
        /// The versions the host speaks, oldest first.
        accepted: String,
    },
    /// The policy pinned another hash.
    #[error(
        "{path} has sha256 {found}, but the policy pins {expected}; if the plugin was updated on purpose, update `plugin_sha256` in the policy"
    )]
    PinMismatch {
        /// The file.
        path: PathBuf,
        /// The policy's pin.
        expected: String,
        /// The file's hash.
        found: String,
    },
    /// wasmtime could not compile or link it.
    #[error("{path} cannot be loaded: {message}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// wasmtime's reason.
        message: String,
    },
    /// `describe()` failed.
    #[error("{path}: describe() failed: {source}")]
    Describe {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<CallError>,
    },
}

/// Per-call state: the facts the call may see, WASI with nothing granted, and the limiter.
pub(crate) struct State {
    plugin: String,
    facts: Arc<dyn FactSource>,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    clock: CallClock,
    /// Log lines the plugin sent in this call.
    logged: u32,
}

/// How long a call has run, and how much of that the host spent answering facts.
struct CallClock {
    started: Instant,
    in_host: Duration,
    /// Which deadline stopped the call, if one did.
    expired: Option<Deadline>,
}

impl State {
    /// Runs a facts query, keeping its time off the plugin's own clock.
    fn timed<R>(&mut self, query: impl FnOnce(&dyn FactSource) -> R) -> R {
        let t = Instant::now();
        let r = query(self.facts.as_ref());
        self.clock.in_host += t.elapsed();
        r
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers whether the cap was hit, to name the failure correctly.
struct MemoryCap {
    limit: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A loaded plugin, ready to be called.
pub struct Plugin {
    path: PathBuf,
    sha256: String,
    pre: bindings::Pre,
    /// The contract version it was built against.
    contract: String,
    description: Description,
    cache: CacheOutcome,
}

impl Plugin {
    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// SHA-256 of the component, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// What it said in `describe()`.
    pub fn description(&self) -> &Description {
        &self.description
    }
    /// The contract version it was built against (`0.5.0`): older ones get the defaults of
    /// what they lack.
    pub fn contract(&self) -> &str {
        &self.contract
    }
    /// Whether the compiled code came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }
}

/// A plugin with the runtime that calls it: a [`Planner`].
#[derive(Clone, Copy)]
pub struct Bound<'a> {
    rt: &'a Runtime,
    plugin: &'a Plugin,
}

impl Bound<'_> {
    /// The plugin.
    pub fn plugin(&self) -> &Plugin {
        self.plugin
    }
}

impl Planner for Bound<'_> {
    fn description(&self) -> &Description {
        &self.plugin.description
    }

    fn sha256(&self) -> &str {
        &self.plugin.sha256
    }

    fn plan(
        &self,
        facts: Arc<dyn FactSource>,
        request: &PlanRequest,
    ) -> Result<Result<Plan, PlanRefusal>, CallError> {
        self.rt.plan(self.plugin, facts, request)
    }
}

/// The engine and everything shared between plugins.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    cache: CompileCache,
    limits: Limits,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The WebAssembly engine refused its configuration, or the host's imports could not be
    /// linked (a build of hokan that is wrong, not the site's fault).
    #[error("the WebAssembly engine cannot start: {0}")]
    Engine(String),
    /// The thread that enforces plugins' time limits could not be started.
    #[error("cannot start the plugin time-limit thread: {0}")]
    Ticker(#[source] std::io::Error),
}

impl Runtime {
    /// A runtime with its compile cache in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>, limits: Limits) -> Result<Self, RuntimeError> {
        let engine_err = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        bindings::add_to_linker(&mut linker).map_err(engine_err)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (weak_engine, stop) = (engine.weak(), stop_ticker.clone());
        std::thread::Builder::new()
            .name("hokan-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(RuntimeError::Ticker)?;
        Ok(Runtime {
            engine,
            linker,
            cache: CompileCache::new(cache_dir),
            limits,
            stop_ticker,
        })
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reads, checks, compiles (or loads from the cache) and describes a plugin.
    /// `pin` is the SHA-256 the policy requires, if any.
    pub fn load(&self, path: &Path, pin: Option<&str>) -> Result<Plugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_bytes(path, &bytes, pin)
    }

    /// As [`Runtime::load`], from bytes already read; `path` names them in errors.
    pub fn load_bytes(
        &self,
        path: &Path,
        bytes: &[u8],
        pin: Option<&str>,
    ) -> Result<Plugin, LoadError> {
        let path = path.to_path_buf();
        let sha256 = sha256_hex(bytes);
        if let Some(expected) = pin
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(LoadError::PinMismatch {
                path,
                expected: expected.to_string(),
                found: sha256,
            });
        }
        let contract = match inspect(bytes) {
            Contract::Speaks(v) if bindings::ACCEPTED.contains(&v.as_str()) => v,
            Contract::Speaks(found) => {
                return Err(LoadError::ContractMismatch {
                    path,
                    found,
                    accepted: bindings::ACCEPTED.join(", "),
                });
            }
            Contract::NotAPlugin => return Err(LoadError::NotAPlugin { path }),
            Contract::CoreModule => {
                return Err(LoadError::NotAComponent {
                    path,
                    reason: "it is a core module".into(),
                });
            }
            Contract::NotWasm(reason) => return Err(LoadError::NotAComponent { path, reason }),
        };
        let compile_err = |e: wasmtime::Error| LoadError::Compile {
            path: path.clone(),
            message: format!("{e:#}"),
        };
        let (component, cache) = self
            .cache
            .load(&self.engine, &sha256, bytes)
            .map_err(compile_err)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(compile_err)?;
        let pre = match bindings::Pre::new(&contract, instance_pre) {
            Some(pre) => pre.map_err(compile_err)?,
            // `ACCEPTED` and the bindings are listed side by side; should they ever differ, the
            // plugin is refused like any version this host does not speak.
            None => {
                return Err(LoadError::ContractMismatch {
                    path,
                    found: contract,
                    accepted: bindings::ACCEPTED.join(", "),
                });
            }
        };
        // A label for messages: a name that is not UTF-8 is shown with `\xNN` escapes.
        let name = path
            .file_stem()
            .map(|s| crate::tree::Bytes::from(s).to_string())
            .unwrap_or_default();
        let description = self
            .call(
                &name,
                "describe",
                Arc::new(crate::facts::NoFacts),
                |store| pre.describe(store),
            )
            .map_err(|e| LoadError::Describe {
                path: path.clone(),
                source: Box::new(e),
            })?;
        Ok(Plugin {
            path,
            sha256,
            pre,
            contract,
            description,
            cache,
        })
    }

    /// `plugin`, called through this runtime: what the planner and the simulator are given.
    pub fn bind<'a>(&'a self, plugin: &'a Plugin) -> Bound<'a> {
        Bound { rt: self, plugin }
    }

    /// Asks a plugin for a plan, answering its facts from `facts`. The outer error is the host's
    /// (the plugin misbehaved); the inner one is the plugin's own refusal.
    pub fn plan(
        &self,
        plugin: &Plugin,
        facts: Arc<dyn FactSource>,
        request: &PlanRequest,
    ) -> Result<Result<Plan, PlanRefusal>, CallError> {
        let name = plugin.description.name.clone();
        let raw = self.call(&name, "plan", facts, |store| {
            plugin.pre.plan(store, request, &self.limits)
        })?;
        match raw {
            Err(refusal) => Ok(Err(refusal)),
            Ok(plan) => plan
                .map(Ok)
                .map_err(|what| CallError::PlanTooLarge { plugin: name, what }),
        }
    }

    /// Makes a fresh store for one call and runs `f` (instantiate, call, convert) in it, under
    /// the limits.
    fn call<R>(
        &self,
        plugin: &str,
        call: &'static str,
        facts: Arc<dyn FactSource>,
        f: impl FnOnce(&mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        let mut store = Store::new(
            &self.engine,
            State {
                plugin: plugin.to_string(),
                facts,
                wasi,
                table: ResourceTable::new(),
                limiter: MemoryCap {
                    limit: self.limits.memory_bytes,
                    hit: false,
                },
                clock: CallClock {
                    started: Instant::now(),
                    in_host: Duration::ZERO,
                    expired: None,
                },
                logged: 0,
            },
        );
        store.limiter(|s| &mut s.limiter);
        // The epoch deadline wakes this callback; it compares the plugin's own time (wall time
        // less the time spent in facts) with the call timeout, and wall time with its cap.
        let (own_limit, wall_limit) = (self.limits.call_timeout, self.limits.call_wall_timeout);
        let ticks = |d: Duration| (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks(own_limit));
        store.epoch_deadline_callback(move |mut ctx| {
            let clock = &mut ctx.data_mut().clock;
            let wall = clock.started.elapsed();
            let own = wall.saturating_sub(clock.in_host);
            if own >= own_limit {
                clock.expired = Some(Deadline::OwnTime);
            } else if wall >= wall_limit {
                clock.expired = Some(Deadline::WallTime);
            } else {
                return Ok(UpdateDeadline::Continue(ticks(
                    (own_limit - own).min(wall_limit - wall),
                )));
            }
            Ok(UpdateDeadline::Interrupt)
        });
        let result = f(&mut store);
        result.map_err(|e| {
            if store.data().limiter.hit {
                CallError::Memory {
                    plugin: plugin.into(),
                    call,
                    limit_mib: self.limits.memory_bytes >> 20,
                }
            } else if let Some(counting) = store.data().clock.expired {
                CallError::Timeout {
                    plugin: plugin.into(),
                    call,
                    limit: limit(counting, &self.limits),
                    counting,
                }
            } else {
                CallError::Trap {
                    plugin: plugin.into(),
                    call,
                    message: format!("{e:#}"),
                    stderr: String::from_utf8_lossy(&stderr.contents()).into_owned(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(dir: &Path) -> Runtime {
        Runtime::new(dir.join("cache"), Limits::default()).unwrap()
    }

    #[test]
    fn what_is_not_a_plugin_is_refused_naming_the_file_and_what_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(tmp.path());
        let at = Path::new("/usr/lib/hokan/plugins/mailwise.wasm");
        let e = rt.load_bytes(at, b"#!/bin/sh\n", None).err().unwrap();
        assert!(matches!(e, LoadError::NotAComponent { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("/usr/lib/hokan/plugins/mailwise.wasm is not a WebAssembly component"),
            "{e}"
        );
        let e = rt.load_bytes(at, b"\0asm\x01\0\0\0", None).err().unwrap();
        assert!(e.to_string().contains("(it is a core module)"), "{e}");
        let e = rt.load_bytes(at, b"\0asm\x0d\0\x01\0", None).err().unwrap();
        assert!(matches!(e, LoadError::NotAPlugin { .. }), "{e}");
        let e = rt.load(&tmp.path().join("gone.wasm"), None).err().unwrap();
        assert!(
            matches!(e, LoadError::Read { .. }) && e.to_string().contains("gone.wasm"),
            "{e}"
        );
    }

    #[test]
    fn a_pin_is_checked_before_the_bytes_are_even_parsed() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(tmp.path());
        let bytes = b"\0asm\x0d\0\x01\0";
        let sha = sha256_hex(bytes);
        let e = rt
            .load_bytes(Path::new("p.wasm"), bytes, Some("ab12"))
            .err()
            .unwrap();
        match &e {
            LoadError::PinMismatch {
                expected, found, ..
            } => {
                assert_eq!((expected.as_str(), found.as_str()), ("ab12", sha.as_str()));
            }
            other => panic!("{other}"),
        }
        assert!(
            e.to_string()
                .contains("update `plugin_sha256` in the policy"),
            "{e}"
        );
        // The right pin, in either case, gets past the check (and on to what the bytes are).
        let e = rt
            .load_bytes(Path::new("p.wasm"), bytes, Some(&sha.to_uppercase()))
            .err()
            .unwrap();
        assert!(matches!(e, LoadError::NotAPlugin { .. }), "{e}");
    }

    #[test]
    fn each_deadline_counts_against_its_own_limit() {
        let limits = Limits {
            call_timeout: Duration::from_millis(7),
            call_wall_timeout: Duration::from_millis(70),
            ..Limits::default()
        };
        assert_eq!(limit(Deadline::OwnTime, &limits), Duration::from_millis(7));
        assert_eq!(
            limit(Deadline::WallTime, &limits),
            Duration::from_millis(70)
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
