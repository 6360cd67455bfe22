//! Runs a run spec for real, as `hokan run` would once it has planned: `run-spec SPEC.json STATE
//! [REFUSED-GATE]`. It prints the outcome as JSON. The conformance suite runs it as a child
//! process so that `HOKAN_TEST_KILL_AFTER` can kill it (SIGKILL) at a step, as a crash would.

use hokan::execute::{RunSpec, TestFaults, execute};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, spec, state, rest @ ..] = args.as_slice() else {
        eprintln!("usage: run-spec SPEC.json STATE [REFUSED-GATE]");
        return ExitCode::from(2);
    };
    let spec: RunSpec = match std::fs::read(spec)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{spec}: {e}");
            return ExitCode::from(2);
        }
    };
    let gates = hokan_e2e::Gates {
        refuse: rest.first().cloned(),
    };
    match execute(
        &spec,
        None,
        std::path::Path::new(state),
        &gates,
        &TestFaults::from_env(),
    ) {
        Ok(outcome) => {
            println!(
                "{}",
                serde_json::to_string(&outcome).expect("an outcome is JSON")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
