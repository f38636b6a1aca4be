//! `granary-chaos`: the chaos suite's driver. Prints one JSON summary line; exits 0 when the
//! run found no violation, 1 when it found one, 2 when it could not run.

use clap::Parser;
use granary_chaos::{Options, run};

#[tokio::main]
async fn main() {
    let options = Options::parse();
    match run(&options).await {
        Ok(summary) => {
            let line = serde_json::to_string(&summary).expect("a summary serializes");
            #[allow(
                clippy::print_stdout,
                reason = "the summary line is the program's output"
            )]
            {
                println!("{line}");
            }
            std::process::exit(if summary.ok { 0 } else { 1 });
        }
        Err(err) => {
            eprintln!("granary-chaos: {err}");
            std::process::exit(2);
        }
    }
}
