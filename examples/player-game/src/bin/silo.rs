//! A silo process hosting the Player and Game grains: a host binary of the `granary` command
//! (`granary_cli::main_with`), so it runs a silo when given no command (or `silo`), configured by
//! `GRANARY_*` environment variables and `--config FILE` (see `granary-node`), and inspects the
//! cluster with its other commands (`status`, `grain player alice`, `events tail <stream>`):
//!
//! ```sh
//! GRANARY_CLUSTER=demo GRANARY_SECRET=0123456789abcdef0123456789abcdef \
//! GRANARY_REDIS=redis://127.0.0.1:6379 GRANARY_NAME=a GRANARY_LISTEN=127.0.0.1:11111 \
//! GRANARY_BOOTSTRAP=create cargo run -p example-player-game --bin silo
//! ```
//!
//! (`GRANARY_BOOTSTRAP=create` for the first silo of a new cluster; without it a silo only
//! joins a cluster that exists.)
//!
//! Its silos host the Player, Game and Matchmaker grains and run the example's authorization
//! filter (`example_player_game::host`).

fn main() {
    granary_cli::main_with(example_player_game::host)
}
