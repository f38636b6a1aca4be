//! The `#[grain]` attribute: turns an `impl` block into a grain type, with its dispatch and
//! its typed reference; and `#[grain_interface]`, which declares a grain's methods on a trait
//! apart from the implementation. Use them through the `granary` facade (`granary::grain`,
//! `granary::grain_interface`).
//!
//! ```
//! use granary::{CallError, GrainContext, ReminderTick, Result, grain};
//! use serde::{Deserialize, Serialize};
//!
//! /// What a player keeps between activations.
//! #[derive(Default, Serialize, Deserialize)]
//! pub struct PlayerState {
//!     health: i32,
//! }
//!
//! /// A player; its fields live as long as one activation.
//! #[derive(Default)]
//! pub struct PlayerGrain {}
//!
//! #[grain(name = "player", state = PlayerState)]
//! impl PlayerGrain {
//!     /// Deals damage; returns whether the player survived.
//!     pub async fn take_damage(&self, ctx: &GrainContext<Self>, amount: i32, source: String) -> Result<bool> {
//!         let alive = {
//!             let mut state = ctx.state();
//!             state.health -= amount;
//!             state.health > 0
//!         };
//!         if source.is_empty() {
//!             return Err(CallError::rejected(ctx.id(), "damage needs a source"));
//!         }
//!         ctx.write_state().await?;
//!         Ok(alive)
//!     }
//!
//!     /// The player's health.
//!     #[read_only]
//!     pub async fn health(&self, ctx: &GrainContext<Self>) -> Result<i32> {
//!         Ok(ctx.state().health)
//!     }
//!
//!     /// Fire and forget: the caller does not wait for the grain.
//!     #[one_way]
//!     pub async fn ping(&self, ctx: &GrainContext<Self>, n: u32) -> Result<()> {
//!         ctx.set_timer("regen", std::time::Duration::from_secs(u64::from(n)), None);
//!         Ok(())
//!     }
//!
//!     #[on_activate]
//!     async fn activated(&self, ctx: &GrainContext<Self>) -> Result<()> {
//!         if ctx.version() == 0 {
//!             ctx.state().health = 100;
//!         }
//!         Ok(())
//!     }
//!
//!     #[on_deactivate]
//!     async fn deactivating(&self, ctx: &GrainContext<Self>) -> Result<()> {
//!         ctx.write_state().await
//!     }
//!
//!     #[on_timer]
//!     async fn tick(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()> {
//!         if name == "regen" {
//!             ctx.state().health += self.helper();
//!         }
//!         Ok(())
//!     }
//!
//!     #[on_reminder]
//!     async fn remind(&self, ctx: &GrainContext<Self>, name: &str, tick: ReminderTick) -> Result<()> {
//!         if name == "daily" {
//!             ctx.state().health = 100;
//!             ctx.write_state().await?;
//!         }
//!         let _ = tick.missed;
//!         Ok(())
//!     }
//!
//!     // Neither `pub async fn` nor a hook: left alone.
//!     fn helper(&self) -> i32 {
//!         1
//!     }
//! }
//!
//! // The generated reference: one async method per grain method, without `ctx`.
//! async fn duel(player: &PlayerRef) -> Result<bool> {
//!     player.ping(3).await?;
//!     let alive = player.take_damage(20, "dragon".to_owned()).await?;
//!     Ok(alive && player.health().await? > 0)
//! }
//!
//! use granary::Grain;
//! assert_eq!(PlayerGrain::TYPE_NAME, "player");
//! let names: Vec<_> = PlayerGrain::METHODS.iter().map(|m| m.name).collect();
//! assert_eq!(names, ["take_damage", "health", "ping"]);
//! # let _ = duel;
//! ```
//!
//! The attribute's rules and what it generates are documented on [`grain`].

mod args;
mod errors;
mod expand;
mod parse;

use proc_macro::TokenStream;

