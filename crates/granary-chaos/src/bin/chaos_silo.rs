//! `chaos-silo`: a silo process hosting [`ListGrain`] (`granary-node`, configured by
//! `GRANARY_*` variables; exit status 3 when declared dead) that applies the partition
//! commands the driver writes to its stdin (see `granary_chaos::PartitionCommand`).

use std::sync::{Arc, OnceLock};

use granary_chaos::{ListGrain, PartitionCommand, PartitionSwitch, TransportSwitch};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() {
    let settings = match granary_node::Settings::load(None) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("chaos-silo: {err}");
            std::process::exit(err.exit_code());
        }
    };
    // Set once the silo runs: the driver sends commands only after the ready line.
    let switch: Arc<OnceLock<Box<dyn PartitionSwitch>>> = Arc::default();
    let slot = switch.clone();
    let run = granary_node::run_with(
        settings,
        |silo| silo.register::<ListGrain>(),
        move |silo| {
            let _ = slot.set(TransportSwitch::of(silo));
        },
    );
    let result = tokio::select! {
        result = run => result,
        () = commands(switch) => Ok(()),
    };
    if let Err(err) = result {
        eprintln!("chaos-silo: {err}");
        std::process::exit(err.exit_code());
    }
    // Stopped cleanly (SIGTERM). Exit here: returning would drop the runtime, which waits for
    // the blocking read of stdin, open as long as the driver runs.
    std::process::exit(0);
}

/// Applies the commands read from stdin to `switch`; never returns (after stdin closed, it
/// waits forever).
async fn commands(switch: Arc<OnceLock<Box<dyn PartitionSwitch>>>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let applied = PartitionCommand::parse(&line)
            .map_err(|e| e.to_string())
            .and_then(|command| match switch.get() {
                Some(switch) => switch.apply(&command),
                None => Err("the silo is not running yet".to_owned()),
            });
        match applied {
            Ok(()) => eprintln!("chaos-silo: applied {line:?}"),
            Err(err) => eprintln!("chaos-silo: {line:?}: {err}"),
        }
    }
    std::future::pending::<()>().await;
}
