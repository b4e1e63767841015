//! `report`: judges one demo run from the subscriber's and test_publisher's output files and
//! draws it ([`edgebroker::report::program`]). Exit 0 on PASS, 1 on FAIL, 2 on a bad argument
//! or an unreadable file.

use std::process::ExitCode;

use edgebroker::cli::{self, Parsed};
use edgebroker::report::program::{self, Options};
use edgebroker::{Error, Result};

fn main() -> ExitCode {
    cli::init_logging();
    let verdict = || -> Result<bool> {
        match cli::parse(&cli::REPORT, std::env::args().skip(1))? {
            Parsed::Help => {
                println!("{}", cli::REPORT.usage());
                Ok(true)
            }
            Parsed::Run(args) => program::run(&Options::from_args(&args)?),
        }
    };
    match verdict() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Error::Usage(e)) => {
            eprintln!("report: error: {e}\n{}", cli::REPORT.usage());
            ExitCode::from(2)
        }
        // Not 1: that is the verdict FAIL.
        Err(e) => {
            eprintln!("report: error: {e}");
            ExitCode::from(2)
        }
    }
}