/// Makes the annotated `impl` block a grain type.
///
/// # Arguments
///
/// - `name = "player"` (required): the stable type name, stored in grain ids, storage keys and
///   envelopes. Renaming the Rust type is safe; changing `name` orphans stored grains.
/// - `state = PlayerState` (required): the persisted state, any `Serialize + Deserialize +
///   Default` type (`state = ()` for none).
/// - `reentrant`: calls on the same call chain may reenter a waiting turn (A→B→A).
/// - `reference = PlayerHandle`: the name of the generated reference (by default the type's
///   name without a trailing `Grain`, plus `Ref`: `PlayerGrain` → `PlayerRef`, `Lobby` →
///   `LobbyRef`).
/// - `state_version = 2`: the schema version of the state, stored with it (1 by default). Bump
///   it when a change of the state type needs more than `#[serde(default)]` on a new field.
/// - `upgrade = path::to::fn`: a `fn(from: u32, &StateBlob) -> Result<StateBlob, String>` that
///   turns a stored state of version `from` into version `from + 1`; loading an older state runs
///   the steps in order and the next write stores the current version (see
///   `granary::codec::state_codec`).
/// - `idle_after = "90s"`: how long an activation of this type may go without calls before its
///   silo deactivates it, instead of the silo's `idle_timeout`: one or more `<integer><unit>`
///   parts with the units `ms`, `s`, `min`, `h`, `d` (`"1h30min"`), more than zero; or
///   `idle_after = "never"` to keep activations until they ask to go, are deactivated on request
///   or the silo stops. Timer ticks are not calls. `SiloBuilder::idle_after` overrides it.
/// - `role = "sim"`: new activations of this type go only to silos with this role
///   (`SiloBuilder::role`); a silo that registers the type without the role does not host it.
///   `ClusterConfig::require_role` overrides it.
/// - `stateless_worker` or `stateless_worker = 4`: a stateless worker (Orleans'
///   `[StatelessWorker]`): no state (`state` may be left out; any state but `()` is refused),
///   nothing written to the store, each call served by the silo that receives it, with up to
///   this many activations of one key running side by side on each silo (alone: one per core).
///   `SiloBuilder::stateless_workers` overrides the maximum. Its context refuses
///   `write_state`, `clear_state`, `publish` and reminders with `CallError::StatelessWorker`;
///   timers belong to the one activation that set them.
/// - `crate = "path"`: where the `granary` facade is, for crates that cannot name it
///   `::granary`. The path must provide `__private::{core, BoxFuture, serde}`.
/// - `implements = path::Player` (instead of `name`): the grain implements the
///   [`grain_interface`] trait `Player`, declared apart (typically in an API crate). The type
///   name, the methods (with their `#[read_only]` and `#[one_way]` flags, declared on the
///   interface; a grain method may repeat them, and one the interface lacks is a compile error),
///   the reference (`path::PlayerRef`) and the mock (`path::PlayerMock`) come
///   from the interface; the grain's `pub async fn`s must be exactly the interface's methods
///   with the same argument and result types, or compilation fails at the grain's code (a
///   missing method: "not all trait items implemented"; an extra one: "not a member of trait";
///   another type: "incompatible type for trait"). `reference` cannot be given.
///
/// # Stateless workers
///
/// `#[grain(stateless_worker)]` makes a type whose keys are served by several activations at
/// once on every silo that hosts it (up to one per core, or `stateless_worker = N`): for work
/// that keeps nothing, such as checking login tokens, matchmaking fan-out or reading hot
/// catalogue data. Each call is served by the silo that receives it; each activation still
/// runs one turn at a time. In the example, the barrier opens only when three turns of the
/// one key run side by side:
///
/// ```
/// use std::sync::Arc;
/// use granary::{GrainContext, Result, Silo, grain};
/// use tokio::sync::Barrier;
///
/// /// Checks login tokens: no state, up to three activations per key and silo.
/// pub struct TokenCheck {
///     barrier: Arc<Barrier>,
/// }
///
/// #[grain(name = "token_check", stateless_worker = 3)]
/// impl TokenCheck {
///     pub async fn check(&self, ctx: &GrainContext<Self>, token: String) -> Result<bool> {
///         let _ = ctx; // no `ctx.state()`: a stateless worker has none
///         self.barrier.wait().await;
///         Ok(token.starts_with("ok-"))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let barrier = Arc::new(Barrier::new(3));
/// let silo = Silo::builder()
///     .register_with::<TokenCheck>(move |_| TokenCheck { barrier: barrier.clone() })
///     .start()
///     .await?;
/// let login = silo.client().grain::<TokenCheck>("login");
/// let (a, b, c) = tokio::join!(
///     login.check("ok-1".into()),
///     login.check("ok-2".into()),
///     login.check("stolen".into()),
/// );
/// assert_eq!((a?, b?, c?), (true, true, false));
/// assert_eq!(silo.activation_count(), 3, "three activations of one key");
/// silo.shutdown().await?;
/// # Ok(())
/// # }
/// ```
///
/// # Methods and hooks
///
/// Every `pub async fn` taking `&self` is a grain method. Its second parameter is the context,
/// `ctx: &GrainContext<Self>`; the rest are its arguments, which travel between silos and so
/// must be owned, serializable types (`String`, not `&str`). It returns `Result<T>` (or
/// `Result<T, CallError>`) with `T` serializable, or `Result<T, E>` with `E` the grain's own
/// domain error: `E: Serialize + DeserializeOwned + From<CallError>` (a variant that wraps the
/// `CallError` lets the method use `?` on the context's calls). The reference's method then
/// returns `Result<T, E>` too, on every silo: the grain's error arrives as it was returned
/// (carried by `CallError::Domain`), and a failure of the call itself as `E::from(CallError)`.
/// A domain error fails the turn like any error: its uncommitted events are discarded. Method ids are the FNV-1a hash of the
/// method's name (`MethodId::of`): renaming a method changes its id, reordering does not.
///
/// - `#[read_only]`: the method does not change state and may interleave with other read-only
///   turns.
/// - `#[one_way]`: callers do not wait for the method; it must return `Result<()>`.
/// - `#[on_activate]`, `#[on_deactivate]`: `async fn(&self, ctx: &GrainContext<Self>) ->
///   Result<()>`, at most one of each, run after the state is loaded and when the activation
///   ends.
/// - `#[on_timer]`: `async fn(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()>`, run
///   when a timer set with `ctx.set_timer` fires.
/// - `#[on_reminder]`: `async fn(&self, ctx: &GrainContext<Self>, name: &str, tick:
///   ReminderTick) -> Result<()>`, run when a durable reminder registered with
///   `ctx.register_reminder` fires (the grain is activated for it if needed).
///
/// Other functions (private, not `async`, without `self`) are left alone.
///
/// # Generated items
///
/// With `implements = path::Player`, only `impl Grain`, `impl GrainMock` (the interface's
/// mock) and `impl path::Player for PlayerGrain` (delegating to the grain's methods) are
/// generated. Without it:
///
/// - `impl Grain for PlayerGrain`: `TYPE_NAME`, `REENTRANT`, `METHODS` (and `STATE_VERSION`,
///   `IDLE_AFTER`, `ROLE`, `STATELESS_WORKER` when given), the dispatch and the hooks.
/// - `pub struct PlayerRef`: `Clone`, `Debug`, `Eq` and `Hash` by grain id, serialized as its
///   grain id, `From<GrainRef>`, `TypedRef`, `id()`, `with_timeout(..)`, and for each grain
///   method an `async fn` of the same name and arguments (without `ctx`) returning
///   `Result<T, CallError>` (`Result<T, E>` for a method with a domain error `E`). A grain method may therefore not be called `id`,
///   `with_timeout` or `clone`.
/// - `pub struct PlayerMock` (the reference's name with `Mock` for a trailing `Ref`:
///   `reference = PlayerHandle` gives `PlayerHandleMock`) and `impl GrainMock for PlayerGrain`:
///   the typed mock a test kit hands out (`GrainTest::mock::<PlayerGrain>().key("alice")` or
///   `.any_key()`) to declare how the grain's methods answer. For each grain method a `fn` of
///   the same name taking a closure `Fn(&GrainKey, args..) -> Result<T, CallError>` (`Result<T,
///   E>` for a domain error `E`) and returning the mock, so declarations chain; a wrong method
///   name, argument or reply type is a compile error.
#[proc_macro_attribute]
pub fn grain(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::grain(args.into(), item.into()).into()
}

