//! The fault drivers: SIGKILL and restart a silo, SIGSTOP one until it is declared dead and
//! SIGCONT it (it must exit with status 3), restart Redis, partition one silo from the others,
//! restart every silo in turn gracefully (SIGTERM; it must exit with status 0).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::provider::{MembershipTable, SiloStatus};
use granary_redis::{Bootstrap, RedisConfig, RedisMembership, RedisStore};
use granary_testkit::redis_server::PrivateRedis;
use serde::Serialize;

use crate::cluster::{SiloProcess, SiloSpec, describe};
use crate::error::ChaosError;
use crate::history::{FaultKind, Injection};
use crate::partition::PartitionCommand;

/// The exit status of a silo the cluster declared dead.
pub const DEAD_STATUS: i32 = 3;

/// How faults are paced.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The longest a stopped or partitioned silo may take to be declared dead, and a silo
    /// declared dead to exit.
    pub detection: Duration,
    /// How long a stopped silo stays stopped at least (longer if it is not declared dead by
    /// then).
    pub stop_hold: Duration,
    /// How long a partition lasts.
    pub partition_hold: Duration,
    /// How long Redis stays down.
    pub redis_down: Duration,
    /// Whether a restarted silo listens on a new free port instead of its predecessor's
    /// address.
    pub new_address: bool,
}

/// What the faults did and what the cluster did about them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultReport {
    /// Faults injected, per kind.
    pub injected: BTreeMap<FaultKind, usize>,
    /// Exit of each silo SIGCONTed after it was declared dead (`exit 3` expected).
    pub zombie_exits: Vec<String>,
    /// Stopped silos that did not exit with status 3 after SIGCONT (a violation).
    pub zombies_not_dead: usize,
    /// Stopped silos the cluster did not declare dead within the detection time.
    pub stopped_not_declared_dead: usize,
    /// Partitions whose cut-off silo was declared dead (allowed: the others are a majority).
    pub partitioned_declared_dead: usize,
    /// Silos on the healthy side of a partition that were declared dead (a violation).
    pub healthy_declared_dead: Vec<String>,
    /// Silo processes that exited although no fault targeted them, with their status.
    pub unexpected_exits: Vec<String>,
    /// Silo processes started after the first ones.
    pub restarts: usize,
    /// Exit of each silo stopped by SIGTERM in a rolling restart (`exit 0` expected).
    pub graceful_exits: Vec<String>,
    /// Silos that did not exit with status 0 within the detection time after SIGTERM (a
    /// violation).
    pub unclean_stops: usize,
}

impl FaultReport {
    /// The violations among the faults: zombies that did not exit dead, healthy silos declared
    /// dead.
    #[must_use]
    pub fn violations(&self) -> usize {
        self.zombies_not_dead + self.healthy_declared_dead.len() + self.unclean_stops
    }
}

/// The silo processes of a run and what was done to them.
#[derive(Debug)]
pub struct Cluster {
    spec: SiloSpec,
    silos: Vec<SiloProcess>,
    incarnations: BTreeMap<String, usize>,
    /// The driver's connection to the run's Redis.
    pub store: Arc<RedisStore>,
    membership: RedisMembership,
    timing: Timing,
    t0: Instant,
    /// What happened.
    pub report: FaultReport,
    /// Every injection, in order.
    pub injections: Vec<Injection>,
}

impl Cluster {
    /// Starts `count` silos named `s0`, `s1`, ... one after the other, on the cluster
    /// `cluster` of the Redis at `redis`, and connects the driver's store once the first one
    /// created the cluster.
    ///
    /// # Errors
    /// [`ChaosError::SiloStart`] if a silo does not start, [`ChaosError::Connect`] if Redis
    /// cannot be reached.
    pub async fn start(
        spec: SiloSpec,
        count: usize,
        redis: &str,
        cluster: &str,
        timing: Timing,
    ) -> Result<Self, ChaosError> {
        let mut incarnations = BTreeMap::new();
        incarnations.insert("s0".to_owned(), 1);
        let first = SiloProcess::start(&spec, "s0", 1, None).await?;
        let config = RedisConfig::new(redis, cluster)
            .bootstrap(Bootstrap::RequireExisting)
            // Reading back a long run's event stream is one large reply.
            .command_timeout(Duration::from_secs(60));
        let store = Arc::new(RedisStore::connect(config).await?);
        let mut cluster = Self {
            spec,
            silos: vec![first],
            incarnations,
            membership: RedisMembership::new(store.clone()),
            store,
            timing,
            t0: Instant::now(),
            report: FaultReport::default(),
            injections: Vec::new(),
        };
        for i in 1..count {
            let silo = cluster.launch(&format!("s{i}"), None).await?;
            cluster.silos.push(silo);
        }
        cluster.report.restarts = 0;
        Ok(cluster)
    }

