//! The SQS message of an event: body, attributes, group and deduplication ids, queue names.

use base64::Engine as _;
use granary_events::{EnvelopeError, EventEnvelope, Format};
use sha2::{Digest, Sha256};

use crate::error::SqsError;

/// The longest group or deduplication id SQS accepts.
const MAX_ID: usize = 128;
/// The longest queue name SQS accepts, `.fifo` included.
const MAX_QUEUE_NAME: usize = 80;

/// Attribute carrying the full event id.
pub(crate) const EVENT_ID: &str = "granary-event-id";
/// Attribute carrying the event type.
pub(crate) const EVENT_TYPE: &str = "granary-event-type";
/// Attribute of a dead-lettered message: why it failed.
pub(crate) const FAILURE: &str = "granary-failure";
/// Attribute carrying the body's format.
pub(crate) const CONTENT_TYPE: &str = "content-type";

/// `id` as an SQS `MessageGroupId` or `MessageDeduplicationId`: itself when it has at most 128
/// characters, all printable ASCII other than space; otherwise `sha256:` and the lowercase hex
/// SHA-256 of its UTF-8 bytes (71 characters).
///
/// ```
/// assert_eq!(granary_sqs::sqs_id("c.1/6:player:s:alice:3:0"), "c.1/6:player:s:alice:3:0");
/// let hashed = granary_sqs::sqs_id("c.1/6:player:s:jökull:3:0");
/// assert!(hashed.starts_with("sha256:") && hashed.len() == 71);
/// ```
#[must_use]
pub fn sqs_id(id: &str) -> String {
    if id.len() <= MAX_ID && !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()) {
        id.to_owned()
    } else {
        let digest = Sha256::digest(id.as_bytes());
        let mut out = String::with_capacity(71);
        out.push_str("sha256:");
        for byte in digest {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

/// The SQS queue name of `<prefix><topic>`: every character other than an ASCII letter, a digit,
/// `-` or `_` becomes `-`, and a FIFO queue gets the `.fifo` suffix.
///
/// ```
/// assert_eq!(granary_sqs::queue_name("game.", "match.ended", true).unwrap(), "game-match-ended.fifo");
/// assert_eq!(granary_sqs::queue_name("", "player.died", false).unwrap(), "player-died");
/// ```
///
/// # Errors
/// [`SqsError::QueueName`] if the name is empty or longer than SQS's 80 characters.
pub fn queue_name(prefix: &str, topic: &str, fifo: bool) -> Result<String, SqsError> {
    let mut name: String = prefix
        .chars()
        .chain(topic.chars())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if fifo {
        name.push_str(".fifo");
    }
    check_queue_name(&name, fifo)?;
    Ok(name)
}

/// Checks a full queue name (a consumer's).
pub(crate) fn check_queue_name(name: &str, fifo: bool) -> Result<(), SqsError> {
    let base = if fifo {
        name.strip_suffix(".fifo").unwrap_or(name)
    } else {
        name
    };
    let reason = if base.is_empty() {
        Some("empty")
    } else if name.chars().count() > MAX_QUEUE_NAME {
        Some("longer than 80 characters")
    } else if !base
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Some("only letters, digits, '-' and '_' are allowed (and the '.fifo' suffix)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SqsError::QueueName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The dead-letter queue of `queue`: `<queue>-dead.fifo` (or `<queue>-dead`).
pub(crate) fn dead_letter_name(queue: &str) -> String {
    match queue.strip_suffix(".fifo") {
        Some(base) => format!("{base}-dead.fifo"),
        None => format!("{queue}-dead"),
    }
}

/// The message group of an event: its source grain, length-prefixed like the event id so that
/// no two grains share a group.
pub(crate) fn group_id(event: &EventEnvelope) -> String {
    let kind = event.source.key_kind.chars().next().unwrap_or('s');
    sqs_id(&format!(
        "{}:{}:{kind}:{}",
        event.source.type_name.len(),
        event.source.type_name,
        event.source.key
    ))
}

/// The message body of `event` in `format`.
pub(crate) fn body(event: &EventEnvelope, format: Format) -> String {
    match format {
        Format::Json => {
            let json = String::from_utf8(event.to_json()).expect("JSON is UTF-8");
            if json.contains(['\u{FFFE}', '\u{FFFF}']) {
                // Only inside JSON strings, where an escape is the same value.
                json.replace('\u{FFFE}', "\\ufffe")
                    .replace('\u{FFFF}', "\\uffff")
            } else {
                json
            }
        }
        Format::MessagePack => {
            base64::engine::general_purpose::STANDARD.encode(event.encode(Format::MessagePack))
        }
    }
}

/// The envelope in a message body, per its `content-type` attribute (JSON when absent).
pub(crate) fn decode(
    body: &str,
    content_type: Option<&str>,
) -> Result<EventEnvelope, EnvelopeError> {
    if content_type == Some(Format::MessagePack.content_type()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|e| EnvelopeError::Malformed(format!("base64: {e}")))?;
        EventEnvelope::from_bytes(&bytes)
    } else {
        EventEnvelope::from_json(body.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn ids_that_fit_are_kept_others_are_hashed_stably() {
        let plain = "league.7f3a/6:player:s:alice:3:0";
        assert_eq!(sqs_id(plain), plain);
        let long = format!("o/6:player:s:{}:1:0", "k".repeat(200));
        let spaced = "o/6:player:s:two words:1:0";
        for id in [long.as_str(), spaced, "o/6:player:s:jökull:1:0", ""] {
            let mapped = sqs_id(id);
            assert_eq!(mapped.len(), 71, "{id}");
            assert!(mapped.starts_with("sha256:"));
            assert!(mapped.bytes().all(|b| b.is_ascii_graphic()));
            assert_eq!(mapped, sqs_id(id), "stable");
        }
        assert_ne!(sqs_id(&long), sqs_id(spaced));
        assert_eq!(sqs_id(&"x".repeat(128)), "x".repeat(128));
        assert_ne!(sqs_id(&"x".repeat(129)), "x".repeat(129));
    }

    #[test]
    fn queue_names_are_sanitized_and_checked() {
        assert_eq!(
            queue_name("game.", "match.ended", true).unwrap(),
            "game-match-ended.fifo"
        );
        assert_eq!(queue_name("p_", "a/b c", false).unwrap(), "p_a-b-c");
        assert!(
            queue_name("", &"t".repeat(76), true).is_err(),
            "81 with .fifo"
        );
        assert!(queue_name("", &"t".repeat(75), true).is_ok());
        assert!(queue_name("", "", false).is_err());
        assert!(check_queue_name("a.b", false).is_err());
        assert_eq!(dead_letter_name("q.fifo"), "q-dead.fifo");
        assert_eq!(dead_letter_name("q"), "q-dead");
    }

    fn envelope(key: &str, payload: &str) -> EventEnvelope {
        serde_json::from_value(serde_json::json!({
            "id": format!("o/1:g:s:{key}:1:0"), "type": "t",
            "source": {"type": "g", "key": key, "key_kind": "string"},
            "version": 1, "index": 0, "timestamp_ms": 0, "trace": null,
            "payload": serde_json::from_str::<serde_json::Value>(payload).unwrap(),
        }))
        .unwrap()
    }

    #[test]
    fn bodies_round_trip_in_both_formats_and_avoid_what_sqs_refuses() {
        let event = envelope("a", r#"{"s":"x\uffffy"}"#);
        let json = body(&event, Format::Json);
        assert!(!json.contains('\u{FFFF}'), "escaped");
        let back = decode(&json, None).unwrap();
        let value =
            |e: &EventEnvelope| serde_json::from_slice::<serde_json::Value>(&e.to_json()).unwrap();
        assert_eq!(value(&back), value(&event), "the same value");
        let packed = body(&event, Format::MessagePack);
        assert!(packed.bytes().all(|b| b.is_ascii_graphic()));
        let back = decode(&packed, Some("application/msgpack")).unwrap();
        assert_eq!(back.id, event.id);
        assert!(decode("not json", None).is_err());
        assert!(decode("!!", Some("application/msgpack")).is_err());
    }

    #[test]
    fn groups_are_the_grain_and_distinct_per_grain() {
        assert_eq!(group_id(&envelope("alice", "{}")), "1:g:s:alice");
        assert_ne!(
            group_id(&envelope("alice", "{}")),
            group_id(&envelope("bob", "{}"))
        );
    }
}
