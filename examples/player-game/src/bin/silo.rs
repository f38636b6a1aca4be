//! A silo process hosting the Player and Game grains, configured by `GRANARY_*` environment
//! variables or a TOML file (see `granary-node`):
//!
//! ```sh
//! GRANARY_CLUSTER=demo GRANARY_SECRET=0123456789abcdef0123456789abcdef \
//! GRANARY_REDIS=redis://127.0.0.1:6379 GRANARY_NAME=a GRANARY_LISTEN=127.0.0.1:11111 \
//!   cargo run -p example-player-game --bin silo
//! ```

use example_player_game::{GameGrain, PlayerGrain};

#[tokio::main]
async fn main() {
    let result = async {
        let settings = granary_node::Settings::load(std::env::args().nth(1).as_deref())?;
        granary_node::run(settings, |silo| {
            silo.register::<PlayerGrain>().register::<GameGrain>()
        })
        .await
    }
    .await;
    if let Err(err) = result {
        eprintln!("silo: {err}");
        std::process::exit(err.exit_code());
    }
}
