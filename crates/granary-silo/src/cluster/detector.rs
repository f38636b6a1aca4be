//! Failure detection: silos probe each other over the transport and vote in the membership
//! table; enough recent votes declare a silo dead, and dead is final.
//!
//! - Every `probe_interval`, a silo writes its heartbeat (time and activation count, read by
//!   least-loaded placement) and pings every other active silo. After `missed_probes`
//!   failures in a row it adds its vote (a [`Suspicion`]) to that silo's row, by
//!   compare-and-set. The vote that reaches `votes_for_death` (or the number of silos able to
//!   vote, if fewer: one in a two-silo cluster) marks the row `Dead` in the same write.
//! - A silo that reads its own row as `Dead` stops serving: it admits no call and deactivates
//!   its grains. Its claims are taken over by the next activations elsewhere, and its commits
//!   are fenced. A restarted process joins under a new generation.
//! - When the table cannot be read or written (Redis down), nobody is declared dead: silos keep
//!   serving what they host.
//! - A joining silo becomes `Active` only after it reached every active silo and each of them
//!   reached it back; members that do not answer within a few probe intervals get its vote
//!   instead (rows left by a crashed cluster do not block a restart).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::join_all;
use granary_core::provider::{Heartbeat, MembershipEntry, SiloStatus, Suspicion};
use granary_core::{SiloId, StorageError, codec};
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterMessage};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Cluster {
    /// Whether the silo at `addr` answers a probe within `probe_timeout`.
    pub(crate) async fn ping(&self, addr: SocketAddr) -> bool {
        let Ok(ping) = codec::encode(&ClusterMessage::Ping) else {
            return false;
        };
        self.transport
            .request(addr, ping, self.config.probe_timeout)
            .await
            .is_ok()
    }

    /// Whether the silo at `addr` reaches this one back.
    async fn probed_back(&self, addr: SocketAddr) -> bool {
        let Ok(ask) = codec::encode(&ClusterMessage::ProbeBack(self.address)) else {
            return false;
        };
        matches!(
            self.transport
                .request(addr, ask, self.config.probe_timeout * 3)
                .await
                .as_deref(),
            Ok([1])
        )
    }

    /// The other active silos and their addresses, as last read.
    fn others(&self) -> Vec<(SiloId, SocketAddr)> {
        let view = self.view.read();
        view.active
            .iter()
            .filter(|s| **s != self.me)
            .filter_map(|s| Some((s.clone(), view.rows.get(s)?.1?)))
            .collect()
    }

    /// Checks two-way connectivity with every active silo before this one becomes active;
    /// votes against the members that stay unreachable.
    pub(crate) async fn join(&self) {
        let attempts = self.config.missed_probes.max(1) * 2;
        let mut pending = self.others();
        for _ in 0..attempts {
            let checks = join_all(pending.iter().map(|(silo, addr)| async move {
                let ok = self.ping(*addr).await && self.probed_back(*addr).await;
                (silo.clone(), *addr, ok)
            }))
            .await;
            pending = checks
                .into_iter()
                .filter(|(_, _, ok)| !ok)
                .map(|(silo, addr, _)| (silo, addr))
                .collect();
            if pending.is_empty() {
                return;
            }
            tokio::time::sleep(self.config.probe_interval).await;
        }
        for (silo, _) in pending {
            tracing::warn!(me = %self.me, %silo, "member unreachable while joining: voting it dead");
            if let Err(err) = self.suspect(&silo).await {
                tracing::warn!(%silo, cause = %err, "could not vote");
            }
        }
    }

    /// Probes the other active silos every `probe_interval` until `stop`.
    pub(crate) async fn probe_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut missed: HashMap<SiloId, u32> = HashMap::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.probe_interval) => {}
                () = stop.cancelled() => return,
            }
            self.beat().await;
            let others = self.others();
            let this = &*self;
            let results = join_all(
                others
                    .iter()
                    .map(|(silo, addr)| async move { (silo.clone(), this.ping(*addr).await) }),
            )
            .await;
            missed.retain(|silo, _| others.iter().any(|(s, _)| s == silo));
            for (silo, answered) in results {
                if answered {
                    missed.remove(&silo);
                    continue;
                }
                let count = missed.entry(silo.clone()).or_default();
                *count += 1;
                tracing::debug!(me = %self.me, %silo, missed = *count, "probe missed");
                if *count >= self.config.missed_probes {
                    match self.suspect(&silo).await {
                        Ok(()) => {
                            let _ = self.refresh().await;
                        }
                        Err(err) => {
                            // The table is out of reach: nobody is declared dead meanwhile.
                            tracing::warn!(%silo, cause = %err, "could not vote");
                        }
                    }
                }
            }
        }
    }

    /// Writes this silo's heartbeat: the time, its activations (in all and per type) and
    /// how many calls it has handled.
    async fn beat(&self) {
        let Some(runtime) = self.runtime.upgrade() else {
            return;
        };
        let by_type = crate::metrics::activations_by_type(&runtime);
        let beat = Heartbeat {
            at_ms: now_ms(),
            activations: by_type.iter().map(|(_, n)| n).sum(),
            calls: runtime.metrics.calls_total(),
            by_type,
        };
        drop(runtime);
        if let Err(err) = self.membership.heartbeat(&self.me, beat).await {
            tracing::debug!(cause = %err, "heartbeat not written");
        }
    }

    /// Adds this silo's vote against `suspect`; declares it dead if that makes enough votes.
    async fn suspect(&self, suspect: &SiloId) -> Result<(), StorageError> {
        let expiry = u64::try_from(self.config.vote_expiry.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..8 {
            let snapshot = self.membership.read().await?;
            let now = now_ms();
            let fresh = |e: &MembershipEntry| -> Vec<Suspicion> {
                e.suspicions
                    .iter()
                    .filter(|v| now.saturating_sub(v.at_ms) <= expiry)
                    .cloned()
                    .collect()
            };
            let Some(row) = snapshot.entries.iter().find(|e| e.silo == *suspect) else {
                return Ok(());
            };
            if row.status == SiloStatus::Dead {
                return Ok(());
            }
            let mut votes: Vec<Suspicion> = fresh(row)
                .into_iter()
                .filter(|v| v.observer != self.me)
                .collect();
            votes.push(Suspicion {
                observer: self.me.clone(),
                at_ms: now,
            });
            // Who can vote: active silos other than the suspect that are not suspected
            // themselves and sent a heartbeat lately (rows left by a crashed cluster send
            // none, so they do not count as voters that would never vote).
            let beats = self.membership.heartbeats().await.unwrap_or_default();
            let stale_after = u64::try_from(
                (self.config.probe_interval * (self.config.missed_probes + 2) * 2).as_millis(),
            )
            .unwrap_or(u64::MAX);
            let alive = |silo: &SiloId| {
                *silo == self.me
                    || beats
                        .iter()
                        .any(|(s, b)| s == silo && now.saturating_sub(b.at_ms) <= stale_after)
            };
            let voters = snapshot
                .entries
                .iter()
                .filter(|e| e.status == SiloStatus::Active && e.silo != *suspect)
                .filter(|e| fresh(e).is_empty() && alive(&e.silo))
                .count();
            let needed = usize::try_from(self.config.votes_for_death)
                .unwrap_or(usize::MAX)
                .min(voters.max(1));
            let dead = votes.len() >= needed;
            let entry = MembershipEntry {
                status: if dead { SiloStatus::Dead } else { row.status },
                suspicions: votes,
                ..row.clone()
            };
            match self.membership.upsert(entry, snapshot.version).await {
                Ok(_) => {
                    if dead {
                        tracing::warn!(me = %self.me, silo = %suspect, "declared a silo dead");
                    }
                    return Ok(());
                }
                Err(StorageError::Conflict { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Err(StorageError::Conflict {
            expected: 0,
            actual: 0,
        })
    }
}
