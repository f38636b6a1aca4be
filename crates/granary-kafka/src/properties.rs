//! [`ClientProperties`]: librdkafka properties a deployment adds to the clients' own, for TLS
//! and SASL (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`, …).

use rdkafka::config::ClientConfig;

/// The properties Granary sets itself, for the delivery guarantees it documents: a property of
/// these names is refused ([`ClientProperties::set`]).
pub const RESERVED: [&str; 9] = [
    "bootstrap.servers",
    "acks",
    "enable.idempotence",
    "max.in.flight.requests.per.connection",
    "partitioner",
    "group.id",
    "enable.auto.commit",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// librdkafka client properties given by the deployment, set on every client of a sink or
/// consumer (producer, admin client, consumer) before Granary's own: how to reach a broker
/// that requires TLS or SASL, e.g. `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`,
/// `sasl.username`, `sasl.password`, `ssl.ca.location=/etc/kafka/ca.pem`.
///
/// Its `Debug` output shows the names of the properties and hides the values of secrets
/// (any property whose name contains `password`, `secret` or `key`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientProperties(Vec<(String, String)>);

impl std::fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, value)| {
                let secret = ["password", "secret", "key"]
                    .iter()
                    .any(|word| name.contains(word));
                (name, if secret { "…" } else { value.as_str() })
            }))
            .finish()
    }
}

impl ClientProperties {
    /// No properties: a plaintext connection without authentication.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the property `name`.
    ///
    /// # Errors
    /// A message saying why, if `name` is one Granary sets itself ([`RESERVED`]: its delivery
    /// guarantees depend on them) or is empty.
    pub fn set(mut self, name: &str, value: &str) -> Result<Self, String> {
        let name = name.trim();
        if name.is_empty() {
            return Err("a property has no name: write name=value".into());
        }
        if RESERVED.contains(&name) {
            return Err(format!(
                "{name} is set by Granary (its delivery guarantees depend on it); remove it"
            ));
        }
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.to_owned(), value.trim().to_owned()));
        Ok(self)
    }

    /// The properties, in the order set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// A client configuration for `brokers` with these properties.
    pub(crate) fn client(&self, brokers: &str) -> ClientConfig {
        let mut client = ClientConfig::new();
        for (name, value) in self.iter() {
            client.set(name, value);
        }
        client.set("bootstrap.servers", brokers);
        client
    }
}
