//! `soak [--faults N] [--seed S] [--netns|--local] …`: the chaos soak — a broker pair under N
//! random faults, judged at the end ([`edgebroker_tools::harness::soak_program`]).

use std::process::ExitCode;

use edgebroker::cli;
use edgebroker_tools::harness::soak_program::{self, Outcome};

fn main() -> ExitCode {
    let mut outcome = Outcome::Passed;
    let code = cli::run(&soak_program::COMMAND, |args| {
        outcome = soak_program::run(&args)?;
        Ok(())
    });
    match outcome {
        _ if code != ExitCode::SUCCESS => code,
        Outcome::Passed => ExitCode::SUCCESS,
        Outcome::Violated => ExitCode::FAILURE,
        // The shell's convention for a program ended by SIGINT.
        Outcome::Interrupted => ExitCode::from(130),
    }
}
