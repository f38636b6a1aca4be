//! The grain programming model: the [`Grain`] trait that `#[grain]` implements.

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::GrainContext;
use crate::error::CallError;
use crate::message::{MethodId, Payload};
use crate::reference::TypedRef;
use crate::state_codec::StateBlob;

/// The persisted state of a grain: serializable, with a default for a grain never written.
///
/// Stored as named MessagePack, so adding a field with `#[serde(default)]` or removing one keeps
/// old state readable.
pub trait GrainState: Serialize + DeserializeOwned + Default + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Default + Send + 'static> GrainState for T {}

/// How long an activation of a grain type may go without calls before its silo collects
/// (deactivates) it. Set per type with `#[grain(idle_after = "90s")]` or
/// `#[grain(idle_after = "never")]`, or on the silo with `SiloBuilder::idle_after`, which
/// overrides both.
///
/// Timers do not count as activity: a grain that must keep running on its own, with no calls,
/// needs [`Never`](Self::Never) (or a reminder, which survives deactivation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IdleAfter {
    /// The silo's `SiloConfig::idle_timeout` (15 minutes by default).
    #[default]
    SiloDefault,
    /// Collected after this long without a call (give or take one collection pass). The silo's
    /// collection passes run at least this often (each scans every activation), so keep it to
    /// seconds or more on a silo with many activations.
    After(std::time::Duration),
    /// Never collected for being idle: the activation stays until it asks to be deactivated
    /// ([`GrainContext::deactivate_on_idle`]), the silo deactivates it on request
    /// (`Silo::deactivate`), a failure ends it, or the silo shuts down.
    Never,
}

impl From<std::time::Duration> for IdleAfter {
    fn from(after: std::time::Duration) -> Self {
        Self::After(after)
    }
}

/// How many activations of one stateless worker key a silo may run side by side
/// (`#[grain(stateless_worker)]` or `#[grain(stateless_worker = 4)]`; `SiloBuilder::stateless_workers`
/// overrides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatelessWorker {
    /// One per core of the silo's machine (`std::thread::available_parallelism`).
    PerCore,
    /// At most this many (at least 1; the macro and the builder refuse 0).
    Max(usize),
}

impl StatelessWorker {
    /// The maximum number of local activations per key this gives on this machine.
    #[must_use]
    pub fn max_activations(self) -> usize {
        match self {
            Self::PerCore => std::thread::available_parallelism().map_or(1, usize::from),
            Self::Max(n) => n,
        }
    }
}

/// What the runtime knows of one grain method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// The method's name as written in Rust.
    pub name: &'static str,
    /// The method's stable id ([`MethodId::of`] of its name).
    pub id: MethodId,
    /// Declared `#[read_only]`: may interleave with other read-only turns.
    pub read_only: bool,
    /// Declared `#[one_way]`: callers do not wait for (and get no) reply.
    pub one_way: bool,
}

/// The method a silo calls to deliver a reminder tick: handled by the runtime for every grain
/// type (it checks the tick against the stored due time, then runs the grain's
/// [`on_reminder`](Grain::on_reminder)). Its arguments are `(name, due_ms)`; its reply is the
/// reminder's next due time in milliseconds since the Unix epoch (`None`: no such reminder).
pub const REMINDER_METHOD: MethodInfo = MethodInfo {
    name: "granary.reminder",
    id: MethodId::of("granary.reminder"),
    read_only: false,
    one_way: false,
};

/// What a caller needs to know of a grain type: its stable name, its methods and its typed
/// reference. Reference lookups (`Client::grain`, `ClusterClient::grain`,
/// [`GrainContext::grain`], a test kit's `mock`) take any `GrainInterface`.
///
/// Implemented for every [`Grain`] (so `client.grain::<PlayerGrain>(key)` works where the
/// implementation is linked) and by `#[grain_interface]` for the reference it generates from a
/// trait (so `client.grain::<PlayerRef>(key)` works with only the interface crate). Both give
/// the same reference, with the same wire format and method ids: a grain declared with
/// `#[grain(implements = Player)]` takes its name and methods from the interface.
pub trait GrainInterface: 'static {
    /// The stable type name of the grains behind it ([`Grain::TYPE_NAME`]).
    const TYPE_NAME: &'static str;
    /// Every method callable through the reference ([`Grain::METHODS`]).
    const METHODS: &'static [MethodInfo];
    /// The typed reference (`PlayerRef`).
    type Ref: TypedRef;
}

impl<G: Grain> GrainInterface for G {
    const TYPE_NAME: &'static str = <G as Grain>::TYPE_NAME;
    const METHODS: &'static [MethodInfo] = <G as Grain>::METHODS;
    type Ref = <G as Grain>::Ref;
}

/// Whether `methods` declares `name` with at least the flags given (a method not in `methods`
/// passes: the compiler reports it elsewhere). `#[grain(implements = ..)]` checks a grain
/// method's own `#[read_only]`/`#[one_way]` against its interface with it, at compile time.
#[doc(hidden)]
#[must_use]
pub const fn declares_flags(
    methods: &[MethodInfo],
    name: &str,
    read_only: bool,
    one_way: bool,
) -> bool {
    let mut i = 0;
    while i < methods.len() {
        let method = &methods[i];
        if str_eq(method.name, name) {
            return (method.read_only || !read_only) && (method.one_way || !one_way);
        }
        i += 1;
    }
    true
}

