//! A host binary: the `granary` command with a game's grain types compiled in, so that its
//! `silo` command can run them (the `silo` binary of `example-player-game` is another).
//!
//! ```sh
//! export GRANARY_CLUSTER=demo GRANARY_SECRET=$(openssl rand -hex 32) GRANARY_REDIS=redis://127.0.0.1:6379
//! cargo run -p granary-cli --example host -- silo      # or --config silo.toml
//! cargo run -p granary-cli --example host -- grain host.greeter alice
//! ```

use granary::{GrainContext, grain};
use serde::{Deserialize, Serialize};

/// How many greetings a greeter gave.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Greetings {
    count: u64,
}

/// Greets, and counts (durably) how often it did.
#[derive(Debug, Default)]
pub(crate) struct GreeterGrain;

#[grain(name = "host.greeter", state = Greetings)]
impl GreeterGrain {
    /// Greets `name`, with the count of greetings so far (this one included).
    pub async fn greet(&self, ctx: &GrainContext<Self>, name: String) -> granary::Result<String> {
        let count = {
            let mut state = ctx.state();
            state.count += 1;
            state.count
        };
        ctx.write_state().await?;
        Ok(format!("hello {name} ({count})"))
    }
}

fn main() {
    granary_cli::main_with(|silo| silo.register::<GreeterGrain>())
}
