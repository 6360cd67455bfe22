//! What a run is: the spec journaled as its first record, so that recovery needs neither the
//! plugin nor the policy, and the set it writes or reads.

use super::*;

/// The backup set a run writes or reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSpec {
    /// Its id.
    pub id: String,
    /// The job's sets directory.
    pub job_dir: PathBuf,
    /// The run writes it (a backup) rather than reads it.
    pub writes: bool,
    /// The newest good set before this one, whose unchanged files are linked.
    pub previous: Option<String>,
    /// The retention applied after a successful backup.
    pub retention: Retention,
    /// The site's time zone, whose days, weeks, months and years retention counts (journals
    /// written before it was recorded count in UTC, as they did).
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".into()
}

impl SetSpec {
    /// Where the set is while it is written.
    pub fn partial(&self) -> PathBuf {
        self.job_dir.join(sets::partial_name(&self.id))
    }

    /// Where the complete set is.
    pub fn path(&self) -> PathBuf {
        self.job_dir.join(&self.id)
    }
}

/// Everything a run needs, journaled as its first record so that recovery does not need the
/// plugin or the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The run's id.
    pub run: String,
    /// The product instance it locks (`<site>.<plugin>.<servers>`).
    pub instance: String,
    /// The process that ran it.
    pub pid: u32,
    /// When it started (RFC 3339).
    pub started: String,
    /// The hokan that ran it.
    pub hokan_version: String,
    /// The validated plan.
    pub document: PlanDocument,
    /// Root names to directories; for a backup, `set` is the partial set.
    pub roots: BTreeMap<String, PathBuf>,
    /// The policy's command mappings.
    pub commands: BTreeMap<String, CommandMap>,
    /// The policy's service mappings.
    pub services: BTreeMap<String, ServiceMap>,
    /// Server name to transport name, for the servers that have one.
    pub transports: BTreeMap<String, String>,
    /// Server name to address (journals written before 0.3 lack it).
    #[serde(default)]
    pub addresses: BTreeMap<String, String>,
    /// Roots on servers reached over ssh: root name to server name (their paths in `roots` are
    /// paths on that server).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remote_roots: BTreeMap<String, String>,
    /// How each server reached over ssh is reached (recovery takes it from the current policy).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ssh: BTreeMap<String, crate::policy::Ssh>,
    /// The set written or read.
    pub set: Option<SetSpec>,
    /// The policy the run read, for its recovery to resolve commands, services and roots from
    /// (journals written before 0.6 lack it: recover them with `hokan recover POLICY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// What the built-in safety invariants need to know of the product (journals written before
    /// 0.6 lack it, and get only the plan's own invariants).
    #[serde(default)]
    pub safety: SafetySpec,
}

/// Where a run's policy is: the file read, and the file it stands for (they differ for the
/// daemon's runs, which read the version the daemon validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// The text that was read.
    pub file: PathBuf,
    /// The file it stands for: relative paths in it are relative to this one's directory.
    pub origin: PathBuf,
}

/// What the plugin says about the product that the safety invariants check at a run's end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetySpec {
    /// Files whose existence means the product is in maintenance mode.
    pub markers: Vec<Location>,
    /// The operation's purpose is to leave the product in maintenance mode.
    pub leaves_maintenance: bool,
}

/// A service the plan starts or stops, as the run found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSeen {
    /// The service.
    pub service: String,
    /// The server its steps target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether its status command said it was running.
    pub running: bool,
}
