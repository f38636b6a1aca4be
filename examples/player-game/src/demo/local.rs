//! The default cluster: silos in this process, each on its own thread and tokio runtime (as
//! if each were its own process), talking over TCP on loopback and sharing in-memory providers
//! that stand in for Redis. Killing a silo stops its runtime at once: no deactivation, no
//! goodbye in the membership table; the others find out by probing it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use granary::provider::{MembershipTable, MemoryMembership, MemoryStore, Outbox};
use granary::{ClusterConfig, Silo, SiloConfig};
use granary_events::EventEnvelope;
use tokio::sync::oneshot;

/// How a silo thread ends.
enum Stop {
    /// A crash: the runtime stops between two polls and drops every task.
    Kill,
    /// A clean shutdown: grains deactivate, the silo leaves the membership table.
    Shutdown,
}

struct LocalSilo {
    name: String,
    address: SocketAddr,
    stop: Option<oneshot::Sender<Stop>>,
    thread: Option<JoinHandle<()>>,
}

/// Silos in this process over shared in-memory providers.
pub(crate) struct LocalCluster {
    silos: Vec<LocalSilo>,
    store: Arc<MemoryStore>,
    membership: Arc<MemoryMembership>,
}

impl LocalCluster {
    /// Starts `count` silos named `silo-a`, `silo-b`, … on loopback, one after the other (each
    /// joins the ones before it).
    pub(crate) async fn start(count: usize, cluster: &str, secret: &[u8]) -> anyhow::Result<Self> {
        let store = Arc::new(MemoryStore::new());
        let membership = Arc::new(MemoryMembership::new());
        let mut silos = Vec::with_capacity(count);
        for index in 0..count {
            let name = crate::silo_name(index);
            let (ready_tx, ready_rx) = oneshot::channel();
            let (stop_tx, stop_rx) = oneshot::channel();
            let builder = example_player_game::host(Silo::builder())
                .config(SiloConfig {
                    name: name.clone(),
                    ..SiloConfig::default()
                })
                .storage(store.clone())
                .membership(membership.clone() as Arc<dyn MembershipTable>)
                .cluster(
                    ClusterConfig::new(
                        cluster,
                        secret.to_vec(),
                        SocketAddr::from(([127, 0, 0, 1], 0)),
                    )
                    .test_profile(),
                );
            let thread = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || run_silo(builder, ready_tx, stop_rx))
                .context("cannot start a silo thread")?;
            let address = ready_rx
                .await
                .context("the silo thread ended before its silo started")??;
            silos.push(LocalSilo {
                name,
                address,
                stop: Some(stop_tx),
                thread: Some(thread),
            });
        }
        Ok(Self {
            silos,
            store,
            membership,
        })
    }

    /// The silos' names, in start order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.silos.iter().map(|s| s.name.clone()).collect()
    }

    /// Where a client reaches the silos.
    pub(crate) fn gateways(&self) -> Vec<SocketAddr> {
        self.silos.iter().map(|s| s.address).collect()
    }

    /// The shared membership table.
    pub(crate) fn membership(&self) -> Arc<dyn MembershipTable> {
        self.membership.clone()
    }

    /// Kills silo `index`: its runtime stops at once, as if its process were killed.
    pub(crate) async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        self.end(index, Stop::Kill).await
    }

    /// Every event the cluster committed (the outbox of the in-memory store: nothing relays it
    /// away in this mode).
    pub(crate) async fn committed_events(&self) -> anyhow::Result<Vec<EventEnvelope>> {
        let entries = self.store.pending(usize::MAX).await?;
        entries
            .iter()
            .map(|e| EventEnvelope::from_entry(e).map_err(anyhow::Error::from))
            .collect()
    }

    /// Shuts the remaining silos down cleanly.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        for index in 0..self.silos.len() {
            self.end(index, Stop::Shutdown).await?;
        }
        Ok(())
    }

    async fn end(&mut self, index: usize, how: Stop) -> anyhow::Result<()> {
        let silo = &mut self.silos[index];
        if let Some(stop) = silo.stop.take() {
            let _ = stop.send(how);
        }
        if let Some(thread) = silo.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("silo thread {} panicked", silo.name))?;
        }
        Ok(())
    }
}

/// A silo's thread: a single-threaded runtime, so that once `block_on` returns none of the
/// silo's tasks runs again; dropping the runtime then drops them all, sockets included.
fn run_silo(
    builder: granary::SiloBuilder,
    ready: oneshot::Sender<anyhow::Result<SocketAddr>>,
    stop: oneshot::Receiver<Stop>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(err.into()));
            return;
        }
    };
    runtime.block_on(async move {
        let silo = match builder.start().await {
            Ok(silo) => silo,
            Err(err) => {
                let _ = ready.send(Err(err.into()));
                return;
            }
        };
        let Some(address) = silo.address() else {
            let _ = ready.send(Err(anyhow::anyhow!("the silo has no cluster address")));
            return;
        };
        let _ = ready.send(Ok(address));
        match stop.await {
            Ok(Stop::Shutdown) => {
                if let Err(err) = silo.shutdown().await {
                    tracing::warn!(cause = %err, "silo did not stop cleanly");
                }
            }
            // A kill, or the demo is gone: leave without a word. Dropping the silo only sets
            // flags; none of its tasks runs again to act on them.
            Ok(Stop::Kill) | Err(_) => drop(silo),
        }
    });
    // Dropping the runtime drops every task the silo had: its listener, links and activations.
    runtime.shutdown_timeout(Duration::ZERO);
}
