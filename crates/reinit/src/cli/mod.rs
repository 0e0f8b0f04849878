//! Subcommand implementations.

pub mod apply;
pub mod args;
pub mod catalog;
pub mod inspect;

use reinit::Error;

use args::{Cli, Command};

pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Some(Command::Apply(args)) => apply::run(args),
        Some(Command::Inspect(args)) => inspect::run(args),
        Some(Command::Schemes(args)) => catalog::run(args),
        Some(Command::Verify(args)) => verify(args),
        None => apply::run(cli.apply),
    }
}

#[cfg(feature = "verify")]
fn verify(args: args::VerifyArgs) -> Result<(), Error> {
    verify::run(args)
}

#[cfg(feature = "verify")]
mod verify;

#[cfg(not(feature = "verify"))]
fn verify(_: args::VerifyArgs) -> Result<(), Error> {
    Err(Error::Usage(
        "this build has no `verify` (built without the `verify` feature)".into(),
    ))
}
