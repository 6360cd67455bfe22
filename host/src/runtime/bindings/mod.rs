//! The contract versions this host speaks, each with its generated bindings and the
//! conversions between them and the host's own types. No other module sees a WIT type.
//!
//! A released version of `hokan:policy` is frozen in `wit/<version>/` and never edited again;
//! a change makes a new version. Each version has a module here: its `bindgen!`, then
//! [`contract!`], which writes the same conversions against that version's types, with what
//! differs between versions passed in (a fact it lacks, a field it lacks and its default). So a
//! plugin built against any version in [`ACCEPTED`] loads, and the rest of the host sees one set
//! of types.

pub mod v0_5;
pub mod v0_6;
pub mod v0_7;
pub mod v0_8;

use super::{Description, Limits, PlanRefusal, PlanRequest, State};
use crate::plan::model as m;

/// The contract versions a plugin may be built against, oldest first; the last is the one the
/// SDK builds against ([`super::CONTRACT_VERSION`]).
pub const ACCEPTED: [&str; 4] = ["0.5.0", "0.6.0", "0.7.0", "0.8.0"];

/// Log lines kept from one call.
const MAX_LOG_LINES: u32 = 200;

/// Largest file a plugin may read through facts, whatever it asks for.
const MAX_FACT_READ: u32 = 1 << 20;

