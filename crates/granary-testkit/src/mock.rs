//! [`Mocks`]: the typed replies a [`GrainTest`](crate::GrainTest) answers its grain's calls to
//! other grains with, declared through the mocks `#[grain]` generates (`PlayerMock`).

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use granary_core::{GrainId, GrainKey, GrainMock, MockKeys, MockResponder, MockScope, MockSink};

use crate::host::KitHost;

/// Hands out the typed mock of grain type `T` (`PlayerMock` for `PlayerGrain`, or for the
/// interface reference `PlayerRef`), bound to one key or to every key. Get one from [`GrainTest::mock`](crate::GrainTest::mock).
pub struct Mocks<T: GrainMock> {
    sink: Arc<dyn MockSink>,
    grain: PhantomData<fn() -> T>,
}

impl<T: GrainMock> fmt::Debug for Mocks<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mocks")
            .field("grain_type", &T::TYPE_NAME)
            .finish_non_exhaustive()
    }
}

impl<T: GrainMock> Mocks<T> {
    pub(crate) fn new(host: Arc<KitHost>) -> Self {
        Self {
            sink: host,
            grain: PhantomData,
        }
    }

    /// The mock for the grain of type `T` with `key`: its replies answer calls to that grain
    /// only, and win over replies declared for [`any_key`](Self::any_key).
    #[must_use]
    pub fn key(&self, key: impl Into<GrainKey>) -> T::Mock {
        T::Mock::from(MockScope::new::<T>(
            self.sink.clone(),
            MockKeys::One(key.into()),
        ))
    }

    /// The mock for every grain of type `T`: its replies answer calls to any key that has no
    /// reply of its own for the method (the closures get the key called).
    #[must_use]
    pub fn any_key(&self) -> T::Mock {
        T::Mock::from(MockScope::new::<T>(self.sink.clone(), MockKeys::Any))
    }
}

/// The declared replies, by grain type, keys and method.
#[derive(Default)]
pub(crate) struct Replies {
    by_slot: HashMap<(String, MockKeys, &'static str), MockResponder>,
}

impl Replies {
    /// The reply for a call of `method` on `target`: the one for its key, else the one for any
    /// key of its type.
    pub(crate) fn find(&self, target: &GrainId, method: &'static str) -> Option<MockResponder> {
        let grain_type = target.type_name().to_owned();
        let one = (grain_type, MockKeys::One(target.key().clone()), method);
        if let Some(found) = self.by_slot.get(&one) {
            return Some(found.clone());
        }
        let any = (one.0, MockKeys::Any, method);
        self.by_slot.get(&any).cloned()
    }
}

impl MockSink for KitHost {
    fn declare(
        &self,
        grain_type: &'static str,
        keys: MockKeys,
        method: &'static str,
        responder: MockResponder,
    ) {
        self.state
            .lock()
            .replies
            .by_slot
            .insert((grain_type.to_owned(), keys, method), responder);
    }
}
