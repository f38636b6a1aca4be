//! [`EventEnvelope`]: an event as it travels to queues, readable by any language.

use granary_core::provider::{EventId, OutboxEntry};
use granary_core::{Event, GrainId, GrainKey, PublishedEvent, TraceId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A committed domain event as sinks publish it: JSON, so that a Python or Go service can read
/// it.
///
/// ```json
/// {"id":"6:player:s:alice:3:0","type":"player.died",
///  "source":{"type":"player","key":"alice","key_kind":"string"},
///  "version":3,"index":0,"timestamp_ms":1764590000000,"trace":null,
///  "payload":{"player":"alice","killer":"bob"}}
/// ```
///
/// `id` is unique per event and the same on every delivery: consumers drop an id they have
/// processed (see the idempotency helpers of the sinks). `version` is the grain's state version
/// of the commit that carried the event, `index` its position in that commit: for one grain,
/// `(version, index)` orders its events. `timestamp_ms` is the commit time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The stable id: `<type length>:<grain type>:<key kind>:<key>:<version>:<index>`.
    pub id: String,
    /// The event's type name (`Event::TYPE_NAME`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// The grain that published it.
    pub source: Source,
    /// The grain's state version of the commit that carried it.
    pub version: u64,
    /// Its position among that commit's events.
    pub index: u32,
    /// Commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Trace context of the turn that published it (W3C `traceparent`), when traced.
    pub trace: Option<String>,
    /// The event itself, as the grain published it: JSON, carried as is (in binary encodings,
    /// such as a grain call's arguments, as JSON text).
    #[serde(with = "payload_text_when_binary")]
    pub payload: Box<RawValue>,
}

/// JSON as itself in human-readable formats; as JSON text in binary ones (bincode cannot carry
/// a self-describing value), so that an envelope can be a grain call's argument.
mod payload_text_when_binary {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use serde_json::value::RawValue;

    pub(super) fn serialize<S: Serializer>(
        value: &RawValue,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            value.serialize(serializer)
        } else {
            serializer.serialize_str(value.get())
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Box<RawValue>, D::Error> {
        if deserializer.is_human_readable() {
            Box::<RawValue>::deserialize(deserializer)
        } else {
            let text = String::deserialize(deserializer)?;
            RawValue::from_string(text).map_err(D::Error::custom)
        }
    }
}

/// How an envelope is written on a queue, chosen per topic by the sinks (`with_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// JSON (the default): readable by anything.
    #[default]
    Json,
    /// MessagePack with field names, the same structure as the JSON (the payload as a
    /// MessagePack map): smaller, and readable by any MessagePack library.
    MessagePack,
}

impl Format {
    /// The MIME type, for brokers that carry one (`content_type` in RabbitMQ).
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::MessagePack => "application/msgpack",
        }
    }
}

/// The envelope with its payload as a value, for MessagePack (which has no raw JSON).
#[derive(Serialize, Deserialize)]
struct Structured {
    id: String,
    #[serde(rename = "type")]
    type_name: String,
    source: Source,
    version: u64,
    index: u32,
    timestamp_ms: u64,
    trace: Option<String>,
    payload: serde_json::Value,
}

/// The grain that published an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The grain type name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The key, as text.
    pub key: String,
    /// `string`, `int` or `uuid`.
    pub key_kind: String,
}

/// Why an event could not be turned into an envelope or back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The published payload is not JSON (it always is when published with `ctx.publish`).
    #[error("event {id} has a payload that is not JSON: {reason}")]
    Payload {
        /// The event id.
        id: String,
        /// The parser's message.
        reason: String,
    },
    /// The bytes are not an envelope.
    #[error("not an event envelope: {0}")]
    Malformed(String),
    /// The payload is not an event of the requested type.
    #[error("event {id} of type {type_name} does not decode as {wanted}: {reason}")]
    WrongType {
        /// The event id.
        id: String,
        /// Its type name.
        type_name: String,
        /// The type asked for.
        wanted: &'static str,
        /// The decoder's message.
        reason: String,
    },
}

