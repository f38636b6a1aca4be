//! Identities: which grain ([`GrainId`]), which activation of it ([`ActivationId`]) and which
//! silo hosts it ([`SiloId`]).

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The key part of a grain's identity: a string, an integer or a UUID.
///
/// Keys of different kinds never compare equal: `GrainKey::Int(7)` and `GrainKey::from("7")`
/// name two different grains.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GrainKey {
    /// A string key such as a player name.
    Str(Arc<str>),
    /// An integer key such as a match number.
    Int(i64),
    /// A UUID key.
    Uuid(Uuid),
}

impl GrainKey {
    /// The canonical text of the key, with its kind as prefix (`s:`, `i:` or `u:`), so that
    /// keys of different kinds never collide where they are stored as text (Redis keys).
    #[must_use]
    pub fn canonical(&self) -> String {
        match self {
            Self::Str(s) => format!("s:{s}"),
            Self::Int(i) => format!("i:{i}"),
            Self::Uuid(u) => format!("u:{u}"),
        }
    }
}

impl fmt::Display for GrainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(s),
            Self::Int(i) => write!(f, "{i}"),
            Self::Uuid(u) => write!(f, "{u}"),
        }
    }
}

impl fmt::Debug for GrainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Uuid(u) => write!(f, "{u}"),
        }
    }
}

impl From<&str> for GrainKey {
    fn from(s: &str) -> Self {
        Self::Str(Arc::from(s))
    }
}
impl From<String> for GrainKey {
    fn from(s: String) -> Self {
        Self::Str(Arc::from(s))
    }
}
impl From<&String> for GrainKey {
    fn from(s: &String) -> Self {
        Self::Str(Arc::from(s.as_str()))
    }
}
impl From<i64> for GrainKey {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}
impl From<u32> for GrainKey {
    fn from(i: u32) -> Self {
        Self::Int(i64::from(i))
    }
}
impl From<i32> for GrainKey {
    fn from(i: i32) -> Self {
        Self::Int(i64::from(i))
    }
}
impl From<Uuid> for GrainKey {
    fn from(u: Uuid) -> Self {
        Self::Uuid(u)
    }
}

/// The identity of a grain: its stable type name plus its key.
///
/// Cheap to clone (one reference count) and to hash (the hash is computed once). The type name
/// is the grain's declared `name`, never a Rust type path: it ends up in storage keys and on the
/// wire, so renaming a Rust type does not orphan its grains.
#[derive(Clone)]
pub struct GrainId(Arc<IdInner>);

struct IdInner {
    type_name: Cow<'static, str>,
    key: GrainKey,
    hash: u64,
}

impl GrainId {
    /// A grain id from a type name and a key.
    #[must_use]
    /// A declared type name (`&'static str`, as `Grain::TYPE_NAME`) costs no allocation.
    pub fn new(type_name: impl Into<Cow<'static, str>>, key: impl Into<GrainKey>) -> Self {
        let type_name = type_name.into();
        let key = key.into();
        // An explicit byte layout, not `Hash` (whose output depends on derive details and
        // endianness): the same id must hash the same on every machine of a cluster.
        let mut h = FnvHasher::default();
        h.write(type_name.as_bytes());
        h.write(&[0xff]);
        match &key {
            GrainKey::Str(s) => {
                h.write(b"s");
                h.write(s.as_bytes());
            }
            GrainKey::Int(i) => {
                h.write(b"i");
                h.write(&i.to_le_bytes());
            }
            GrainKey::Uuid(u) => {
                h.write(b"u");
                h.write(u.as_bytes());
            }
        }
        Self(Arc::new(IdInner {
            type_name,
            key,
            hash: h.finish(),
        }))
    }

    /// The grain's type name, as declared with `#[grain(name = "...")]`.
    #[must_use]
    pub fn type_name(&self) -> &str {
        &self.0.type_name
    }

    /// The grain's key.
    #[must_use]
    pub fn key(&self) -> &GrainKey {
        &self.0.key
    }

    /// A stable 64-bit hash of the id: FNV-1a over the type name, a key-kind tag and the key
    /// bytes (little-endian integers), the same on every machine and Rust version (used for
    /// placement and map lookups).
    #[must_use]
    pub fn stable_hash(&self) -> u64 {
        self.0.hash
    }
}

impl PartialEq for GrainId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash
                && self.0.type_name == other.0.type_name
                && self.0.key == other.0.key)
    }
}
impl Eq for GrainId {}

impl Hash for GrainId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl fmt::Display for GrainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.type_name, self.0.key)
    }
}

impl fmt::Debug for GrainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:?}", self.0.type_name, self.0.key)
    }
}

impl Serialize for GrainId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&*self.0.type_name, &self.0.key).serialize(s)
    }
}

impl<'de> Deserialize<'de> for GrainId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (type_name, key) = <(String, GrainKey)>::deserialize(d)?;
        Ok(Self::new(type_name, key))
    }
}

/// A hasher for maps keyed by [`GrainId`]: the id carries its hash already, so hashing it again
/// (SipHash by default) would be wasted work on every lookup.
#[derive(Debug, Default, Clone, Copy)]
pub struct GrainIdHasher(u64);

impl Hasher for GrainIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `GrainId` (it writes one u64); fold anything else in with FNV.
        let mut fnv = FnvHasher(self.0 ^ 0xcbf2_9ce4_8422_2325);
        fnv.write(bytes);
        self.0 = fnv.0;
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// `BuildHasher` for maps keyed by [`GrainId`].
pub type BuildGrainIdHasher = std::hash::BuildHasherDefault<GrainIdHasher>;

/// 64-bit FNV-1a: stable across processes and Rust versions, unlike `DefaultHasher`.
#[derive(Debug)]
pub(crate) struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The identity of one activation of a grain. A grain that is deactivated and activated again
/// gets a new activation id; the storage fence compares it on every commit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActivationId(pub Uuid);

impl ActivationId {
    /// A fresh, time-ordered activation id.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for ActivationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ActivationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}
impl fmt::Debug for ActivationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActivationId({})", self.0.simple())
    }
}

/// The identity of a silo process: a name plus a generation, so that a restarted process is a
/// new silo (a silo declared dead never comes back under the same id).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SiloId {
    name: Arc<str>,
    generation: u64,
}

impl SiloId {
    /// A silo id with an explicit generation.
    #[must_use]
    pub fn new(name: impl Into<Arc<str>>, generation: u64) -> Self {
        Self {
            name: name.into(),
            generation,
        }
    }

    /// The silo's configured name (often its address).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The generation: distinguishes restarts of a process with the same name.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl fmt::Display for SiloId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.generation)
    }
}
impl fmt::Debug for SiloId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiloId({self})")
    }
}

#[cfg(test)]
mod tests;