/// The imports the host serves and the conversions of one contract version, written against the
/// names the invoking module brings in scope: `wty` (types), `wf` (facts), `wl` (log), `wt`
/// (plan-types), `wp` (the plugin interface), with `State`, `m` (the plan model) and the
/// description types of `super::super`.
///
/// - `facts_since_0_6`: the facts that version has beyond 0.5.0's, as methods of its facts host;
/// - `commits_set`: how to read a step's point of no return (`|_| false` before 0.7.0);
/// - `since_0_8`: what 0.8.0 added, in the terms of the budget `$b` (a `&mut Budget`) and the
///   request `$r`: a step's `no_kill`, an invariant's `when`, the match arms of the new
///   conditions and actions, the plan's `window`, the request's fields; `none` for a version
///   before it (no step is no-kill, invariants always apply, no window).
macro_rules! contract {
    // A version before 0.8.0: none of what 0.8.0 added.
    (
        facts_since_0_6: { $($facts_since_0_6:tt)* },
        commits_set: $commits_set:expr,
        since_0_8: none $(,)?
    ) => {
        super::contract!(
            facts_since_0_6: { $($facts_since_0_6)* },
            commits_set: $commits_set,
            since_0_8: (b) {
                no_kill: |_: &wt::Step| false,
                invariant_when: |i| Ok::<_, String>(Vec::new()),
                conditions: {},
                actions: {},
                verifies: {},
                plan_window: |_: &mut Budget, _: &mut wt::Plan| Ok::<_, String>(None),
                request: (r) {},
            },
        );
    };
    (
        facts_since_0_6: { $($facts_since_0_6:tt)* },
        commits_set: $commits_set:expr,
        since_0_8: ($b:ident) {
            no_kill: $no_kill:expr,
            invariant_when: |$inv:ident| $invariant_when:expr,
            conditions: { $($conditions:tt)* },
            actions: { $($actions:tt)* },
            verifies: { $($verifies:tt)* },
            plan_window: $plan_window:expr,
            request: ($r:ident) { $($request:tt)* } $(,)?
        } $(,)?
    ) => {
        // ---- imports served by the host -------------------------------------------------------------

        impl wty::Host for State {}
        impl wt::Host for State {}

        impl wl::Host for State {
            fn log(&mut self, level: wl::Level, message: String) {
                // A plugin cannot flood the operator's terminal: a few hundred lines per call, then one
                // notice that the rest were dropped.
                self.logged += 1;
                let plugin = &self.plugin;
                if self.logged > MAX_LOG_LINES {
                    if self.logged == MAX_LOG_LINES + 1 {
                        tracing::warn!(
                            plugin,
                            "more than {MAX_LOG_LINES} log lines in one call; the rest are dropped"
                        );
                    }
                    return;
                }
                let message: String = message.chars().take(4096).collect();
                match level {
                    wl::Level::Debug => tracing::debug!(plugin, "{message}"),
                    wl::Level::Info => tracing::info!(plugin, "{message}"),
                    wl::Level::Warn => tracing::warn!(plugin, "{message}"),
                    wl::Level::Error => tracing::error!(plugin, "{message}"),
                }
            }
        }


        impl wf::Host for State {
            fn exists(&mut self, p: wty::Path) -> Result<bool, wf::FactError> {
                self.timed(|f| f.exists(&location(p))).map_err(fact_error)
            }
            fn list_dir(&mut self, p: wty::Path) -> Result<Vec<wty::DirEntry>, wf::FactError> {
                let entries = self
                    .timed(|f| f.list_dir(&location(p)))
                    .map_err(fact_error)?;
                Ok(entries
                    .into_iter()
                    .map(|e| wty::DirEntry {
                        name: e.name,
                        kind: entry_kind(e.kind),
                        size: e.size,
                    })
                    .collect())
            }
            fn stat(&mut self, p: wty::Path) -> Result<wty::FileStat, wf::FactError> {
                let s = self.timed(|f| f.stat(&location(p))).map_err(fact_error)?;
                Ok(wty::FileStat {
                    kind: entry_kind(s.kind),
                    size: s.size,
                    mtime_ms: s.mtime_ms,
                    readonly: s.readonly,
                })
            }
            fn tree_size(&mut self, p: wty::Path) -> Result<u64, wf::FactError> {
                self.timed(|f| f.tree_size(&location(p)))
                    .map_err(fact_error)
            }
            $($facts_since_0_6)*

            fn free_space(&mut self, root: String) -> Result<u64, wf::FactError> {
                self.timed(|f| f.free_space(&root)).map_err(fact_error)
            }
            fn same_volume(&mut self, a: String, b: String) -> Result<bool, wf::FactError> {
                self.timed(|f| f.same_volume(&a, &b)).map_err(fact_error)
            }
            fn read_text(&mut self, p: wty::Path, max_bytes: u32) -> Result<String, wf::FactError> {
                let loc = location(p);
                let bytes = self
                    .timed(|f| f.read(&loc, max_bytes.min(MAX_FACT_READ)))
                    .map_err(fact_error)?;
                String::from_utf8(bytes).map_err(|_| wf::FactError::NotText(loc.to_string()))
            }
            fn read_bytes(&mut self, p: wty::Path, max_bytes: u32) -> Result<Vec<u8>, wf::FactError> {
                self.timed(|f| f.read(&location(p), max_bytes.min(MAX_FACT_READ)))
                    .map_err(fact_error)
            }
            fn now_ms(&mut self) -> i64 {
                self.facts.now_ms()
            }
            fn site_topology(&mut self) -> wty::Topology {
                let t = self.facts.topology();
                wty::Topology {
                    site: t.site,
                    timezone: t.timezone,
                    servers: t
                        .servers
                        .into_iter()
                        .map(|s| wty::Server {
                            name: s.name,
                            role: s.role,
                            address: s.address,
                            properties: s.properties.into_iter().collect(),
                        })
                        .collect(),
                    job: t.job,
                    job_servers: t.job_servers,
                }
            }
        }

        fn location(p: wty::Path) -> m::Location {
            m::Location {
                root: p.root,
                path: p.path,
            }
        }

        fn entry_kind(k: domain_facts::EntryKind) -> wty::EntryKind {
            match k {
                domain_facts::EntryKind::File => wty::EntryKind::File,
                domain_facts::EntryKind::Dir => wty::EntryKind::Dir,
                domain_facts::EntryKind::Symlink => wty::EntryKind::Symlink,
                domain_facts::EntryKind::Other => wty::EntryKind::Other,
            }
        }

        fn fact_error(e: domain_facts::FactError) -> wf::FactError {
            use domain_facts::FactError as E;
            match e {
                E::RootNotGranted(r) => wf::FactError::RootNotGranted(r),
                E::InvalidPath(p) => wf::FactError::InvalidPath(p),
                E::NotFound(p) => wf::FactError::NotFound(p),
                E::TooLarge(n) => wf::FactError::TooLarge(n),
                E::NotText(p) => wf::FactError::NotText(p),
                E::Io(m) => wf::FactError::Io(m),
            }
        }

        // ---- exports called by the host -------------------------------------------------------------

        pub(in crate::runtime) fn request($r: &PlanRequest) -> wp::Request {
            wp::Request {
                operation: $r.operation.clone(),
                params: $r
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                set_id: $r.set_id.clone(),
                $($request)*
            }
        }

        pub(in crate::runtime) fn refusal(e: wp::PlanError) -> PlanRefusal {
            match e {
                wp::PlanError::UnknownOperation(op) => PlanRefusal::UnknownOperation(op),
                wp::PlanError::BadParameter(m) => PlanRefusal::BadParameter(m),
                wp::PlanError::Refused(m) => PlanRefusal::Refused(m),
                wp::PlanError::Facts(m) => PlanRefusal::Facts(m),
            }
        }

        pub(in crate::runtime) fn description(d: wp::Description) -> Description {
            Description {
                name: d.name,
                version: d.version,
                product: d.product,
                summary: d.summary,
                operations: d
                    .operations
                    .into_iter()
                    .map(|o| OperationInfo {
                        name: o.name,
                        description: o.description,
                        sets: match o.sets {
                            wp::SetUse::None => SetUse::None,
                            wp::SetUse::Writes => SetUse::Writes,
                            wp::SetUse::Reads => SetUse::Reads,
                        },
                        leaves_maintenance: o.leaves_maintenance,
                    })
                    .collect(),
                roots: d
                    .roots
                    .into_iter()
                    .map(|r| RootInfo {
                        name: r.name,
                        description: r.description,
                        writable: r.writable,
                        required: r.required,
                    })
                    .collect(),
                parameters: d.parameters.into_iter().map(param_info).collect(),
                commands: d.commands.into_iter().map(name_info).collect(),
                services: d.services.into_iter().map(name_info).collect(),
                maintenance_markers: d
                    .maintenance_markers
                    .into_iter()
                    .map(|mk| MaintenanceMarker {
                        path: location(mk.path),
                        description: mk.description,
                    })
                    .collect(),
                command_behaviours: d
                    .command_behaviours
                    .into_iter()
                    .map(|b| CommandBehaviour {
                        command: b.command,
                        args_prefix: b.args_prefix,
                        exit_code: b.exit_code,
                        output: b.output,
                        duration_ms: b.duration_ms,
                        effects: b
                            .effects
                            .into_iter()
                            .map(|e| match e {
                                wp::SimEffect::CreateFile(p) => SimEffect::CreateFile(location(p)),
                                wp::SimEffect::Remove(p) => SimEffect::Remove(location(p)),
                                wp::SimEffect::Service(c) => SimEffect::Service {
                                    service: c.service,
                                    state: Budget::state(c.state),
                                },
                            })
                            .collect(),
                    })
                    .collect(),
                roles: d
                    .roles
                    .into_iter()
                    .map(|r| RoleInfo {
                        name: r.name,
                        description: r.description,
                        min: r.min,
                        max: r.max,
                        properties: r.properties.into_iter().map(param_info).collect(),
                    })
                    .collect(),
                modelled_states: d
                    .modelled_states
                    .into_iter()
                    .map(|s| ModelledState {
                        name: s.name,
                        description: s.description,
                        normal: Budget::state(s.normal),
                    })
                    .collect(),
                conflicts: d
                    .conflicts
                    .into_iter()
                    .map(|c| Conflict {
                        activity: c.activity,
                        description: c.description,
                        operations: c.operations,
                        reference: c.reference,
                        typical_minutes: c.typical_minutes,
                        skipped_in_window: c.skipped_in_window,
                    })
                    .collect(),
                window_rules: WindowRules {
                    step_minutes: d.window_rules.step_minutes.max(1),
                    daily: d.window_rules.daily,
                },
            }
        }

        fn param_info(p: wp::ParamInfo) -> ParamInfo {
            ParamInfo {
                name: p.name,
                description: p.description,
                default: p.default,
            }
        }

        fn name_info(n: wp::NameInfo) -> NameInfo {
            NameInfo {
                name: n.name,
                description: n.description,
            }
        }

        /// Converts a plan, enforcing the size limits as it goes.
        pub(in crate::runtime) fn plan(mut p: wt::Plan, limits: &Limits) -> Result<m::Plan, String> {
            let mut budget = Budget {
                limits,
                steps: 0,
                bytes: 0,
            };
            let window: Option<m::PlanWindow> = ($plan_window)(&mut budget, &mut p)?;
            let steps = p
                .steps
                .into_iter()
                .map(|item| {
                    Ok(match item {
                        wt::PlanItem::Step(s) => m::Item::Step(budget.step(s)?),
                        wt::PlanItem::Group(g) => m::Item::Group(m::Group {
                            group: budget.string(g.id)?,
                            title: budget.string(g.title)?,
                            steps: g
                                .steps
                                .into_iter()
                                .map(|s| budget.step(s))
                                .collect::<Result<_, String>>()?,
                        }),
                    })
                })
                .collect::<Result<_, String>>()?;
            let cleanup = p
                .cleanup
                .into_iter()
                .map(|s| budget.step(s))
                .collect::<Result<_, String>>()?;
            if p.invariants.len() > limits.max_steps {
                return Err(format!(
                    "{} invariants (the limit is {})",
                    p.invariants.len(),
                    limits.max_steps
                ));
            }
            let invariants = p
                .invariants
                .into_iter()
                .map(|$inv| {
                    let $b = &mut budget;
                    let when: Vec<m::Condition> = $invariant_when?;
                    Ok(m::Invariant {
                        id: $b.string($inv.id)?,
                        description: $b.string($inv.description)?,
                        target: $inv.target.map(|t| $b.string(t)).transpose()?,
                        condition: $b.condition($inv.condition)?,
                        when,
                    })
                })
                .collect::<Result<_, String>>()?;
            if p.warnings.len() > 100 {
                return Err(format!("{} warnings (the limit is 100)", p.warnings.len()));
            }
            let warnings = p
                .warnings
                .into_iter()
                .map(|w| budget.string(w))
                .collect::<Result<_, String>>()?;
            Ok(m::Plan {
                steps,
                cleanup,
                invariants,
                warnings,
                window,
            })
        }

        /// Counts a plan's steps and bytes against the limits while converting it.
        struct Budget<'a> {
            limits: &'a Limits,
            steps: usize,
            bytes: usize,
        }

        impl Budget<'_> {
            fn string(&mut self, s: String) -> Result<String, String> {
                self.bytes += s.len();
                if s.len() > self.limits.max_string_bytes {
                    return Err(format!(
                        "a string of {} bytes (the limit is {})",
                        s.len(),
                        self.limits.max_string_bytes
                    ));
                }
                if self.bytes > self.limits.max_plan_bytes {
                    return Err(format!(
                        "more than {} bytes of text",
                        self.limits.max_plan_bytes
                    ));
                }
                Ok(s)
            }

            fn strings(&mut self, v: Vec<String>) -> Result<Vec<String>, String> {
                v.into_iter().map(|s| self.string(s)).collect()
            }

            fn location(&mut self, p: wty::Path) -> Result<m::Location, String> {
                Ok(m::Location {
                    root: self.string(p.root)?,
                    path: self.string(p.path)?,
                })
            }

            fn step(&mut self, s: wt::Step) -> Result<m::Step, String> {
                self.steps += 1;
                if self.steps > self.limits.max_steps {
                    return Err(format!("more than {} steps", self.limits.max_steps));
                }
                let commits_set = ($commits_set)(&s);
                let no_kill = ($no_kill)(&s);
                Ok(m::Step {
                    id: self.string(s.id)?,
                    title: self.string(s.title)?,
                    target: s.target.map(|t| self.string(t)).transpose()?,
                    on_error: match s.on_error {
                        wt::OnError::Abort => m::OnError::Abort,
                        wt::OnError::Continue => m::OnError::Continue,
                    },
                    timeout_ms: s.timeout_ms,
                    retries: s.retries,
                    when: s
                        .when
                        .into_iter()
                        .map(|c| self.condition(c))
                        .collect::<Result<_, _>>()?,
                    commits_set,
                    no_kill,
                    action: self.action(s.action)?,
                })
            }

            fn exec(&mut self, e: wt::Exec) -> Result<m::Exec, String> {
                Ok(m::Exec {
                    command: self.string(e.command)?,
                    args: self.strings(e.args)?,
                    cwd: e.cwd.map(|c| self.string(c)).transpose()?,
                    success_codes: e.success_codes,
                })
            }

            fn state(s: wty::ServiceState) -> m::ServiceState {
                match s {
                    wty::ServiceState::Running => m::ServiceState::Running,
                    wty::ServiceState::Stopped => m::ServiceState::Stopped,
                }
            }

            fn condition(&mut self, c: wt::Condition) -> Result<m::Condition, String> {
                let $b = self;
                Ok(match c {
                    wt::Condition::Exists(p) => m::Condition::Exists {
                        path: $b.location(p)?,
                    },
                    wt::Condition::Absent(p) => m::Condition::Absent {
                        path: $b.location(p)?,
                    },
                    wt::Condition::FreeSpaceAtLeast(f) => m::Condition::FreeSpaceAtLeast {
                        root: $b.string(f.root)?,
                        bytes: f.bytes,
                    },
                    wt::Condition::ServiceIs(s) => m::Condition::ServiceIs {
                        service: $b.string(s.service)?,
                        state: Budget::state(s.state),
                    },
                    wt::Condition::CommandSucceeds(e) => m::Condition::CommandSucceeds($b.exec(e)?),
                    wt::Condition::StepStarted(id) => m::Condition::StepStarted {
                        step: $b.string(id)?,
                    },
                    wt::Condition::StepNotSucceeded(id) => m::Condition::StepNotSucceeded {
                        step: $b.string(id)?,
                    },
                    $($conditions)*
                })
            }

            fn action(&mut self, a: wt::Action) -> Result<m::Action, String> {
                let $b = self;
                Ok(match a {
                    wt::Action::WriteFile(w) => {
                        if w.contents.len() > $b.limits.max_write_file_bytes {
                            return Err(format!(
                                "a write-file of {} bytes (the limit is {})",
                                w.contents.len(),
                                $b.limits.max_write_file_bytes
                            ));
                        }
                        m::Action::WriteFile {
                            path: $b.location(w.path)?,
                            contents: w.contents,
                        }
                    }
                    wt::Action::Remove(p) => m::Action::Remove {
                        path: $b.location(p)?,
                    },
                    wt::Action::Rename(r) => m::Action::Rename {
                        from: $b.location(r.from)?,
                        to: $b.location(r.to)?,
                    },
                    wt::Action::EnsureDir(p) => m::Action::EnsureDir {
                        path: $b.location(p)?,
                    },
                    wt::Action::CopyTree(c) => m::Action::CopyTree {
                        from: $b.location(c.from)?,
                        to: $b.location(c.to)?,
                    },
                    wt::Action::Exec(e) => m::Action::Exec($b.exec(e)?),
                    wt::Action::Service(s) => m::Action::Service {
                        service: $b.string(s.service)?,
                        state: Budget::state(s.state),
                    },
                    wt::Action::WaitUntil(w) => m::Action::WaitUntil {
                        condition: $b.condition(w.condition)?,
                        interval_ms: w.interval_ms,
                    },
                    wt::Action::Verify(v) => m::Action::Verify {
                        check: match v {
                            wt::Verify::CopyMatches(c) => m::VerifyCheck::CopyMatches {
                                from: $b.location(c.from)?,
                                to: $b.location(c.to)?,
                            },
                            wt::Verify::PairedFiles(p) => m::VerifyCheck::PairedFiles {
                                dir: $b.location(p.dir)?,
                                suffix: $b.string(p.suffix)?,
                                partner_suffix: $b.string(p.partner_suffix)?,
                            },
                            wt::Verify::EsePages(p) => m::VerifyCheck::EsePages {
                                path: $b.location(p)?,
                            },
                            $($verifies)*
                        },
                    },
                    wt::Action::Assert(a) => m::Action::Assert {
                        condition: $b.condition(a.condition)?,
                        message: $b.string(a.message)?,
                    },
                    wt::Action::Manual(mn) => m::Action::Manual {
                        instructions: $b.string(mn.instructions)?,
                        reference: mn.reference.map(|r| $b.string(r)).transpose()?,
                    },
                    $($actions)*
                })
            }
        }


        /// Instantiates the plugin in `store` and asks for its description.
        pub(in crate::runtime) fn call_describe(
            pre: &PluginWorldPre<State>,
            store: &mut wasmtime::Store<State>,
        ) -> wasmtime::Result<Description> {
            let world = pre.instantiate(&mut *store)?;
            let raw = world.hokan_policy_plugin().call_describe(&mut *store)?;
            Ok(description(raw))
        }

        /// Instantiates the plugin in `store` and asks for a plan: the plugin's refusal, or
        /// the plan (`Err` naming what was over the limits).
        pub(in crate::runtime) fn call_plan(
            pre: &PluginWorldPre<State>,
            store: &mut wasmtime::Store<State>,
            req: &PlanRequest,
            limits: &Limits,
        ) -> wasmtime::Result<Result<Result<m::Plan, String>, PlanRefusal>> {
            let world = pre.instantiate(&mut *store)?;
            let raw = world
                .hokan_policy_plugin()
                .call_plan(&mut *store, &request(req))?;
            Ok(match raw {
                Err(r) => Err(refusal(r)),
                Ok(p) => Ok(plan(p, limits)),
            })
        }
    };
}
pub(crate) use contract;

