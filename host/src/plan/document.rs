//! The plan document printed by `hokan plan --json`: a public, versioned interface.
//!
//! `docs/plan-format.md` describes it. Adding a field is compatible; renaming or removing one,
//! or changing its meaning, needs a new [`FORMAT_VERSION`].

use super::model::Plan;
use serde::{Deserialize, Serialize};

/// The version of the document's shape.
pub const FORMAT_VERSION: &str = "3";

/// Which plugin made the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    /// The plugin's name from `describe()`.
    pub name: String,
    /// The plugin's version from `describe()`.
    pub version: String,
    /// SHA-256 of the component file, hex.
    pub sha256: String,
}

/// A validated plan with what it was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDocument {
    /// Always [`FORMAT_VERSION`] for documents this host writes.
    pub format_version: String,
    /// The plugin.
    pub plugin: PluginRef,
    /// The site's name.
    pub site: String,
    /// The job's name.
    pub job: String,
    /// The operation planned.
    pub operation: String,
    /// The backup set the plan writes or reads, if any.
    pub set: Option<String>,
    /// Steps, cleanup, invariants and warnings.
    #[serde(flatten)]
    pub plan: Plan,
}
