//! The `reinit` binary: parse arguments, call the library, map errors to exit
//! codes. Everything else lives in the library crates.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // candle runs its elementwise ops on a pool of its own whose threads
    // busy-wait at a barrier; on a shared or busy machine that spinning took
    // over half of `verify`'s CPU time (ResNet-50 step 5.3 s → 3.6 s without
    // it, docs/candle-notes.md). Those ops are memory-bound, so they run on
    // one thread unless the user asks otherwise; the heavy kernels (conv,
    // matmul, BatchNorm, pooling, AdamW) use rayon with RAYON_NUM_THREADS.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: first statement of main, before any thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    let cli = cli::args::Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = err.to_string();
            eprintln!("reinit: error: {message}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !message.contains(&cause_text) {
                    eprintln!("  caused by: {cause_text}");
                }
                source = cause.source();
            }
            ExitCode::from(err.exit_code() as u8)
        }
    }
}