/// Declares a grain's callable surface apart from any implementation: a trait whose methods a
/// front end calls through the generated reference, and a grain type implements with
/// `#[grain(implements = Trait)]`. A crate with only the interface depends on `granary` alone.
///
/// ```
/// mod api {
///     // The interface crate: no grain logic.
///     use granary::{Result, grain_interface};
///
///     /// What a player grain answers.
///     #[grain_interface(name = "player")]
///     pub trait Player {
///         /// Deals damage; returns the health left.
///         async fn take_damage(&self, amount: u32) -> Result<u32>;
///         /// The player's health.
///         #[read_only]
///         async fn hp(&self) -> Result<u32>;
///     }
/// }
///
/// mod game {
///     // The game's crate: the implementation, checked against the interface.
///     use granary::{GrainContext, Result, grain};
///
///     /// A player.
///     #[derive(Default)]
///     pub struct PlayerGrain;
///
///     #[grain(implements = super::api::Player, state = u32)]
///     impl PlayerGrain {
///         pub async fn take_damage(&self, ctx: &GrainContext<Self>, amount: u32) -> Result<u32> {
///             let hp = {
///                 let mut hp = ctx.state();
///                 *hp = hp.saturating_sub(amount);
///                 *hp
///             };
///             ctx.write_state().await?;
///             Ok(hp)
///         }
///
///         pub async fn hp(&self, ctx: &GrainContext<Self>) -> Result<u32> {
///             Ok(*ctx.state())
///         }
///
///         #[on_activate]
///         async fn start(&self, ctx: &GrainContext<Self>) -> Result<()> {
///             if ctx.version() == 0 {
///                 *ctx.state() = 100;
///             }
///             Ok(())
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let silo = granary::Silo::builder().register::<game::PlayerGrain>().start().await?;
/// // A caller names only the interface's reference.
/// let player = silo.client().grain::<api::PlayerRef>("alice");
/// assert_eq!(player.take_damage(30).await?, 70);
/// assert_eq!(player.hp().await?, 70);
/// // The same grain through the implementation's type: the same reference.
/// let same: api::PlayerRef = silo.client().grain::<game::PlayerGrain>("alice");
/// assert_eq!(same, player);
/// silo.shutdown().await?;
/// # Ok(())
/// # }
/// ```
///
/// # Arguments
///
/// - `name = "player"` (required): the stable type name of the grains implementing the
///   interface, as `#[grain(name = ..)]` would give it.
/// - `crate = "path"`: where the `granary` facade is, as for `#[grain]`.
///
/// # Methods
///
/// Every item is an `async fn` without a body, taking `&self` and the method's arguments (no
/// context): the same rules as a `#[grain]` method's arguments and result, domain errors
/// included, with `#[read_only]` and `#[one_way]` declared here (the implementation may repeat
/// them; a flag only it has is a compile error). Hooks belong on the
/// implementation. Method ids are the same FNV-1a hash of the name, so callers through the
/// interface's reference and through a plain `#[grain]` of the same name interoperate.
///
/// # Generated items
///
/// - The trait itself, as `pub trait Player: Grain` with each method taking `ctx:
///   &GrainContext<Self>` after `&self` and returning `impl Future<Output = ..> + Send`;
///   `#[grain(implements = Player)]` implements it.
/// - `PlayerRef` (the trait's name plus `Ref`): the typed reference, as `#[grain]` generates
///   it, and `impl GrainInterface for PlayerRef`, so `client.grain::<PlayerRef>(key)` and
///   `ctx.grain::<PlayerRef>(key)` work with the interface alone.
/// - `PlayerMock` and `impl GrainMock for PlayerRef`: `kit.mock::<PlayerRef>()` in a test kit.
#[proc_macro_attribute]
pub fn grain_interface(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::grain_interface(args.into(), item.into()).into()
}

