//! hokan runs the backup, restore and maintenance procedures of many products on many sites.
//!
//! Each product's procedure is a WebAssembly plugin that, given read-only facts about the site,
//! returns a declarative [`plan::Plan`]. This crate loads plugins safely ([`runtime`]), reads
//! site policies ([`policy`]), validates plans against what a site granted ([`plan`]),
//! turns a policy's job into a validated plan ([`planner`]), dry-runs plans ([`simulate`]),
//! carries them out for real ([`execute`]) and keeps backup sets ([`sets`]). The `hokan` binary is a thin
//! command line over these.
#![deny(missing_docs)]

pub mod describe;
pub mod drive;
pub mod durable;
pub mod ese;
pub mod execute;
pub mod exit;
pub mod facts;
pub mod lint;
pub mod notify;
pub mod plan;
pub mod planner;
pub mod policy;
pub mod remote;
pub mod runtime;
pub mod schedule;
pub mod sets;
pub mod simulate;
pub mod test_hooks;
pub mod tree;
