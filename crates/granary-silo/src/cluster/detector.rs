//! Failure detection: silos probe each other over the transport and vote in the membership
//! table; enough recent votes declare a silo dead, and dead is final.
//!
//! - Every `probe_interval`, a silo pings every other active silo. After `missed_probes`
//!   failures in a row it adds its vote (a [`Suspicion`](granary_core::provider::Suspicion))
//!   to that silo's row, by compare-and-set. The vote that reaches the votes needed marks the
//!   row `Dead` in the same write. Who may vote and how many votes are needed is decided in
//!   [`super::verdict`]: the voters are the `Active` silos with fresh heartbeats (a suspected
//!   silo still votes; freshness is judged on the local monotonic clock), the votes needed are
//!   `votes_for_death`, fewer only when fewer silos can vote, and votes of dead or stale silos
//!   do not count. So one silo cut off from the others cannot vote them out.
//! - A probe names the silo it is meant for (name and generation), because an address may
//!   change hands: a silo killed and restarted at once on the same port (the default
//!   `GRANARY_LISTEN` is fixed) is a new generation there, and must not answer for its
//!   predecessor. Only the named silo answers "here"; any other answers "not me". A newer
//!   generation of the same name proves the probed process gone: the prober votes at once.
//!   Another silo counts as a missed probe, when the probe timeout has passed (as a silence
//!   would), so that detection never outruns the lease of a process that may still run
//!   elsewhere. Calls check the same (the link's peer, as its handshake named it): the
//!   successor does not take calls meant for its predecessor.
//! - Separately, the silo renews its lease (see [`super::lease`]): it writes its heartbeat
//!   (a sequence number, and the activation counts least-loaded placement reads) and reads the
//!   table. A silo whose lease ran out serves no call and casts no vote until it renews.
//! - A silo that reads its own row as `Dead` stops serving: it admits no call, stops probing,
//!   voting and renewing, closes its links and deactivates its grains. Its claims are taken
//!   over by the next activations elsewhere, and its commits are fenced. The others refuse its
//!   links. A restarted process joins under a new generation.
//! - When the table cannot be read or written (Redis down), nobody is declared dead, and every
//!   silo that cannot renew its lease stops serving until it can.
//! - A joining silo becomes `Active` only after it reached every active silo and each of them
//!   reached it back (each probe naming its target); a member superseded at its address gets
//!   its vote at once, and members that do not answer within a few probe intervals get its vote
//!   instead (rows left by a crashed cluster do not block a restart).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::join_all;
use granary_core::provider::{Heartbeat, MembershipEntry, SiloStatus};
use granary_core::{SiloId, StorageError, codec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::verdict::{self, Rules};
use super::wire::Outgoing;
use super::{Cluster, ProbeReply};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a probe found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The probed silo answered.
    Answered,
    /// No answer in time, no link, or another silo of another name at its address: a missed
    /// probe.
    Missed,
    /// A newer generation of the same silo answers at its address: the probed process is
    /// gone (it was restarted on the same address).
    Superseded,
}

impl Cluster {
    /// Probes `silo` at `addr`: whether it answers within `probe_timeout`, as itself.
    ///
    /// Another silo answering there counts as a missed probe, returned when the probe timeout
    /// has passed as a silence would be, so that detection never outruns the lease (see
    /// [`super::lease`]). A newer generation of the same silo proves the probed process gone:
    /// that is returned at once.
    pub(crate) async fn ping(&self, silo: &SiloId, addr: SocketAddr) -> Probe {
        let started = Instant::now();
        let Ok(ping) = codec::encode(&Outgoing::Ping(silo.clone())) else {
            return Probe::Missed;
        };
        let answer = match self
            .transport
            .request(addr, ping, self.config.probe_timeout)
            .await
        {
            Ok(answer) => answer,
            Err(err) => {
                tracing::trace!(me = %self.me, %silo, %addr, cause = %err, "probe not answered");
                return Probe::Missed;
            }
        };
        match codec::decode::<ProbeReply>(&answer) {
            Ok(ProbeReply::Here) => Probe::Answered,
            Ok(ProbeReply::NotMe(there)) => {
                let superseded =
                    there.name() == silo.name() && there.generation() > silo.generation();
                tracing::info!(
                    me = %self.me, %silo, %addr, %there, superseded,
                    "another silo answers at a member's address"
                );
                if superseded {
                    return Probe::Superseded;
                }
                tokio::time::sleep_until(started + self.config.probe_timeout).await;
                Probe::Missed
            }
            Err(err) => {
                tracing::warn!(
                    me = %self.me, %silo, %addr, cause = %err,
                    "unreadable probe answer (a silo of another build?): counted as missed"
                );
                Probe::Missed
            }
        }
    }