/// The stable id of the event that store `origin` committed at `(grain, version, index)`:
/// `<origin>/<type name length>:<type name>:<key kind s|i|u>:<key>:<version>:<index>`.
#[must_use]
pub fn event_id(origin: &str, grain: &GrainId, version: u64, index: u32) -> String {
    let (kind, key) = key_parts(grain.key());
    id_of(origin, grain.type_name(), kind, &key, version, index)
}

/// [`event_id`] from the key already in text: built in one allocation, without a format
/// string (the relay builds one per event).
fn id_of(origin: &str, type_name: &str, kind: &str, key: &str, version: u64, index: u32) -> String {
    // The numbers take at most 20 + 10 + 10 digits; the separators 6 bytes.
    let mut id = String::with_capacity(origin.len() + type_name.len() + key.len() + 48);
    id.push_str(origin);
    id.push('/');
    push_decimal(&mut id, type_name.len() as u64);
    id.push(':');
    id.push_str(type_name);
    id.push(':');
    id.push_str(&kind[..1]);
    id.push(':');
    id.push_str(key);
    id.push(':');
    push_decimal(&mut id, version);
    id.push(':');
    push_decimal(&mut id, u64::from(index));
    id
}

/// Appends `n` in decimal, as `Display` writes it, without the formatting machinery.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[start..]).expect("decimal digits are ASCII"));
}

fn key_parts(key: &GrainKey) -> (&'static str, String) {
    match key {
        GrainKey::Str(s) => ("string", s.to_string()),
        GrainKey::Int(i) => {
            let mut text = String::with_capacity(20);
            if *i < 0 {
                text.push('-');
            }
            push_decimal(&mut text, i.unsigned_abs());
            ("int", text)
        }
        GrainKey::Uuid(u) => ("uuid", u.to_string()),
    }
}

impl EventEnvelope {
    /// The envelope of a committed outbox entry.
    ///
    /// # Errors
    /// [`EnvelopeError::Payload`] if the payload is not JSON.
    pub fn from_entry(entry: &OutboxEntry) -> Result<Self, EnvelopeError> {
        Self::of_event(
            &entry.id,
            entry.event.type_name.clone(),
            entry.event.payload.clone(),
            entry.event.trace,
            entry.committed_ms,
        )
    }

    /// [`from_entry`](Self::from_entry) taking the entry's event: its type name and payload
    /// move into the envelope instead of being copied (the relay, which needs only the
    /// entry's position afterwards).
    pub(crate) fn from_event(
        id: &EventId,
        event: PublishedEvent,
        committed_ms: u64,
    ) -> Result<Self, EnvelopeError> {
        Self::of_event(
            id,
            event.type_name,
            event.payload,
            event.trace,
            committed_ms,
        )
    }

    fn of_event(
        event_id: &EventId,
        type_name: String,
        payload: Vec<u8>,
        trace: Option<TraceId>,
        committed_ms: u64,
    ) -> Result<Self, EnvelopeError> {
        // The key in text once, for the id and the source.
        let (key_kind, key) = key_parts(event_id.grain.key());
        let id = id_of(
            &event_id.origin,
            event_id.grain.type_name(),
            key_kind,
            &key,
            event_id.version,
            event_id.index,
        );
        // Checked once here, then carried as is: no parse into a value and back.
        let text = String::from_utf8(payload).map_err(|e| EnvelopeError::Payload {
            id: id.clone(),
            reason: e.to_string(),
        })?;
        let payload = RawValue::from_string(text).map_err(|e| EnvelopeError::Payload {
            id: id.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            id,
            type_name,
            source: Source {
                type_name: event_id.grain.type_name().to_owned(),
                key,
                key_kind: key_kind.to_owned(),
            },
            version: event_id.version,
            index: event_id.index,
            timestamp_ms: committed_ms,
            trace: trace.map(|trace| {
                // W3C traceparent: the turn's trace, a span id of this event (never zero).
                let span = (event_id.version << 16 | u64::from(event_id.index)) | 1 << 63;
                format!("00-{trace}-{span:016x}-01")
            }),
            payload,
        })
    }