/// Declares an observer interface: what grains may call on an object that a client (a game
/// front end, a test) serves, to push to it. The generated reference (`MatchWatcherRef`) is
/// serializable, so a grain keeps it in its state (alone or in an `ObserverSet`) and calls it
/// like a grain reference: one-way (`#[one_way]`, fire and forget: queued for the client, never
/// waiting on it) or request/response with a deadline.
///
/// ```
/// use granary::{Result, observer};
///
/// /// What a player's screen is told about a match.
/// #[observer(name = "match_watcher")]
/// pub trait MatchWatcher {
///     /// The score changed.
///     #[one_way]
///     async fn on_score(&self, home: u32, away: u32) -> Result<()>;
///     /// Asks whether the player is still looking; answered by the client.
///     async fn are_you_there(&self) -> Result<bool>;
/// }
///
/// /// The client's object behind the reference.
/// struct Screen(tokio::sync::mpsc::UnboundedSender<(u32, u32)>);
///
/// impl MatchWatcher for Screen {
///     async fn on_score(&self, home: u32, away: u32) -> Result<()> {
///         let _ = self.0.send((home, away));
///         Ok(())
///     }
///     async fn are_you_there(&self) -> Result<bool> {
///         Ok(true)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let silo = granary::Silo::builder().start().await?;
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let screen = silo.client().observe(MatchWatcherRef::object(Screen(tx)));
/// // What a grain would do with the reference it was given.
/// let watcher: MatchWatcherRef = screen.reference();
/// watcher.on_score(1, 0).await?;
/// assert!(watcher.are_you_there().await?);
/// assert_eq!(rx.recv().await, Some((1, 0)));
/// // Dropping the handle ends the object: calls then fail with `ObserverGone`.
/// drop(screen);
/// assert!(watcher.are_you_there().await.unwrap_err().is_gone());
/// silo.shutdown().await?;
/// # Ok(())
/// # }
/// ```
///
/// # Arguments
///
/// - `name = "match_watcher"` (required): the interface's stable name; the reference's type
///   name is `observer:` followed by it.
/// - `crate = "path"`: where the `granary` facade is, as for `#[grain]`.
///
/// # Methods
///
/// As for [`grain_interface`]: `async fn`s without a body taking `&self` and owned,
/// serializable arguments, returning `Result<T>` (or a domain error), `#[one_way]` allowed.
///
/// # Generated items
///
/// - The trait itself, `pub trait MatchWatcher: Send + Sync + 'static`, each method returning
///   `impl Future<Output = ..> + Send` (implement it with `async fn`).
/// - `MatchWatcherRef`: the typed reference, as for a grain interface, with `impl
///   GrainInterface` and `impl ObserverInterface`, and `MatchWatcherRef::object(object)`,
///   which wraps an object for `observe`.
/// - `MatchWatcherMock`: `kit.mock::<MatchWatcherRef>()` in a test kit.
#[proc_macro_attribute]
pub fn observer(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::observer(args.into(), item.into()).into()
}
