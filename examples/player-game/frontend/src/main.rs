//! The front end's binary: connects to a cluster's gateways and serves the page and the
//! players' WebSocket sessions until Ctrl-C.
//!
//! ```sh
//! GRANARY_CLUSTER=demo GRANARY_SECRET=0123456789abcdef0123456789abcdef \
//!   cargo run -p player-game-frontend -- --gateway 127.0.0.1:11111 \
//!   --player alice=alice-token --player bob=bob-token
//! ```
#![allow(clippy::print_stdout, reason = "the address to open")]

use std::net::SocketAddr;

use anyhow::{Context, bail};
use clap::Parser;
use granary::{ClientConfig, ClusterClient};
use player_game_frontend::{Frontend, FrontendConfig};

/// Serves the Player/Game example to browsers.
#[derive(Debug, Parser)]
struct Args {
    /// The cluster id.
    #[arg(long, env = "GRANARY_CLUSTER")]
    cluster: String,
    /// The cluster secret.
    #[arg(long, env = "GRANARY_SECRET", hide_env_values = true)]
    secret: String,
    /// A gateway silo's address (repeat for more; the rest are learned from the cluster).
    #[arg(long = "gateway", required = true)]
    gateways: Vec<SocketAddr>,
    /// Where to serve the page and the sockets.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A player and its login token, as `NAME=TOKEN` (repeat for more).
    #[arg(long = "player", required = true)]
    players: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = FrontendConfig::default();
    for entry in &args.players {
        let Some((name, token)) = entry.split_once('=') else {
            bail!("--player {entry:?}: write NAME=TOKEN, as in --player alice=alice-token");
        };
        if name.is_empty() || token.is_empty() {
            bail!("--player {entry:?}: both the name and the token must be non-empty");
        }
        config = config.token(token, name);
    }
    let client = ClusterClient::connect(ClientConfig::new(
        &args.cluster,
        args.secret.as_bytes(),
        args.gateways,
    ))
    .await?;
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let frontend = Frontend::start(client.clone(), config, listener)?;
    println!("front end on http://{}/", frontend.addr());
    tokio::signal::ctrl_c().await?;
    frontend.stop().await;
    client.close().await;
    Ok(())
}
