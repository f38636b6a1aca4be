//! The TLS settings of the links to Redis, NATS and RabbitMQ: `GRANARY_<LINK>_CA`,
//! `GRANARY_<LINK>_CERT` and `GRANARY_<LINK>_KEY`, read and checked before anything connects
//! (each file readable and holding what it should), then handed to each client in its form.

use std::path::PathBuf;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{NodeError, Settings};

/// A PEM file, read.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Pem {
    pub(crate) path: PathBuf,
    pub(crate) bytes: Vec<u8>,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path only: a key's bytes never reach a log.
        self.path.fmt(f)
    }
}

/// The checked certificates of one TLS link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// The CA to trust, besides the system's roots.
    pub(crate) ca: Option<Pem>,
    /// The client certificate and its private key.
    pub(crate) client: Option<(Pem, Pem)>,
}

/// The settings of one link's TLS.
#[derive(Debug)]
pub(crate) struct TlsSettings {
    /// The link's address setting (`GRANARY_REDIS`).
    pub(crate) url: &'static str,
    pub(crate) ca: &'static str,
    pub(crate) cert: &'static str,
    pub(crate) key: &'static str,
    /// The URL schemes of the link over TLS.
    schemes: &'static [&'static str],
    /// The values of the link's URL, CA, certificate and key settings.
    values: fn(&Settings) -> [Option<&str>; 4],
}

/// `GRANARY_REDIS_CA`, `_CERT`, `_KEY`, for a `rediss://` URL.
pub(crate) const REDIS: TlsSettings = TlsSettings {
    url: "GRANARY_REDIS",
    ca: "GRANARY_REDIS_CA",
    cert: "GRANARY_REDIS_CERT",
    key: "GRANARY_REDIS_KEY",
    schemes: &["rediss://"],
    values: |s| {
        [
            s.redis.as_deref(),
            s.redis_ca.as_deref(),
            s.redis_cert.as_deref(),
            s.redis_key.as_deref(),
        ]
    },
};

/// `GRANARY_NATS_CA`, `_CERT`, `_KEY`, for a `tls://` URL.
pub(crate) const NATS: TlsSettings = TlsSettings {
    url: "GRANARY_NATS",
    ca: "GRANARY_NATS_CA",
    cert: "GRANARY_NATS_CERT",
    key: "GRANARY_NATS_KEY",
    schemes: &["tls://"],
    values: |s| {
        [
            s.nats.as_deref(),
            s.nats_ca.as_deref(),
            s.nats_cert.as_deref(),
            s.nats_key.as_deref(),
        ]
    },
};

/// `GRANARY_AMQP_CA`, `_CERT`, `_KEY`, for an `amqps://` URI.
pub(crate) const AMQP: TlsSettings = TlsSettings {
    url: "GRANARY_AMQP",
    ca: "GRANARY_AMQP_CA",
    cert: "GRANARY_AMQP_CERT",
    key: "GRANARY_AMQP_KEY",
    schemes: &["amqps://"],
    values: |s| {
        [
            s.amqp.as_deref(),
            s.amqp_ca.as_deref(),
            s.amqp_cert.as_deref(),
            s.amqp_key.as_deref(),
        ]
    },
};

impl TlsSettings {
    /// Whether `url` is one of the link over TLS.
    pub(crate) fn is_tls(&self, url: &str) -> bool {
        self.schemes.iter().any(|scheme| url.starts_with(scheme))
    }

    /// The settings to name when a TLS connection of this link fails.
    pub(crate) fn names(&self) -> String {
        format!(
            "{} (TLS: {}, {}, {})",
            self.url, self.ca, self.cert, self.key
        )
    }

    /// Reads and checks the link's certificate files of `settings`; `None` when none is set.
    pub(crate) fn resolve(&self, settings: &Settings) -> Result<Option<TlsFiles>, NodeError> {
        let [url, ca, cert, key] = (self.values)(settings);
        self.resolve_values(url, ca, cert, key)
    }