    /// Measures the times of injections from `t0` (the workload's start).
    pub fn begin(&mut self, t0: Instant) {
        self.t0 = t0;
    }

    /// The transport addresses of the running silos.
    #[must_use]
    pub fn addresses(&self) -> Vec<std::net::SocketAddr> {
        self.silos.iter().map(|s| s.addr).collect()
    }

    async fn launch(
        &mut self,
        name: &str,
        listen: Option<std::net::SocketAddr>,
    ) -> Result<SiloProcess, ChaosError> {
        let incarnation = self.incarnations.entry(name.to_owned()).or_default();
        *incarnation += 1;
        let incarnation = *incarnation;
        self.report.restarts += 1;
        SiloProcess::start(&self.spec, name, incarnation, listen).await
    }

    /// Replaces the silo at `index` by a new process of the same name on the same address, as
    /// a restarted server would be (on a free port if that one cannot be bound again, or with
    /// `--restart-address new`).
    async fn replace(&mut self, index: usize) -> Result<(), ChaosError> {
        let (name, addr) = (self.silos[index].name.clone(), self.silos[index].addr);
        self.silos[index].kill().await;
        let listen = (!self.timing.new_address).then_some(addr);
        self.silos[index] = match self.launch(&name, listen).await {
            Ok(silo) => silo,
            Err(_) => self.launch(&name, None).await?,
        };
        Ok(())
    }

    /// Restarts every silo that exited although no fault targeted it, and records it.
    ///
    /// # Errors
    /// [`ChaosError::SiloStart`] if a replacement does not start.
    pub async fn revive(&mut self) -> Result<(), ChaosError> {
        for index in 0..self.silos.len() {
            if let Some(status) = self.silos[index].exited() {
                let at = self.t0.elapsed().as_secs_f64();
                self.report.unexpected_exits.push(format!(
                    "{} {} (noticed at {at:.1} s)",
                    self.silos[index].id,
                    describe(Some(status))
                ));
                self.replace(index).await?;
            }
        }
        Ok(())
    }

    fn record(&mut self, fault: FaultKind) {
        self.injections.push(Injection {
            at: self.t0.elapsed(),
            fault,
        });
        *self.report.injected.entry(fault).or_default() += 1;
    }

    /// Injects `fault` once (on a random silo where it targets one).
    ///
    /// # Errors
    /// A [`ChaosError`] if a process cannot be signalled or restarted.
    pub async fn inject(
        &mut self,
        fault: FaultKind,
        redis: Option<&mut PrivateRedis>,
    ) -> Result<(), ChaosError> {
        self.revive().await?;
        let victim = fastrand::usize(0..self.silos.len());
        match fault {
            FaultKind::Kill => self.kill(victim).await,
            FaultKind::Stop => self.stop(victim).await,
            FaultKind::Partition => self.partition(victim).await,
            FaultKind::Rolling => self.rolling().await,
            FaultKind::RedisRestart => {
                let redis = redis.ok_or_else(|| {
                    ChaosError::Options("the redis-restart fault needs the run's own Redis".into())
                })?;
                self.record(fault);
                redis.kill();
                tokio::time::sleep(self.timing.redis_down).await;
                redis.restart().await;
                Ok(())
            }
        }
    }

    async fn kill(&mut self, victim: usize) -> Result<(), ChaosError> {
        self.record(FaultKind::Kill);
        self.silos[victim].signal("KILL")?;
        self.silos[victim].wait_exit(Duration::from_secs(10)).await;
        self.replace(victim).await
    }