    /// The envelope as JSON bytes.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    /// The envelope in `format`.
    #[must_use]
    pub fn encode(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => self.to_json(),
            Format::MessagePack => {
                rmp_serde::to_vec_named(&self.structured()).expect("an envelope always serializes")
            }
        }
    }

    /// Writes the envelope in `format` to `out`: the bytes [`encode`](Self::encode) returns,
    /// without a buffer of their own (a sink writes each envelope straight into the message
    /// or command it sends).
    ///
    /// # Errors
    /// What `out` returns; writing to memory never fails.
    pub fn encode_to(&self, format: Format, mut out: impl std::io::Write) -> std::io::Result<()> {
        match format {
            Format::Json => serde_json::to_writer(out, self).map_err(std::io::Error::from),
            Format::MessagePack => rmp_serde::encode::write_named(&mut out, &self.structured())
                .map_err(|e| {
                    // A failure of `out` keeps its kind.
                    let kind = std::iter::successors(
                        Some(&e as &(dyn std::error::Error + 'static)),
                        |e| e.source(),
                    )
                    .find_map(|e| e.downcast_ref::<std::io::Error>())
                    .map_or(std::io::ErrorKind::Other, std::io::Error::kind);
                    std::io::Error::new(kind, e)
                }),
        }
    }

    /// The envelope with its payload as a value, for MessagePack.
    fn structured(&self) -> Structured {
        Structured {
            id: self.id.clone(),
            type_name: self.type_name.clone(),
            source: self.source.clone(),
            version: self.version,
            index: self.index,
            timestamp_ms: self.timestamp_ms,
            trace: self.trace.clone(),
            payload: serde_json::from_str(self.payload.get())
                .expect("the payload was checked to be JSON"),
        }
    }

    /// Reads an envelope in either format (a JSON envelope starts with `{`, a MessagePack one
    /// with a map marker).
    ///
    /// # Errors
    /// [`EnvelopeError::Malformed`] if the bytes are neither.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        match bytes.first() {
            Some(b'{') => Self::from_json(bytes),
            Some(_) => {
                let s: Structured = rmp_serde::from_slice(bytes)
                    .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
                let payload = RawValue::from_string(s.payload.to_string())
                    .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
                Ok(Self {
                    id: s.id,
                    type_name: s.type_name,
                    source: s.source,
                    version: s.version,
                    index: s.index,
                    timestamp_ms: s.timestamp_ms,
                    trace: s.trace,
                    payload,
                })
            }
            None => Err(EnvelopeError::Malformed("no bytes".into())),
        }
    }

    /// Reads an envelope from JSON bytes.
    ///
    /// # Errors
    /// [`EnvelopeError::Malformed`] if the bytes are not one.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    /// The payload as event `E`, if this is an `E`.
    ///
    /// # Errors
    /// [`EnvelopeError::WrongType`] if the type name differs or the payload does not decode.
    pub fn decode<E: Event>(&self) -> Result<E, EnvelopeError> {
        let wrong = |reason: String| EnvelopeError::WrongType {
            id: self.id.clone(),
            type_name: self.type_name.clone(),
            wanted: E::TYPE_NAME,
            reason,
        };
        if self.type_name != E::TYPE_NAME {
            return Err(wrong("another event type".into()));
        }
        serde_json::from_str(self.payload.get()).map_err(|e| wrong(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventEnvelope {
        EventEnvelope {
            id: event_id("league.7f3a", &GrainId::new("player", "alice"), 3, 0),
            type_name: "player.died".into(),
            source: Source {
                type_name: "player".into(),
                key: "alice".into(),
                key_kind: "string".into(),
            },
            version: 3,
            index: 0,
            timestamp_ms: 1_764_590_000_000,
            trace: None,
            payload: RawValue::from_string(r#"{"player":"alice","killer":"bob"}"#.into()).unwrap(),
        }
    }

    #[test]
    fn the_json_form_is_the_documented_one() {
        let json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        assert_eq!(json["id"], "league.7f3a/6:player:s:alice:3:0");
        assert_eq!(json["type"], "player.died");
        assert_eq!(json["source"]["key_kind"], "string");
        assert_eq!(
            json["payload"]["killer"], "bob",
            "the payload is an object, not text"
        );
        assert_eq!(
            EventEnvelope::from_json(&sample().to_json())
                .unwrap()
                .to_json(),
            sample().to_json()
        );
    }

    #[test]
    fn an_envelope_travels_as_a_grain_call_argument() {
        let bytes = granary_core::codec::encode(&sample()).unwrap();
        let back: EventEnvelope = granary_core::codec::decode(&bytes).unwrap();
        assert_eq!(back.to_json(), sample().to_json());
    }

    #[test]
    fn messagepack_carries_the_same_envelope_and_is_recognized() {
        let packed = sample().encode(Format::MessagePack);
        assert_ne!(packed[0], b'{');
        assert!(packed.len() < sample().to_json().len());
        let value =
            |e: &EventEnvelope| serde_json::from_slice::<serde_json::Value>(&e.to_json()).unwrap();
        let back = EventEnvelope::from_bytes(&packed).unwrap();
        assert_eq!(
            value(&back),
            value(&sample()),
            "the same envelope (key order aside)"
        );
        let json = EventEnvelope::from_bytes(&sample().encode(Format::Json)).unwrap();
        assert_eq!(json.to_json(), sample().to_json());
        assert!(EventEnvelope::from_bytes(b"\xc1garbage").is_err());
        assert!(EventEnvelope::from_bytes(b"").is_err());
    }

    #[test]
    fn encode_to_writes_what_encode_returns_and_hands_back_a_failed_write() {
        let traced = EventEnvelope {
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-8000000000030000-01".into()),
            ..sample()
        };
        for envelope in [sample(), traced] {
            for format in [Format::Json, Format::MessagePack] {
                let mut written = Vec::new();
                envelope.encode_to(format, &mut written).unwrap();
                assert_eq!(written, envelope.encode(format));
            }
        }
        /// A writer that takes `room` bytes, then fails.
        struct Full {
            room: usize,
        }
        impl std::io::Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.room == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "full"));
                }
                let n = buf.len().min(self.room);
                self.room -= n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        for format in [Format::Json, Format::MessagePack] {
            let err = sample().encode_to(format, Full { room: 10 }).unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::StorageFull,
                "{format:?}: {err}"
            );
        }
    }

    #[test]
    fn ids_differ_by_key_kind_and_never_collide() {
        let a = event_id("c.1", &GrainId::new("g", "1"), 1, 0);
        // Numbers as `Display` writes them, extremes included.
        for (key, version, index) in [(0, 0, 0), (-7, 10, 9), (i64::MIN, u64::MAX, u32::MAX)] {
            let g = GrainId::new("g", key);
            assert_eq!(
                event_id("o", &g, version, index),
                format!("o/1:g:i:{key}:{version}:{index}")
            );
        }
        let b = event_id("c.1", &GrainId::new("g", 1), 1, 0);
        assert_ne!(a, b);
        let other_cluster = event_id("d.1", &GrainId::new("g", "1"), 1, 0);
        let reset_cluster = event_id("c.2", &GrainId::new("g", "1"), 1, 0);
        assert_ne!(a, other_cluster, "two clusters sharing a queue");
        assert_ne!(
            a, reset_cluster,
            "a cluster started afresh on an empty store"
        );
    }
}