/// A plugin's component, pre-instantiated against the bindings of the version it speaks.
pub(super) enum Pre {
    /// `hokan:policy@0.5.0`.
    V0_5(v0_5::PluginWorldPre<State>),
    /// `hokan:policy@0.6.0`.
    V0_6(v0_6::PluginWorldPre<State>),
    /// `hokan:policy@0.7.0`.
    V0_7(v0_7::PluginWorldPre<State>),
    /// `hokan:policy@0.8.0`.
    V0_8(v0_8::PluginWorldPre<State>),
}

impl Pre {
    /// The bindings of `version` (one of [`ACCEPTED`]) over `pre`; `None` for another version.
    pub(super) fn new(
        version: &str,
        pre: wasmtime::component::InstancePre<State>,
    ) -> Option<wasmtime::Result<Pre>> {
        Some(match version {
            "0.5.0" => v0_5::PluginWorldPre::new(pre).map(Pre::V0_5),
            "0.6.0" => v0_6::PluginWorldPre::new(pre).map(Pre::V0_6),
            "0.7.0" => v0_7::PluginWorldPre::new(pre).map(Pre::V0_7),
            "0.8.0" => v0_8::PluginWorldPre::new(pre).map(Pre::V0_8),
            _ => return None,
        })
    }

    /// The version's `describe`.
    pub(super) fn describe(
        &self,
        store: &mut wasmtime::Store<State>,
    ) -> wasmtime::Result<Description> {
        match self {
            Pre::V0_5(p) => v0_5::call_describe(p, store),
            Pre::V0_6(p) => v0_6::call_describe(p, store),
            Pre::V0_7(p) => v0_7::call_describe(p, store),
            Pre::V0_8(p) => v0_8::call_describe(p, store),
        }
    }