    async fn stop(&mut self, victim: usize) -> Result<(), ChaosError> {
        self.record(FaultKind::Stop);
        self.silos[victim].signal("STOP")?;
        let resume = Instant::now() + self.timing.stop_hold;
        let id = self.silos[victim].id.clone();
        if !self.wait_dead(&id, self.timing.detection).await? {
            self.report.stopped_not_declared_dead += 1;
        }
        // Stopped past its detection: calls in flight through it, as a gateway, wait on it
        // until then.
        tokio::time::sleep_until(resume.into()).await;
        self.silos[victim].signal("CONT")?;
        let status = self.silos[victim].wait_exit(self.timing.detection).await;
        if status.and_then(|s| s.code()) != Some(DEAD_STATUS) {
            self.report.zombies_not_dead += 1;
        }
        self.report
            .zombie_exits
            .push(format!("{} {}", self.silos[victim].id, describe(status)));
        self.replace(victim).await
    }

    /// Restarts every silo in turn, as an operator's rolling restart does: SIGTERM, wait for
    /// the exit, start it again (on its address) and wait for its ready line (printed once it
    /// is active in the membership) before the next.
    async fn rolling(&mut self) -> Result<(), ChaosError> {
        self.record(FaultKind::Rolling);
        for index in 0..self.silos.len() {
            self.silos[index].signal("TERM")?;
            let status = self.silos[index].wait_exit(self.timing.detection).await;
            if status.and_then(|s| s.code()) != Some(0) {
                self.report.unclean_stops += 1;
            }
            self.report.graceful_exits.push(format!(
                "{} {}",
                self.silos[index].id,
                describe(status)
            ));
            self.replace(index).await?;
        }
        Ok(())
    }

    async fn partition(&mut self, victim: usize) -> Result<(), ChaosError> {
        let cuts: Vec<PartitionCommand> = self
            .silos
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, s)| PartitionCommand::Cut {
                silo: s.id.clone(),
                addr: s.addr,
            })
            .collect();
        self.record(FaultKind::Partition);
        for cut in &cuts {
            self.silos[victim].send(cut).await?;
        }
        // Watch the membership while the partition holds, and as long again after it healed:
        // votes cast during the partition may land late. A silo declared dead exits (dead is
        // final) and is restarted at once, as a supervisor would.
        let mut declared = std::collections::BTreeSet::new();
        let healed_at = Instant::now() + self.timing.partition_hold;
        let until = healed_at + self.timing.partition_hold;
        let mut healed = false;
        let mut victim_id = Some(self.silos[victim].id.clone());
        loop {
            let now = Instant::now();
            if !healed && now >= healed_at {
                // A cut-off silo declared dead has exited: nothing to heal.
                let _ = self.silos[victim].send(&PartitionCommand::Heal).await;
                healed = true;
            }
            // A read that fails (Redis restarting) is retried at the next turn.
            let entries = self.membership.read().await.map(|t| t.entries);
            for entry in entries.unwrap_or_default() {
                if entry.status == SiloStatus::Dead {
                    declared.insert(entry.silo.to_string());
                }
            }
            let last = now >= until;
            for index in 0..self.silos.len() {
                let id = self.silos[index].id.clone();
                if !declared.contains(&id) {
                    continue;
                }
                if !last && self.silos[index].exited().is_none() {
                    continue;
                }
                if victim_id.as_ref() == Some(&id) {
                    self.report.partitioned_declared_dead += 1;
                    victim_id = None;
                } else {
                    self.report.healthy_declared_dead.push(id);
                }
                self.silos[index].wait_exit(self.timing.detection).await;
                self.replace(index).await?;
            }
            if last {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Waits until the membership table marks the silo `id` (`name@generation`) dead; `false`
    /// if it does not within `within`.
    async fn wait_dead(&self, id: &str, within: Duration) -> Result<bool, ChaosError> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let dead = self.membership.read().await.is_ok_and(|table| {
                table
                    .entries
                    .iter()
                    .any(|e| e.silo.to_string() == id && e.status == SiloStatus::Dead)
            });
            if dead {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(false)
    }

    /// Heals every partition, restarts silos that exited, and stops nothing: the relays of
    /// the running silos deliver what is left in the outbox.
    ///
    /// # Errors
    /// As [`revive`](Self::revive).
    pub async fn settle(&mut self) -> Result<(), ChaosError> {
        for silo in &mut self.silos {
            // A silo that exited cannot take the command; revive replaces it.
            let _ = silo.send(&PartitionCommand::Heal).await;
        }
        self.revive().await
    }

    /// Kills every silo process.
    pub async fn shutdown(mut self) {
        for silo in &mut self.silos {
            silo.kill().await;
        }
    }
}