    /// Whether `silo` at `addr` reaches this one back.
    async fn probed_back(&self, silo: &SiloId, addr: SocketAddr) -> bool {
        let ask = Outgoing::ProbeBack {
            target: silo.clone(),
            asker: self.address,
        };
        let Ok(ask) = codec::encode(&ask) else {
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
                let probe = match self.ping(silo, *addr).await {
                    Probe::Answered if !self.probed_back(silo, *addr).await => Probe::Missed,
                    probe => probe,
                };
                (silo.clone(), *addr, probe)
            }))
            .await;
            let mut still = Vec::new();
            for (silo, addr, probe) in checks {
                match probe {
                    Probe::Answered => {}
                    Probe::Missed => still.push((silo, addr)),
                    Probe::Superseded => {
                        // This silo's predecessor, or another's: its process is gone.
                        tracing::warn!(me = %self.me, %silo, "member superseded at its address while joining: voting it dead");
                        if let Err(err) = self.suspect(&silo).await {
                            tracing::warn!(%silo, cause = %err, "could not vote");
                        }
                    }
                }
            }
            pending = still;
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

    /// Probes the other active silos every `probe_interval` until `stop`, or until this silo
    /// learns it was declared dead.
    pub(crate) async fn probe_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut missed: HashMap<SiloId, u32> = HashMap::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.probe_interval) => {}
                () = stop.cancelled() => return,
                () = self.dead.cancelled() => return,
            }
            let others = self.others();
            let this = &*self;
            let results =
                join_all(others.iter().map(|(silo, addr)| async move {
                    (silo.clone(), this.ping(silo, *addr).await)
                }))
                .await;
            missed.retain(|silo, _| others.iter().any(|(s, _)| s == silo));
            for (silo, probe) in results {
                let count = missed.entry(silo.clone()).or_default();
                match probe {
                    Probe::Answered => {
                        missed.remove(&silo);
                        continue;
                    }
                    Probe::Missed => *count += 1,
                    // Its process is gone: no need to wait for more probes.
                    Probe::Superseded => *count = (*count).max(self.config.missed_probes),
                }
                tracing::debug!(me = %self.me, %silo, missed = *count, ?probe, "probe missed");
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

    /// Renews this silo's lease every `renew_every` until `stop`, or until it learns it was
    /// declared dead: writes its heartbeat and reads the table at once (see [`super::lease`]).
    pub(crate) async fn lease_loop(self: Arc<Self>, stop: CancellationToken) {
        let every = super::lease::renew_every(self.lease.window(), self.config.probe_interval);
        let mut lapsed = false;
        loop {
            if self.host_gone() {
                return;
            }
            let started = Instant::now();
            let renewal = self.renew(started);
            tokio::pin!(renewal);
            // The renewal may hang (Redis unreachable): the lease runs out meanwhile.
            let renewed = loop {
                tokio::select! {
                    renewed = &mut renewal => break renewed,
                    () = tokio::time::sleep_until(self.lease.expires_at()), if !lapsed => {
                        if !self.lease.holds(Instant::now()) {
                            lapsed = true;
                            self.lease_lapsed();
                        }
                    }
                    () = stop.cancelled() => return,
                    () = self.dead.cancelled() => return,
                }
            };
            if renewed && lapsed && self.lease.holds(Instant::now()) {
                lapsed = false;
                self.lease_renewed();
            }
            tokio::select! {
                () = tokio::time::sleep_until(started + every) => {}
                () = tokio::time::sleep_until(self.lease.expires_at()), if !lapsed => {
                    if !self.lease.holds(Instant::now()) {
                        lapsed = true;
                        self.lease_lapsed();
                    }
                }
                () = stop.cancelled() => return,
                () = self.dead.cancelled() => return,
            }
        }
    }

    /// One renewal attempt begun at `started`: the heartbeat written and the table read, this
    /// silo's row not `Dead`. Returns whether the lease was renewed.
    async fn renew(&self, started: Instant) -> bool {
        let (written, read) = futures::join!(self.beat(), self.membership.read());
        match (written, read) {
            (Ok(()), Ok(snapshot)) => {
                let row = snapshot.entries.iter().find(|e| e.silo == self.me);
                if row.is_some_and(|e| e.status == SiloStatus::Dead) {
                    // Learnt here first: the refresh makes it final.
                    let _ = self.refresh().await;
                    return false;
                }
                self.lease.renew(started);
                true
            }
            (Err(err), _) | (_, Err(err)) => {
                tracing::debug!(silo = %self.me, cause = %err, "lease not renewed");
                false
            }
        }
    }

    /// Writes this silo's heartbeat: its sequence number, the time, its activations (in all
    /// and per type) and how many calls it has handled.
    async fn beat(&self) -> Result<(), StorageError> {
        let Some(host) = self.host() else {
            return Ok(());
        };
        let by_type = host.activations_by_type();
        let beat = Heartbeat {
            at_ms: now_ms(),
            seq: self.beats.fetch_add(1, Ordering::Relaxed) + 1,
            activations: by_type.iter().map(|(_, n)| n).sum(),
            calls: self.shared.metrics().calls_total(),
            by_type,
        };
        drop(host);
        self.membership.heartbeat(&self.me, beat).await
    }

    /// Adds this silo's vote against `suspect`; declares it dead if that makes enough votes
    /// (see [`super::verdict`]). A silo whose lease ran out, or that is dead, does not vote.
    async fn suspect(&self, suspect: &SiloId) -> Result<(), StorageError> {
        let rules = Rules {
            votes_for_death: self.config.votes_for_death,
            vote_expiry_ms: u64::try_from(self.config.vote_expiry.as_millis()).unwrap_or(u64::MAX),
        };
        for _ in 0..8 {
            if self.dead.is_cancelled() || !self.lease.holds(Instant::now()) {
                tracing::debug!(me = %self.me, %suspect, "not voting: lease out or dead");
                return Ok(());
            }
            let snapshot = self.membership.read().await?;
            if snapshot
                .entries
                .iter()
                .any(|e| e.silo == self.me && e.status == SiloStatus::Dead)
            {
                let _ = self.refresh().await;
                return Ok(());
            }
            let Some(row) = snapshot.entries.iter().find(|e| e.silo == *suspect) else {
                return Ok(());
            };
            if row.status == SiloStatus::Dead {
                return Ok(());
            }
            let beats = self.membership.heartbeats().await?;
            let now = Instant::now();
            let tally = {
                let mut liveness = self.liveness.lock();
                liveness.observe(beats.iter().map(|(s, b)| (s, b)), now);
                verdict::tally(
                    &snapshot.entries,
                    row,
                    &self.me,
                    |silo| liveness.is_fresh(silo, now),
                    rules,
                    now_ms(),
                )
            };
            tracing::debug!(
                me = %self.me, %suspect, votes = tally.counted, needed = tally.needed,
                voters = tally.voters, "voting"
            );
            let dead = tally.dead;
            let entry = MembershipEntry {
                status: if dead { SiloStatus::Dead } else { row.status },
                suspicions: tally.votes,
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
