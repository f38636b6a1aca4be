//! `chaos-silo`: a silo process hosting [`ListGrain`] (`granary-node`, configured by
//! `GRANARY_*` variables; exit status 3 when declared dead) that applies the partition
//! commands the driver writes to its stdin (see `granary_chaos::PartitionCommand`).

use std::sync::Arc;

use granary_chaos::{ListGrain, NoSwitch, PartitionCommand, PartitionSwitch};
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
    let switch: Arc<dyn PartitionSwitch> = Arc::new(NoSwitch);
    let result = tokio::select! {
        result = granary_node::run(settings, |silo| silo.register::<ListGrain>()) => result,
        () = commands(switch) => Ok(()),
    };
    if let Err(err) = result {
        eprintln!("chaos-silo: {err}");
        std::process::exit(err.exit_code());
    }
}

/// Applies the commands read from stdin to `switch`; never returns (after stdin closed, it
/// waits forever).
async fn commands(switch: Arc<dyn PartitionSwitch>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let applied = PartitionCommand::parse(&line)
            .map_err(|e| e.to_string())
            .and_then(|command| switch.apply(&command));
        match applied {
            Ok(()) => eprintln!("chaos-silo: applied {line:?}"),
            Err(err) => eprintln!("chaos-silo: {line:?}: {err}"),
        }
    }
    std::future::pending::<()>().await;
}
