//! End-to-end tests: real plugin components in the real runtime.

mod adversarial;
mod cli;
mod conformance;
mod daemon;
mod exchange;
mod execute;
mod groupmax;
mod mailwise;
mod monitoring;
mod notify;
mod remote;
mod schedule;
mod simulate;
mod ssh;
mod standin_site;
mod teamware;

use hokan::runtime::{Limits, Runtime};

/// A runtime with its own compile cache, so tests do not share state with the user's cache.
fn runtime(limits: Limits) -> (Runtime, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new(cache.path(), limits).expect("runtime starts");
    (rt, cache)
}
