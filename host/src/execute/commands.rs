//! Commands and services: which transport reaches a step's server, what a command learns of
//! its run, and services started, stopped and asked about through the policy's mappings.

use super::*;

impl Executor<'_> {
    pub(super) fn transport(&self, target: Option<&str>) -> Result<&dyn Transport, Failure> {
        match target {
            None => Ok(&Local),
            Some(server) => match self.spec.transports.get(server).map(String::as_str) {
                Some("local") => Ok(&Local),
                Some(other) => Err(Failure::new(format!(
                    "server `{server}` uses the transport `{other}`, which this hokan does not have"
                ))),
                None => Err(Failure::new(format!(
                    "server `{server}` has no transport configured; set `transport` in its [[servers]] table"
                ))),
            },
        }
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
        let args: Vec<String> = map.args.iter().chain(&e.args).cloned().collect();
        let cwd = match &e.cwd {
            Some(root) => Some(
                self.roots
                    .path(&Location::new(root.clone(), ""))
                    .map_err(|e| Failure::new(e.to_string()))?,
            ),
            None => None,
        };
        let out = self
            .transport(target)?
            .run(&Invocation {
                program: &map.program,
                args: &args,
                cwd: cwd.as_deref(),
                timeout: timeout_ms.map(Duration::from_millis),
                at_limit,
                env: &self.command_env(target),
            })
            .map_err(|err| {
                Failure::new(format!(
                    "{err} (the policy maps `{}` to it in jobs.{}.commands)",
                    e.command, self.spec.document.job
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
        let (program, args) = line
            .split_first()
            .ok_or_else(|| Failure::new("an empty command line in the policy"))?;
        let out = self
            .transport(target)?
            .run(&Invocation {
                program,
                args,
                cwd: None,
                timeout: timeout_ms.map(Duration::from_millis),
                at_limit: AtLimit::Kill,
                env: &self.command_env(target),
            })
            .map_err(|e| Failure::new(e.to_string()))?;
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