    /// As [`resolve`](Self::resolve), given the link's `url` and the values of its three
    /// settings.
    fn resolve_values(
        &self,
        url: Option<&str>,
        ca: Option<&str>,
        cert: Option<&str>,
        key: Option<&str>,
    ) -> Result<Option<TlsFiles>, NodeError> {
        let Some(first) = [(self.ca, ca), (self.cert, cert), (self.key, key)]
            .into_iter()
            .find(|(_, value)| value.is_some())
            .map(|(name, _)| name)
        else {
            return Ok(None);
        };
        if !url.is_some_and(|url| self.is_tls(url)) {
            return Err(NodeError::Setting {
                name: first,
                problem: format!(
                    "set, but {} is not a TLS URL ({}…): the certificate settings apply to a \
                     TLS link only",
                    self.url,
                    self.schemes.join("… or ")
                ),
            });
        }
        let ca = ca.map(|path| certificates(self.ca, path)).transpose()?;
        let client = match (cert, key) {
            (Some(cert), Some(key)) => {
                Some((certificates(self.cert, cert)?, private_key(self.key, key)?))
            }
            (None, None) => None,
            (Some(_), None) => return Err(missing(self.key, self.cert)),
            (None, Some(_)) => return Err(missing(self.cert, self.key)),
        };
        Ok(Some(TlsFiles { ca, client }))
    }
}

/// `name` is missing while `given` is set (a client certificate needs both).
fn missing(name: &'static str, given: &str) -> NodeError {
    NodeError::Setting {
        name,
        problem: format!(
            "missing, but {given} is set: a client certificate needs its key, and a key its certificate"
        ),
    }
}

/// Reads the file of setting `name`.
fn read(name: &'static str, path: &str) -> Result<Pem, NodeError> {
    let bytes = std::fs::read(path).map_err(|e| NodeError::Setting {
        name,
        problem: format!("cannot read {path:?}: {e}"),
    })?;
    Ok(Pem {
        path: PathBuf::from(path),
        bytes,
    })
}

/// The file of setting `name`, which must hold PEM certificates only.
fn certificates(name: &'static str, path: &str) -> Result<Pem, NodeError> {
    let pem = read(name, path)?;
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem.bytes).collect();
    match parsed {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        Ok(_) => Err(NodeError::Setting {
            name,
            problem: format!(
                "{path:?} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)"
            ),
        }),
        Err(e) => Err(NodeError::Setting {
            name,
            problem: format!("{path:?} is not a valid PEM certificate file: {e}"),
        }),
    }
}

/// The file of setting `name`, which must hold a PEM private key.
fn private_key(name: &'static str, path: &str) -> Result<Pem, NodeError> {
    let pem = read(name, path)?;
    match PrivateKeyDer::from_pem_slice(&pem.bytes) {
        Ok(_) => Ok(pem),
        Err(e) => Err(NodeError::Setting {
            name,
            problem: format!(
                "{path:?} holds no PEM private key (`-----BEGIN PRIVATE KEY-----`, or RSA or \
                 EC): {e}"
            ),
        }),
    }
}

impl TlsFiles {
    /// The Redis client's form.
    pub(crate) fn redis(&self) -> granary_redis::TlsCertificates {
        granary_redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| granary_redis::ClientTlsConfig {
                    client_cert: cert.bytes.clone(),
                    client_key: key.bytes.clone(),
                }),
            root_cert: self.ca.as_ref().map(|ca| ca.bytes.clone()),
        }
    }

    /// The NATS client's form.
    pub(crate) fn nats(&self) -> granary_nats::NatsTls {
        granary_nats::NatsTls {
            ca: self.ca.as_ref().map(|ca| ca.path.clone()),
            client: self
                .client
                .as_ref()
                .map(|(cert, key)| (cert.path.clone(), key.path.clone())),
        }
    }

    /// The RabbitMQ client's form.
    pub(crate) fn amqp(&self) -> granary_rabbitmq::RabbitTls {
        granary_rabbitmq::RabbitTls {
            ca: self
                .ca
                .as_ref()
                .map(|ca| String::from_utf8_lossy(&ca.bytes).into_owned()),
            client: self
                .client
                .as_ref()
                .map(|(cert, key)| (cert.bytes.clone(), key.bytes.clone())),
        }
    }
}

#[cfg(test)]
mod tests;
