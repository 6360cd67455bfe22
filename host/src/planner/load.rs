//! Where a job's plugin is and loading it: the one part of planning that needs the runtime.

use super::PlanJobError;
use crate::policy::{Job, Policy};
use crate::runtime::{Plugin, Runtime};
use std::path::{Path, PathBuf};

/// Where plugins are found by name.
#[derive(Debug, Clone)]
pub struct PluginDir(pub PathBuf);

impl PluginDir {
    /// The plugin file a job names: `<dir>/<name>.wasm`, or a path relative to the policy file
    /// when the name contains `/` or ends in `.wasm`.
    pub fn resolve(&self, policy: &Policy, job: &Job) -> PathBuf {
        let p = Path::new(&job.plugin);
        if job.plugin.contains('/') || job.plugin.ends_with(".wasm") {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                policy.file.parent().unwrap_or(Path::new(".")).join(p)
            }
        } else {
            self.0.join(format!("{}.wasm", job.plugin))
        }
    }
}

/// Loads a job's plugin, honouring the policy's pin.
pub fn load_plugin(
    rt: &Runtime,
    dir: &PluginDir,
    policy: &Policy,
    job: &Job,
) -> Result<Plugin, PlanJobError> {
    let path = dir.resolve(policy, job);
    if !path.exists() {
        return Err(policy
            .job_error(
                job,
                "plugin",
                format!(
                    "the plugin file {} does not exist; build the plugins (`cargo xtask plugins`) or pass --plugin-dir",
                    path.display()
                ),
            )
            .into());
    }
    Ok(rt.load(&path, job.plugin_sha256.as_deref())?)
}