/// `a == b`, in a `const fn`.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A grain type. Implemented by the `#[grain]` attribute on an `impl` block; grain authors do
/// not implement it by hand.
///
/// A grain is a plain struct (its non-persisted, per-activation fields) whose `pub async fn`
/// methods take `&self` and `&GrainContext<Self>`. Turns of one activation run one at a time;
/// the persisted state lives in the context ([`GrainContext::state`]).
pub trait Grain: Send + Sync + Sized + 'static {
    /// The stable type name: part of every grain id, storage key and envelope of this type.
    const TYPE_NAME: &'static str;
    /// Whether calls on the same logical call chain may reenter a waiting turn (A→B→A).
    /// When false such a call fails at once with [`CallError::Cycle`].
    const REENTRANT: bool;
    /// Every method callable through the grain's reference.
    const METHODS: &'static [MethodInfo];
    /// The persisted state.
    type State: GrainState;
    /// The typed reference the macro generates (`PlayerRef` for `PlayerGrain`).
    type Ref: TypedRef;
    /// The schema version of [`State`](Self::State), stored with it. Bump it (with
    /// `#[grain(state_version = N, upgrade = path)]`) when a change of the state type needs more
    /// than `#[serde(default)]`, and give [`upgrade_state`](Self::upgrade_state) a step from the
    /// previous version.
    const STATE_VERSION: u32 = 1;
    /// How long an idle activation of this type lives (`#[grain(idle_after = "...")]`); the
    /// silo's builder may override it. Default: the silo's idle timeout.
    const IDLE_AFTER: IdleAfter = IdleAfter::SiloDefault;
    /// The silo role new activations of this type ask for (`#[grain(role = "sim")]`): only
    /// silos with the role host the type. `ClusterConfig::require_role` overrides it. Default:
    /// none.
    const ROLE: Option<&'static str> = None;
    /// `Some` for a stateless worker (`#[grain(stateless_worker)]`): no state, nothing in the
    /// store, served by the silo that receives the call, with up to this many activations of
    /// one key running side by side on each silo. Default: `None`, an ordinary grain (one
    /// activation in the cluster).
    const STATELESS_WORKER: Option<StatelessWorker> = None;

    /// Upgrades a stored state payload of schema version `from` to `from + 1`. Loading a state of
    /// an older version runs the steps in order; the next write stores
    /// [`STATE_VERSION`](Self::STATE_VERSION). The default has no steps.
    ///
    /// # Errors
    /// What the step reports; the activation then fails with a
    /// [`StateError::Upgrade`](crate::state_codec::StateError::Upgrade) and the stored state is
    /// left as it is.
    fn upgrade_state(from: u32, blob: &StateBlob) -> Result<StateBlob, String> {
        let _ = blob;
        Err(format!(
            "{} has no upgrade step from state schema version {from}",
            Self::TYPE_NAME
        ))
    }

    /// Runs method `method` with `args`; generated by the macro.
    fn invoke<'a>(
        &'a self,
        ctx: &'a GrainContext<Self>,
        method: MethodId,
        args: Payload,
    ) -> BoxFuture<'a, Result<Payload, CallError>>;

    /// Runs after the state is loaded and before any call is let in. An error fails the
    /// activation: the calls waiting for it get [`CallError::ActivationFailed`].
    fn on_activate<'a>(
        &'a self,
        ctx: &'a GrainContext<Self>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        let _ = ctx;
        Box::pin(async { Ok(()) })
    }

    /// Runs when the activation is deactivated (idle, on request, on shutdown); may write
    /// state. Not run after a panic or a storage conflict.
    fn on_deactivate<'a>(
        &'a self,
        ctx: &'a GrainContext<Self>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        let _ = ctx;
        Box::pin(async { Ok(()) })
    }

    /// Runs when the timer `name` registered with [`GrainContext::set_timer`] fires, as an
    /// ordinary exclusive turn.
    fn on_timer<'a>(
        &'a self,
        ctx: &'a GrainContext<Self>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        let _ = ctx;
        tracing::warn!(grain = %ctx.id(), timer = name, "timer fired but the grain has no #[on_timer] method");
        Box::pin(async { Ok(()) })
    }

    /// Runs when the reminder `name` registered with [`GrainContext::register_reminder`] fires,
    /// as an ordinary exclusive turn: the grain is activated for it if needed. State written
    /// here commits together with the reminder's advance to its next due time.
    fn on_reminder<'a>(
        &'a self,
        ctx: &'a GrainContext<Self>,
        name: &'a str,
        tick: crate::provider::ReminderTick,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        let _ = tick;
        tracing::warn!(grain = %ctx.id(), reminder = name, "reminder fired but the grain has no #[on_reminder] method");
        Box::pin(async { Ok(()) })
    }

    /// The method with id `id`, if the type has one.
    #[must_use]
    fn method(id: MethodId) -> Option<&'static MethodInfo> {
        Self::METHODS.iter().find(|m| m.id == id)
    }
}

#[cfg(test)]
mod tests;
