//! Typed mocks of grains, for test kits: what `#[grain]` generates next to the reference so a
//! test declares how another grain answers, by method, with the method's own argument and
//! result types checked by the compiler.
//!
//! `#[grain]` on `PlayerGrain` generates `PlayerMock` (one method per grain method, taking a
//! closure of the method's arguments) and `impl GrainMock for PlayerGrain`. A test kit hands out
//! a `PlayerMock` bound to one key or to every key through a [`MockScope`], and keeps the
//! declared replies behind its [`MockSink`]. Grain code never sees any of this.

use std::fmt;
use std::sync::Arc;

use crate::error::CallError;
use crate::grain::GrainInterface;
use crate::id::{GrainId, GrainKey};
use crate::message::Payload;

/// A declared reply: gets the grain called and the encoded argument tuple, returns the encoded
/// reply (or the error the call fails with).
pub type MockResponder = Arc<dyn Fn(&GrainId, Payload) -> Result<Payload, CallError> + Send + Sync>;

/// Which grains of a type a declared reply answers for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MockKeys {
    /// Only the grain with this key.
    One(GrainKey),
    /// Every grain of the type that has no reply of its own for the method.
    Any,
}

/// Where a mock's declared replies go: implemented by a test kit, which answers the calls of
/// the grain under test from them.
pub trait MockSink: Send + Sync {
    /// Declares (or replaces) the reply to calls of `method` on grains of `grain_type` with
    /// `keys`.
    fn declare(
        &self,
        grain_type: &'static str,
        keys: MockKeys,
        method: &'static str,
        responder: MockResponder,
    );
}

/// A typed mock's binding: the test kit that keeps its replies, the grain type and the keys.
#[derive(Clone)]
pub struct MockScope {
    sink: Arc<dyn MockSink>,
    grain_type: &'static str,
    keys: MockKeys,
}

impl fmt::Debug for MockScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockScope")
            .field("grain_type", &self.grain_type)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl MockScope {
    /// A scope for grains of type `G` with `keys`, whose replies go to `sink`.
    #[must_use]
    pub fn new<G: GrainInterface>(sink: Arc<dyn MockSink>, keys: MockKeys) -> Self {
        Self {
            sink,
            grain_type: G::TYPE_NAME,
            keys,
        }
    }

    /// The keys this scope answers for.
    #[must_use]
    pub fn keys(&self) -> &MockKeys {
        &self.keys
    }

    /// Declares the reply to `method` for this scope's grains (the generated mocks call this).
    pub fn declare(&self, method: &'static str, responder: MockResponder) {
        self.sink
            .declare(self.grain_type, self.keys.clone(), method, responder);
    }
}

/// A grain type (or interface) with a generated typed mock (`PlayerMock` for `PlayerGrain`).
/// Implemented by `#[grain]` for the grain type and by `#[grain_interface]` for the interface's
/// reference, so a test needs only the interface to mock its grains.
pub trait GrainMock: GrainInterface {
    /// The generated mock: one method per grain method, each taking a closure that gets the
    /// called grain's key and the method's arguments and returns the method's result.
    type Mock: From<MockScope>;
}
