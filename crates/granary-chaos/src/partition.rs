//! Partitions between silo processes: the commands the driver writes to a `chaos-silo`'s
//! stdin, and the [`PartitionSwitch`] the silo applies them to.
//!
//! One line per command:
//! - `cut <silo id> <address>`: drop every frame to and from that silo (`name@generation`,
//!   as its ready line printed it) at that transport address;
//! - `heal`: remove every cut.
//!
//! Cutting on one side cuts both directions: the switch drops what its silo sends to the peer
//! and what it receives from it. Clients are never cut, and every silo still reaches Redis.

use std::net::SocketAddr;

/// A command from the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionCommand {
    /// Cut the silo `silo` (`name@generation`) at `addr`.
    Cut {
        /// The peer's silo id, `name@generation`.
        silo: String,
        /// The peer's transport address.
        addr: SocketAddr,
    },
    /// Remove every cut.
    Heal,
}

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The line is not `cut <name@generation> <address>` or `heal`; the driver and the silo
    /// binary do not match.
    #[error("unknown partition command {0:?}: use `cut <name@generation> <address>` or `heal`")]
    Unknown(String),
}

impl PartitionCommand {
    /// Parses one command line.
    ///
    /// # Errors
    /// [`CommandError::Unknown`] for anything else.
    pub fn parse(line: &str) -> Result<Self, CommandError> {
        let unknown = || CommandError::Unknown(line.to_owned());
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["heal"] => Ok(Self::Heal),
            ["cut", silo, addr] if silo.rsplit_once('@').is_some() => Ok(Self::Cut {
                silo: (*silo).to_owned(),
                addr: addr.parse().map_err(|_| unknown())?,
            }),
            _ => Err(unknown()),
        }
    }

    /// The command as one line (without the newline).
    #[must_use]
    pub fn line(&self) -> String {
        match self {
            Self::Cut { silo, addr } => format!("cut {silo} {addr}"),
            Self::Heal => "heal".to_owned(),
        }
    }
}

/// What a silo process applies partition commands to: the one spot that reaches its
/// transport.
pub trait PartitionSwitch: Send + Sync {
    /// Applies `command`.
    ///
    /// # Errors
    /// A message when this silo cannot partition (no fault hook in its transport) or the
    /// command names an invalid silo id.
    fn apply(&self, command: &PartitionCommand) -> Result<(), String>;
}

/// The switch of a running silo: its transport's test fault switch
/// (`granary_transport::Faults`). A cut drops every frame to and from the peer silo on this
/// silo's links, dialed or accepted, now and later; new dials still connect (a silent
/// partition, not a refusal).
#[derive(Debug, Clone)]
pub struct TransportSwitch(granary_transport::Faults);

impl TransportSwitch {
    /// The switch of `silo`; [`NoSwitch`] outside a cluster.
    #[must_use]
    pub fn of(silo: &granary::Silo) -> Box<dyn PartitionSwitch> {
        match silo.transport_faults() {
            Some(faults) => Box::new(Self(faults)),
            None => Box::new(NoSwitch),
        }
    }
}

impl PartitionSwitch for TransportSwitch {
    fn apply(&self, command: &PartitionCommand) -> Result<(), String> {
        match command {
            PartitionCommand::Heal => self.0.heal(),
            PartitionCommand::Cut { silo, .. } => {
                let (name, generation) = silo
                    .rsplit_once('@')
                    .and_then(|(name, generation)| Some((name, generation.parse().ok()?)))
                    .ok_or_else(|| format!("{silo:?} is not a silo id (name@generation)"))?;
                self.0.cut_silo(&granary::SiloId::new(name, generation));
            }
        }
        Ok(())
    }
}

/// The switch of a build without a transport fault hook: it refuses every cut.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSwitch;

impl PartitionSwitch for NoSwitch {
    fn apply(&self, command: &PartitionCommand) -> Result<(), String> {
        match command {
            PartitionCommand::Heal => Ok(()),
            PartitionCommand::Cut { .. } => Err(
                "this build's transport has no fault hook: partitions cannot be injected".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests;
