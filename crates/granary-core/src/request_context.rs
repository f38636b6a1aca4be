//! [`RequestContext`]: small key–value pairs that travel with a call chain (a session's user
//! id, a region tag), set by a client or a grain, read by grains and call filters.
//!
//! The context rides in the [`CallChain`](crate::CallChain): a call made by a turn inherits
//! the context of the call that started the turn, across silos and into one-way calls. It is
//! bounded ([`MAX_CONTEXT_ENTRIES`], [`MAX_CONTEXT_BYTES`]): a call whose context is over a
//! bound fails with [`CallError::ContextTooLarge`] before it is sent, and a context over a
//! bound arriving from the wire is refused while it is decoded. An empty context is a `None`:
//! it costs a call no allocation and one byte on the wire.

use std::fmt;
use std::sync::Arc;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CallError;

/// The most entries a request context may hold.
pub const MAX_CONTEXT_ENTRIES: usize = 16;

/// The most bytes a request context may hold: the UTF-8 lengths of its keys and values,
/// summed.
pub const MAX_CONTEXT_BYTES: usize = 1024;

/// Key–value pairs carried along a call chain: what the caller's session knows (`"user"`,
/// `"region"`), for the grains and call filters on the way.
///
/// Set on a reference (`client.grain::<PlayerGrain>("p-1").with_context("user", "alice")`),
/// on a client (every reference it makes carries it), or by an outgoing call filter; read with
/// `ctx.request_context()` inside a grain and `FilterCall::context` in a filter. Keys are
/// unique: inserting a key again replaces its value. Cheap to clone (the entries are shared).
///
/// ```
/// use granary_core::RequestContext;
///
/// let context = RequestContext::new().with("user", "alice").with("region", "eu");
/// assert_eq!(context.get("user"), Some("alice"));
/// assert_eq!(context.len(), 2);
/// assert!(context.check().is_ok());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// `None` when empty: an empty context allocates nothing.
    entries: Option<Arc<Vec<(String, String)>>>,
}

impl RequestContext {
    /// An empty context.
    #[must_use]
    pub const fn new() -> Self {
        Self { entries: None }
    }

    /// Whether the context holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_none()
    }

    /// How many entries the context holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.len())
    }

    /// The value of `key`, if set.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The entries, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .flat_map(|e| e.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets `key` to `value` (replacing its value if it is set). Bounds are checked when a
    /// call is made with the context ([`check`](Self::check)), not here.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        let entries = Arc::make_mut(self.entries.get_or_insert_with(Default::default));
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key, value)),
        }
    }

    /// The context with `key` set to `value`.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    /// Removes `key`; answers its value if it was set.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let entries = self.entries.as_mut()?;
        let at = entries.iter().position(|(k, _)| k == key)?;
        let (_, value) = Arc::make_mut(entries).remove(at);
        if entries.is_empty() {
            self.entries = None;
        }
        Some(value)
    }

    /// This context with the entries of `over` set on it (`over` wins where both have a key).
    #[must_use]
    pub fn merged(&self, over: &Self) -> Self {
        match (&self.entries, &over.entries) {
            (_, None) => self.clone(),
            (None, Some(_)) => over.clone(),
            (Some(_), Some(entries)) => {
                let mut merged = self.clone();
                for (k, v) in entries.iter() {
                    merged.insert(k.clone(), v.clone());
                }
                merged
            }
        }
    }

    /// The bytes the context counts against [`MAX_CONTEXT_BYTES`]: its keys' and values'
    /// lengths, summed.
    #[must_use]
    pub fn size(&self) -> usize {
        self.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Checks the bounds: at most [`MAX_CONTEXT_ENTRIES`] entries and [`MAX_CONTEXT_BYTES`]
    /// bytes.
    ///
    /// # Errors
    /// [`CallError::ContextTooLarge`] when the context is over a bound.
    pub fn check(&self) -> Result<(), CallError> {
        let Some(entries) = &self.entries else {
            return Ok(());
        };
        let bytes = self.size();
        if entries.len() > MAX_CONTEXT_ENTRIES || bytes > MAX_CONTEXT_BYTES {
            return Err(CallError::ContextTooLarge {
                entries: entries.len(),
                bytes,
            });
        }
        Ok(())
    }
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for RequestContext {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for entry in self.iter() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for RequestContext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(Bounded)
    }
}

/// Reads a context, refusing one over a bound before it allocates it all.
struct Bounded;

impl<'de> Visitor<'de> for Bounded {
    type Value = RequestContext;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a request context of at most {MAX_CONTEXT_ENTRIES} entries and {MAX_CONTEXT_BYTES} bytes"
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        if seq.size_hint().is_some_and(|n| n > MAX_CONTEXT_ENTRIES) {
            return Err(A::Error::custom(format_args!(
                "request context has more than {MAX_CONTEXT_ENTRIES} entries"
            )));
        }
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut bytes = 0;
        while let Some((key, value)) = seq.next_element::<(String, String)>()? {
            bytes += key.len() + value.len();
            if entries.len() == MAX_CONTEXT_ENTRIES || bytes > MAX_CONTEXT_BYTES {
                return Err(A::Error::custom(format_args!(
                    "request context is over its limit of {MAX_CONTEXT_ENTRIES} entries and {MAX_CONTEXT_BYTES} bytes"
                )));
            }
            entries.push((key, value));
        }
        Ok(RequestContext {
            entries: (!entries.is_empty()).then(|| Arc::new(entries)),
        })
    }
}

#[cfg(test)]
mod tests;