    /// The version's `plan`, converted.
    pub(super) fn plan(
        &self,
        store: &mut wasmtime::Store<State>,
        req: &PlanRequest,
        limits: &Limits,
    ) -> wasmtime::Result<Result<Result<m::Plan, String>, PlanRefusal>> {
        match self {
            Pre::V0_5(p) => v0_5::call_plan(p, store, req, limits),
            Pre::V0_6(p) => v0_6::call_plan(p, store, req, limits),
            Pre::V0_7(p) => v0_7::call_plan(p, store, req, limits),
            Pre::V0_8(p) => v0_8::call_plan(p, store, req, limits),
        }
    }
}

/// Serves the imports of every accepted version: each under its own versioned names.
pub(super) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<State>,
) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    v0_5::PluginWorld::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    v0_6::PluginWorld::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    v0_7::PluginWorld::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    v0_8::PluginWorld::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    Ok(())
}

/// `backup-size` (since 0.6.0), the same in every version that has it.
macro_rules! backup_size {
    () => {
        fn backup_size(&mut self, p: wty::Path) -> Result<u64, wf::FactError> {
            self.timed(|f| f.backup_size(&location(p)))
                .map_err(fact_error)
        }
    };
}
pub(crate) use backup_size;

/// `site-time` (since 0.8.0): an instant in the site's time zone, by the host's own time zone
/// database, so a plugin needs none.
macro_rules! site_time {
    () => {
        fn site_time(&mut self, ms: i64) -> Result<wty::LocalTime, wf::FactError> {
            let tz = self.facts.topology().timezone;
            let zoned = jiff::Timestamp::from_millisecond(ms)
                .map_err(|e| wf::FactError::Io(format!("{ms} ms is not an instant: {e}")))?
                .in_tz(&tz)
                .map_err(|e| {
                    wf::FactError::Io(format!("the site's time zone `{tz}` is not known: {e}"))
                })?;
            Ok(wty::LocalTime {
                year: zoned.year(),
                month: zoned.month() as u8,
                day: zoned.day() as u8,
                hour: zoned.hour() as u8,
                minute: zoned.minute() as u8,
                second: zoned.second() as u8,
            })
        }
    };
}
pub(crate) use site_time;
