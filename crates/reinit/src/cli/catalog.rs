//! `reinit schemes`: prints the library's catalog (derived from the scheme table).

use reinit::Error;

use super::args::SchemesArgs;

pub fn run(args: SchemesArgs) -> Result<(), Error> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reinit::catalog()).unwrap_or_default()
        );
    } else {
        print!("{}", reinit::catalog_text());
    }
    Ok(())
}
