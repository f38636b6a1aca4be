//! Identities: which grain ([`GrainId`]), which activation of it ([`ActivationId`]) and which
//! silo hosts it ([`SiloId`]).

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

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

/// The longest grain key, in bytes (of a string key; integer and UUID keys are always
/// shorter). A longer key is refused where it enters: the first call through a reference made
/// with it fails with [`CallError::InvalidKey`](crate::CallError::InvalidKey), and so does a
/// call envelope that arrives over the wire with it. Keys end up in storage keys, directory
/// entries and every envelope, so a caller must not be able to make a silo hold megabytes per
/// grain.
pub const MAX_KEY_LEN: usize = 1024;

impl GrainKey {
    /// The length of the key in bytes: of the string, 8 for an integer, 16 for a UUID.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Str(s) => s.len(),
            Self::Int(_) => 8,
            Self::Uuid(_) => 16,
        }
    }

    /// Whether the key is the empty string.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Str(s) if s.is_empty())
    }

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
    /// The stable hash (placement, shards): the same everywhere, so predictable.
    hash: u64,
    /// The hash the in-memory maps use: keyed with a secret of this process, so that nobody
    /// can choose keys that all land in one bucket (HashDoS).
    map_hash: u64,
}

/// The process's secret key of [`GrainId`] map hashes: std's `RandomState` is SipHash-1-3
/// with random keys.
static MAP_HASH_KEY: LazyLock<RandomState> = LazyLock::new(RandomState::new);

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
        let map_hash = MAP_HASH_KEY.hash_one((&*type_name, &key));
        Self(Arc::new(IdInner {
            type_name,
            key,
            hash: h.finish(),
            map_hash,
        }))
    }

    /// Checks the key against [`MAX_KEY_LEN`].
    ///
    /// # Errors
    /// [`CallError::InvalidKey`](crate::CallError::InvalidKey) when the key is too long.
    pub fn check_key(&self) -> Result<(), crate::CallError> {
        let len = self.0.key.len();
        if len > MAX_KEY_LEN {
            return Err(crate::CallError::InvalidKey {
                grain_type: self.0.type_name.to_string(),
                len,
                limit: MAX_KEY_LEN,
            });
        }
        Ok(())
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
    /// placement and sharding). In-memory maps do not use it: `Hash` writes a hash keyed with
    /// a secret of the process, so that crafted keys cannot collide on purpose.
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
        // The keyed hash, computed once when the id was made: not the stable FNV hash, whose
        // collisions anyone can compute.
        state.write_u64(self.0.map_hash);
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

/// A hasher for maps keyed by [`GrainId`]: the id carries its hash already (SipHash-1-3 keyed
/// with a random secret of the process, computed once when the id is made), so hashing it
/// again on every lookup would be wasted work. Maps built with it are as resistant to chosen
/// colliding keys (HashDoS) as std's `RandomState`.
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

/// 64-bit FNV-1a: stable across processes and Rust versions, unlike `DefaultHasher`, and cheap
/// for short keys. Not keyed: use it only for maps whose keys the cluster itself writes (the
/// membership view's silo ids), never for keys a caller chooses (those use [`GrainIdHasher`]).
#[derive(Debug, Clone, Copy)]
pub struct FnvHasher(u64);

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
///
/// It reads `<name>@<generation>`. A generation made by [`SiloId::generate`] is the start time
/// in Unix milliseconds times 2^20, plus 20 random bits: generations of one name order by start
/// time, and two processes of the same name starting in the same millisecond still differ
/// (two processes collide with odds of one in a million; within one process generations only
/// grow).
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

    /// A silo id for a process starting now: see the type's docs for the generation's layout.
    #[must_use]
    pub fn generate(name: impl Into<Arc<str>>) -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let fresh = generation_of(millis, random_bits());
        // Strictly increasing within the process, so that two silos of one process never share
        // a generation either (across processes, the random bits keep them apart).
        let previous = LAST_GENERATION
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(fresh.max(last.saturating_add(1)))
            })
            .unwrap_or_else(|last| last);
        Self::new(name, fresh.max(previous.saturating_add(1)))
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

/// Random bits of a generation: `GENERATION_RANDOM_BITS` of a v4 UUID.
fn random_bits() -> u64 {
    let bytes = Uuid::new_v4().into_bytes();
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

/// The last generation [`SiloId::generate`] made in this process.
static LAST_GENERATION: AtomicU64 = AtomicU64::new(0);

/// How many low bits of a generation are random.
const GENERATION_RANDOM_BITS: u32 = 20;

/// A generation from the start time and random bits (only the low
/// `GENERATION_RANDOM_BITS` of `random` are used).
fn generation_of(millis: u64, random: u64) -> u64 {
    (millis << GENERATION_RANDOM_BITS) | (random & ((1 << GENERATION_RANDOM_BITS) - 1))
}

#[cfg(test)]
mod tests;
