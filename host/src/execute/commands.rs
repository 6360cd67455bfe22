//! Commands and services: which transport reaches a step's server, what a command learns of
//! its run, and services started, stopped and asked about through the policy's mappings.

use super::*;

impl Executor<'_> {
    /// Runs one command line on the step's server: on the host (or a server whose transport
    /// is `local`), or through the agent of a server reached over ssh. `cwd` is a root (or a
    /// directory in one) on that same machine.
    fn run_on(
        &self,
        target: Option<&str>,
        argv: &[String],
        cwd: Option<&Location>,
        timeout_ms: Option<u64>,
        at_limit: AtLimit,
    ) -> Result<Output, Failure> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Failure::new("an empty command line in the policy"))?;
        let timeout = timeout_ms.map(Duration::from_millis);
        // A step that names no server runs where its working directory is: a plugin that
        // knows one machine (mailwise's) runs its commands beside its data, wherever that is.
        let cwd_server = cwd.and_then(|c| self.roots.server_of(&c.root));
        let target = target.or(cwd_server);
        let env = self.command_env(target);
        let on_ssh = match target {
            None => None,
            Some(server) => match self.spec.transports.get(server).map(String::as_str) {
                Some("local") => None,
                Some("ssh") => Some(server),
                Some(other) => {
                    return Err(Failure::new(format!(
                        "server `{server}` uses the transport `{other}`, which this hokan does not have"
                    )));
                }
                None => {
                    return Err(Failure::new(format!(
                        "server `{server}` has no transport configured; set `transport` in its [[servers]] table"
                    )));
                }
            },
        };
        if let Some(why) =
            cwd.and_then(|c| crate::plan::cwd_elsewhere(program, on_ssh, c, cwd_server))
        {
            return Err(Failure::new(why));
        }
        let Some(server) = on_ssh else {
            let cwd = match cwd {
                Some(c) => Some(
                    self.roots
                        .local
                        .path(c)
                        .map_err(|e| Failure::new(e.to_string()))?,
                ),
                None => None,
            };
            return Local
                .run(&Invocation {
                    program,
                    args,
                    cwd: cwd.as_deref(),
                    timeout,
                    at_limit,
                    env: &env,
                })
                .map_err(|e| Failure::new(e.to_string()));
        };
        self.run_remote(server, argv, cwd, timeout, at_limit, &env)
    }

    /// Runs a command through a server's agent, under a ledger id of its own. When the
    /// connection fails while it runs, hokan reconnects (with backoff, within the step's time
    /// limit) and asks the ledger about the same id: the command ran on, detached, and is
    /// waited for again, never started twice.
    fn run_remote(
        &self,
        server: &str,
        argv: &[String],
        cwd: Option<&Location>,
        timeout: Option<Duration>,
        at_limit: AtLimit,
        env: &[(&'static str, String)],
    ) -> Result<Output, Failure> {
        let link = self
            .roots
            .link(server, &self.spec.ssh)
            .map_err(Failure::new)?;
        let id = self.ledger_id();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let deadline = timeout.map(|t| Instant::now() + t);
        self.log(Record::RemoteCommand {
            server: server.to_string(),
            id: id.clone(),
            program: argv[0].clone(),
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
            never_kill: at_limit == AtLimit::Report,
            at: rfc3339(SystemTime::now()),
        });
        let mut lost = 0;
        loop {
            let session = link.session(deadline).map_err(|e| {
                Failure::new(format!(
                    "`{}` on `{server}` (ledger id {id}): {e}{}",
                    argv[0],
                    if lost > 0 {
                        "; the command may still be running there: `hokan recover` asks its ledger"
                    } else {
                        ""
                    }
                ))
            })?;
            let cmd = crate::remote::ssh::RemoteCommand {
                argv,
                cwd,
                env: &env,
                timeout: deadline.map(|d| d.saturating_duration_since(Instant::now())),
                at_limit,
            };
            match session.exec(&id, cmd) {
                Ok(out) => {
                    self.log(Record::RemoteExit {
                        server: server.to_string(),
                        id,
                        code: out.code,
                        note: None,
                        output: None,
                    });
                    return Ok(out);
                }
                Err(crate::remote::ssh::ActionError::Failed(e)) => {
                    return Err(Failure::new(format!(
                        "cannot run {} on `{server}`: {e}",
                        argv[0]
                    )));
                }
                Err(crate::remote::ssh::ActionError::Connection(e)) => {
                    lost += 1;
                    tracing::warn!(
                        "server `{server}`: the connection failed while `{}` ran ({e}); reconnecting to ask its ledger (id {id})",
                        argv[0]
                    );
                }
            }
        }
    }

    /// Before a recovery's cleanup: asks each server's ledger how every command the dead run
    /// started there ended, when the run did not learn it ([`Record::RemoteCommand`] without
    /// its [`Record::RemoteExit`]). One still running is waited for, within what is left of its
    /// time limit, and killed at it unless it must never be; how each ended is journaled. So a
    /// cleanup never races the command it undoes (maintenance released while the command
    /// setting it still runs, to set it again after), and the command's real exit is on record.
    /// A server that cannot be reached is asked again by the next recovery: its cleanup steps
    /// are deferred too.
    pub(super) fn settle_remote(&self, records: &[Record]) {
        let known: std::collections::BTreeSet<&str> = records
            .iter()
            .filter_map(|r| match r {
                Record::RemoteExit { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        for r in records {
            let Record::RemoteCommand {
                server,
                id,
                program,
                timeout_ms,
                never_kill,
                at,
            } = r
            else {
                continue;
            };
            if known.contains(id.as_str()) {
                continue;
            }
            // What is left of its limit, counted from when the dead run started it.
            let timeout = timeout_ms.map(|t| {
                let since = humantime::parse_rfc3339(at)
                    .ok()
                    .and_then(|at| SystemTime::now().duration_since(at).ok())
                    .unwrap_or_default();
                Duration::from_millis(t).saturating_sub(since)
            });
            let at_limit = if *never_kill {
                AtLimit::Report
            } else {
                AtLimit::Kill
            };
            let asked = self
                .roots
                .link(server, &self.spec.ssh)
                .and_then(|link| link.session(None))
                .and_then(|session| {
                    tracing::info!(
                        "asking the ledger on `{server}` how `{program}` (id {id}) ended; \
                         waiting for it if it still runs"
                    );
                    session
                        .settle(id, program, timeout, at_limit)
                        .map_err(|e| e.to_string())
                });
            let (code, note, output) = match asked {
                Ok(Some(out)) => (
                    out.code,
                    out.timed_out
                        .then(|| "killed at its time limit by the recovery".to_string()),
                    Some(out),
                ),
                Ok(None) => (
                    None,
                    Some("never started: the ledger has no such command".to_string()),
                    None,
                ),
                Err(e) => {
                    tracing::warn!(
                        "cannot ask the ledger on `{server}` about `{program}` (id {id}): {e}; \
                         the next `hokan recover` asks again"
                    );
                    continue;
                }
            };
            self.log(Record::RemoteExit {
                server: server.clone(),
                id: id.clone(),
                code,
                note,
                output,
            });
        }
    }

    /// A ledger id no other command of any run has: the run, this process, a count.
    fn ledger_id(&self) -> String {
        let n = self.commands_started.fetch_add(1, Ordering::SeqCst);
        let run: String = self
            .spec
            .run
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{run}.{}.{n}", std::process::id())
    }

    /// What a command learns about its run from its environment: which server the step
    /// targets, so that one wrapper script can serve every server of an instance.
    pub(super) fn command_env(&self, target: Option<&str>) -> Vec<(&'static str, String)> {
        let doc = &self.spec.document;
        let mut env = vec![
            ("HOKAN_SITE", doc.site.clone()),
            ("HOKAN_JOB", doc.job.clone()),
            ("HOKAN_OPERATION", doc.operation.clone()),
            ("HOKAN_RUN", self.spec.run.clone()),
            ("HOKAN_SERVER", target.unwrap_or_default().to_string()),
        ];
        if let Some(address) = target.and_then(|t| self.spec.addresses.get(t)) {
            env.push(("HOKAN_SERVER_ADDRESS", address.clone()));
        }
        env
    }

    pub(super) fn exec(
        &self,
        e: &Exec,
        target: Option<&str>,
        timeout_ms: Option<u64>,
        at_limit: AtLimit,
    ) -> Result<Output, Failure> {
        let map = self.spec.commands.get(&e.command).ok_or_else(|| {
            Failure::new(format!(
                "the command `{}` is not mapped in the policy (jobs.{}.commands)",
                e.command, self.spec.document.job
            ))
        })?;
        let argv: Vec<String> = std::iter::once(&map.program)
            .chain(&map.args)
            .chain(&e.args)
            .cloned()
            .collect();
        let cwd = e.cwd.as_ref().map(|root| Location::new(root.clone(), ""));
        let out = self
            .run_on(target, &argv, cwd.as_ref(), timeout_ms, at_limit)
            .map_err(|err| {
                Failure::new(format!(
                    "{} (the policy maps `{}` to it in jobs.{}.commands)",
                    err.message, e.command, self.spec.document.job
                ))
            })?;
        if out.timed_out {
            return Err(Failure {
                message: format!(
                    "`{}` was still running at its time limit of {} and was killed",
                    e.command,
                    dur(timeout_ms.unwrap_or(0))
                ),
                status: StepStatus::TimedOut,
                output: Some(out),
            });
        }
        Ok(out)
    }

    pub(super) fn run_line(
        &self,
        line: &[String],
        target: Option<&str>,
        timeout_ms: Option<u64>,
    ) -> Result<Output, Failure> {
        let out = self.run_on(target, line, None, timeout_ms, AtLimit::Kill)?;
        if out.timed_out {
            return Err(Failure {
                message: format!(
                    "`{}` ran past its time limit and was killed",
                    line.join(" ")
                ),
                status: StepStatus::TimedOut,
                output: Some(out),
            });
        }
        Ok(out)
    }

    pub(super) fn service_map(&self, service: &str) -> Result<&ServiceMap, Failure> {
        self.spec.services.get(service).ok_or_else(|| {
            Failure::new(format!(
                "the service `{service}` is not mapped in the policy (jobs.{}.services)",
                self.spec.document.job
            ))
        })
    }

    pub(super) fn service(
        &self,
        s: &Step,
        service: &str,
        state: ServiceState,
    ) -> Result<Done, Failure> {
        let map = self.service_map(service)?;
        let line = match state {
            ServiceState::Running => &map.start,
            ServiceState::Stopped => &map.stop,
        };
        let out = self.run_line(line, s.target.as_deref(), s.timeout_ms)?;
        let code = out.code.unwrap_or(-1);
        if code != 0 {
            return Err(Failure {
                message: format!("`{}` exited with {code}", line.join(" ")),
                status: StepStatus::Failed,
                output: Some(out),
            });
        }
        let want = state == ServiceState::Running;
        if map.status.is_some()
            && self.service_running(service, s.target.as_deref(), s.timeout_ms)? != want
        {
            return Err(Failure {
                message: format!(
                    "`{}` succeeded but the status command says `{service}` is {}",
                    line.join(" "),
                    if want { "not running" } else { "still running" }
                ),
                status: StepStatus::Failed,
                output: Some(out),
            });
        }
        Ok(Done {
            summary: format!(
                "service {service}: {}",
                if want { "started" } else { "stopped" }
            ),
            output: Some(out),
            warnings: Vec::new(),
        })
    }

    pub(super) fn service_running(
        &self,
        service: &str,
        target: Option<&str>,
        timeout_ms: Option<u64>,
    ) -> Result<bool, Failure> {
        let map = self.service_map(service)?;
        let status = map.status.as_ref().ok_or_else(|| {
            Failure::new(format!(
                "the service `{service}` has no `status` command in the policy (jobs.{}.services.{service}); add one so its state can be checked",
                self.spec.document.job
            ))
        })?;
        Ok(self.run_line(status, target, timeout_ms)?.code == Some(0))
    }
}
