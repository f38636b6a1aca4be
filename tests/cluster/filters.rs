//! Call filters and the request context: an authorization filter that admits a player's calls
//! only from its own user, through a cluster client and across silos on a real Redis; the
//! context carried grain to grain across silos and into one-way calls; outgoing filters on a
//! client and on a silo; every kind of turn (call, one-way, timer, reminder) through the
//! incoming filters, in order; a panicking filter and an over-limit context as typed errors.

use std::sync::Arc;
use std::time::Duration;

use granary::provider::MemoryStore;
use granary::{
    CallError, CallFilter, CallKind, ClientConfig, ClusterClient, ClusterConfig, FilterCall,
    GrainContext, GrainId, MAX_CONTEXT_ENTRIES, Refusal, Result, Silo, SiloConfig, SiloEvent,
    grain,
};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use tokio::sync::mpsc;

const SECRET: &[u8] = b"a cluster secret of at least 32 bytes";
const PLAYER: &str = "filters.player";

/// What a player saw in a one-way call: its key and the request context's `user`.
type Poked = (String, Option<String>);

/// A player. Its calls are what the `Auth` filter guards.
#[derive(Debug)]
pub struct PlayerGrain {
    poked: mpsc::UnboundedSender<Poked>,
}

#[grain(name = "filters.player", state = ())]
impl PlayerGrain {
    /// The `user` of the call's request context.
    pub async fn hit(&self, ctx: &GrainContext<Self>) -> Result<Option<String>> {
        Ok(ctx.request_context().get("user").map(str::to_owned))
    }

    /// The whole request context of the call.
    pub async fn context(&self, ctx: &GrainContext<Self>) -> Result<Vec<(String, String)>> {
        Ok(ctx
            .request_context()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// Reports the `user` it was poked with.
    #[one_way]
    pub async fn poke(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let user = ctx.request_context().get("user").map(str::to_owned);
        let _ = self.poked.send((ctx.key().to_string(), user));
        Ok(())
    }
}

/// A lobby, on another silo than the players: calls them with its incoming context.
#[derive(Debug, Default)]
pub struct LobbyGrain;

#[grain(name = "filters.lobby", state = ())]
impl LobbyGrain {
    /// Calls `player` (its context inherited).
    pub async fn visit(&self, ctx: &GrainContext<Self>, player: String) -> Result<Option<String>> {
        ctx.grain::<PlayerGrain>(player).hit().await
    }

    /// The context `player` sees in a call from this lobby.
    pub async fn context_of(
        &self,
        ctx: &GrainContext<Self>,
        player: String,
    ) -> Result<Vec<(String, String)>> {
        ctx.grain::<PlayerGrain>(player).context().await
    }

    /// Pokes `player` with a one-way call (its context inherited).
    pub async fn poke(&self, ctx: &GrainContext<Self>, player: String) -> Result<()> {
        ctx.grain::<PlayerGrain>(player).poke().await
    }

    /// Calls `player` with more context entries than allowed.
    pub async fn bloat(&self, ctx: &GrainContext<Self>, player: String) -> Result<Option<String>> {
        let mut player = ctx.grain::<PlayerGrain>(player);
        for i in 0..=MAX_CONTEXT_ENTRIES {
            player = player.with_context(format!("k{i}"), "v");
        }
        player.hit().await
    }
}

/// Admits a call to a player only when the request context's `user` is the player's key.
struct Auth;

impl CallFilter for Auth {
    fn name(&self) -> &str {
        "auth"
    }

    async fn before(&self, call: &mut FilterCall<'_>) -> std::result::Result<(), Refusal> {
        if call.grain().type_name() != PLAYER {
            return Ok(());
        }
        let key = call.grain().key().to_string();
        match call.context().get("user") {
            Some(user) if user == key => Ok(()),
            Some(user) => Err(Refusal::new(format!("{user} may not act for {key}"))),
            None => Err(Refusal::new("no user in the request context")),
        }
    }
}

/// An outgoing filter that signs calls in as `user` (a front end's session).
struct SignIn(&'static str);

impl CallFilter for SignIn {
    async fn before(&self, call: &mut FilterCall<'_>) -> std::result::Result<(), Refusal> {
        call.context_mut().insert("user", self.0);
        Ok(())
    }
}

/// An outgoing filter that tags every call with the silo's region.
struct Region(&'static str);

impl CallFilter for Region {
    async fn before(&self, call: &mut FilterCall<'_>) -> std::result::Result<(), Refusal> {
        call.context_mut().insert("region", self.0);
        Ok(())
    }
}

/// Starts a silo of `cluster` on the Redis at `url`, built by `build`.
async fn cluster_silo(
    url: &str,
    cluster: &str,
    name: &str,
    build: impl FnOnce(granary::SiloBuilder) -> granary::SiloBuilder,
) -> Silo {
    let store = Arc::new(
        RedisStore::connect(RedisConfig::new(url, cluster).shards(8))
            .await
            .unwrap(),
    );
    let builder = Silo::builder()
        .config(SiloConfig {
            name: name.into(),
            idle_timeout: Duration::from_secs(600),
            call_timeout: Duration::from_secs(30),
            ..SiloConfig::test_profile()
        })
        .storage(store.clone())
        .membership(Arc::new(RedisMembership::new(store)))
        .cluster(
            ClusterConfig::new(cluster, SECRET, "127.0.0.1:0".parse().unwrap()).test_profile(),
        );
    build(builder).start().await.unwrap()
}

/// Waits until `silo` sees `n` active members.
async fn settle(silo: &Silo, n: usize) {
    let mut events = silo.events().with_deadline(Duration::from_secs(20));
    if silo.members().len() < n {
        events
            .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if m.len() == n))
            .await
            .unwrap();
    }
}

fn refused_by_auth(err: &CallError, needle: &str) -> bool {
    matches!(err, CallError::Refused { filter, reason, .. }
        if filter == "auth" && reason.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_answer_only_their_own_user_through_a_client_and_across_silos() {
    let (cluster, url) = (unique_name("filters"), shared_redis_url().await);
    let (poked_tx, mut poked) = mpsc::unbounded_channel();
    // Lobbies live on the front silo, players on the other: every lobby → player call
    // crosses silos. Both silos run the authorization filter; the front tags its calls.
    let front = cluster_silo(&url, &cluster, "front", |b| {
        b.register::<LobbyGrain>()
            .incoming_filter(Auth)
            .outgoing_filter(Region("eu"))
    })
    .await;
    let players = cluster_silo(&url, &cluster, "players", move |b| {
        b.register_with(move |_| PlayerGrain {
            poked: poked_tx.clone(),
        })
        .incoming_filter(Auth)
    })
    .await;
    settle(&front, 2).await;
    settle(&players, 2).await;
    let gateways = vec![front.address().unwrap(), players.address().unwrap()];
    let client = ClusterClient::connect(ClientConfig::new(&cluster, SECRET, gateways))
        .await
        .unwrap();

    // Straight from the client, whichever gateway it goes through.
    let alice = client.clone().with_context("user", "alice");
    for _ in 0..4 {
        let me = alice.grain::<PlayerGrain>("alice").hit().await.unwrap();
        assert_eq!(me.as_deref(), Some("alice"));
        let err = alice.grain::<PlayerGrain>("bob").hit().await.unwrap_err();
        assert!(
            refused_by_auth(&err, "alice may not act for bob"),
            "{err:?}"
        );
    }
    let err = client
        .grain::<PlayerGrain>("alice")
        .hit()
        .await
        .unwrap_err();
    assert!(refused_by_auth(&err, "no user"), "{err:?}");
    assert!(!err.is_retryable());
    // An outgoing filter on the client signs its calls in.
    let bob = client.clone().outgoing_filter(SignIn("bob"));
    let me = bob.grain::<PlayerGrain>("bob").hit().await.unwrap();
    assert_eq!(me.as_deref(), Some("bob"));

    // Grain to grain across silos: the lobby's call carries the context it was called with,
    // and the front silo's outgoing filter adds its region.
    let lobby = alice.grain::<LobbyGrain>(1);
    assert_eq!(
        lobby.visit("alice".into()).await.unwrap().as_deref(),
        Some("alice")
    );
    let err = lobby.visit("bob".into()).await.unwrap_err();
    assert!(
        refused_by_auth(&err, "alice may not act for bob"),
        "{err:?}"
    );
    let mut seen = lobby.context_of("alice".into()).await.unwrap();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("region".into(), "eu".into()),
            ("user".into(), "alice".into())
        ]
    );
    assert!(front.is_active(&GrainId::new("filters.lobby", 1)));
    assert!(players.is_active(&GrainId::new(PLAYER, "alice")));
    assert!(!front.is_active(&GrainId::new(PLAYER, "alice")));

    // And into a one-way call.
    lobby.poke("alice".into()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), poked.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("alice".to_owned(), Some("alice".to_owned())));

    client.close().await;
    front.shutdown().await.unwrap();
    players.shutdown().await.unwrap();
}

/// What a recording filter saw of one call.
#[derive(Debug, Clone, PartialEq)]
struct Saw {
    filter: &'static str,
    kind: CallKind,
    method: String,
    user: Option<String>,
}

/// Records every call it sees; panics on a call whose context has `panic`.
struct Recorder {
    name: &'static str,
    saw: mpsc::UnboundedSender<Saw>,
}

impl CallFilter for Recorder {
    fn name(&self) -> &str {
        self.name
    }

    async fn before(&self, call: &mut FilterCall<'_>) -> std::result::Result<(), Refusal> {
        let _ = self.saw.send(Saw {
            filter: self.name,
            kind: call.kind(),
            method: call.method().to_owned(),
            user: call.context().get("user").map(str::to_owned),
        });
        assert!(call.context().get("panic").is_none(), "asked to panic");
        Ok(())
    }
}

/// A grain with a timer and a reminder.
#[derive(Debug, Default)]
pub struct TickerGrain;

#[grain(name = "filters.ticker", state = ())]
impl TickerGrain {
    /// Arms a one-shot timer and registers a reminder, both due at once.
    pub async fn start(&self, ctx: &GrainContext<Self>) -> Result<()> {
        ctx.set_timer("blink", Duration::from_millis(10), None);
        ctx.register_reminder(
            "daily",
            Duration::from_millis(10),
            Duration::from_secs(3600),
        )
        .await
    }

    /// Nothing, one way.
    #[one_way]
    pub async fn nudge(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// The `user` of the call's request context.
    pub async fn user(&self, ctx: &GrainContext<Self>) -> Result<Option<String>> {
        Ok(ctx.request_context().get("user").map(str::to_owned))
    }

    #[on_timer]
    async fn timer(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()> {
        let _ = (ctx, name);
        Ok(())
    }

    #[on_reminder]
    async fn remind(
        &self,
        ctx: &GrainContext<Self>,
        name: &str,
        tick: granary::ReminderTick,
    ) -> Result<()> {
        let _ = (ctx, name, tick);
        Ok(())
    }
}

async fn next(saw: &mut mpsc::UnboundedReceiver<Saw>) -> Saw {
    tokio::time::timeout(Duration::from_secs(20), saw.recv())
        .await
        .expect("a filter saw a call in time")
        .expect("the silo holds the sender")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_filters_see_every_kind_of_turn_in_order() {
    let (tx, mut saw) = mpsc::unbounded_channel();
    let silo = Silo::builder()
        .config(SiloConfig {
            idle_timeout: Duration::from_secs(600),
            ..SiloConfig::test_profile()
        })
        .storage(Arc::new(MemoryStore::new()))
        .register::<TickerGrain>()
        .outgoing_filter(Recorder {
            name: "out",
            saw: tx.clone(),
        })
        .incoming_filter(Recorder {
            name: "first",
            saw: tx.clone(),
        })
        .incoming_filter(Recorder {
            name: "second",
            saw: tx,
        })
        .start()
        .await
        .unwrap();
    let client = silo.client().with_context("user", "ann");
    let ticker = client.grain::<TickerGrain>(1);
    let saw_as = |filter, kind, method: &str| Saw {
        filter,
        kind,
        method: method.to_owned(),
        user: Some("ann".to_owned()),
    };
    // Each client call: the outgoing filter, then the incoming filters in registration order
    // (a one-way call's turn may end after it returned: its records are awaited).
    assert_eq!(ticker.user().await.unwrap().as_deref(), Some("ann"));
    for filter in ["out", "first", "second"] {
        assert_eq!(next(&mut saw).await, saw_as(filter, CallKind::Call, "user"));
    }
    ticker.nudge().await.unwrap();
    for filter in ["out", "first", "second"] {
        assert_eq!(
            next(&mut saw).await,
            saw_as(filter, CallKind::OneWay, "nudge")
        );
    }
    ticker.start().await.unwrap();
    for filter in ["out", "first", "second"] {
        assert_eq!(
            next(&mut saw).await,
            saw_as(filter, CallKind::Call, "start")
        );
    }
    // The timer and the reminder tick, in whichever order they come, each through both
    // incoming filters in order, with no request context and no outgoing filter.
    let mut ticks = Vec::new();
    for _ in 0..2 {
        let first = next(&mut saw).await;
        let second = next(&mut saw).await;
        assert_eq!(first.filter, "first", "{first:?}");
        assert_eq!(
            second,
            Saw {
                filter: "second",
                ..first.clone()
            }
        );
        assert_eq!(first.user, None);
        ticks.push((first.kind, first.method));
    }
    ticks.sort_by_key(|(kind, _)| *kind == CallKind::Reminder);
    assert_eq!(
        ticks,
        [
            (CallKind::Timer, "blink".to_owned()),
            (CallKind::Reminder, granary::REMINDER_METHOD.name.to_owned())
        ]
    );
    assert!(saw.try_recv().is_err(), "nothing else passed the filters");
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_filter_fails_its_call_only_and_an_over_limit_context_is_refused() {
    let (tx, _saw) = mpsc::unbounded_channel();
    let (poked_tx, _poked) = mpsc::unbounded_channel();
    let silo = Silo::builder()
        .config(SiloConfig {
            idle_timeout: Duration::from_secs(600),
            ..SiloConfig::test_profile()
        })
        .register::<LobbyGrain>()
        .register_with(move |_| PlayerGrain {
            poked: poked_tx.clone(),
        })
        .incoming_filter(Recorder {
            name: "recorder",
            saw: tx,
        })
        .start()
        .await
        .unwrap();
    let player = GrainId::new(PLAYER, "alice");
    let alice = silo.client().with_context("user", "alice");
    assert_eq!(
        alice
            .grain::<PlayerGrain>("alice")
            .hit()
            .await
            .unwrap()
            .as_deref(),
        Some("alice")
    );
    let panicking = alice.clone().with_context("panic", "yes");
    let err = panicking
        .grain::<PlayerGrain>("alice")
        .hit()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::FilterPanicked { filter, message, method, .. }
            if filter == "recorder" && message == "asked to panic" && method == "hit"),
        "{err:?}"
    );
    // The grain was not torn down and the next call works.
    assert!(silo.is_active(&player));
    assert_eq!(
        alice
            .grain::<PlayerGrain>("alice")
            .hit()
            .await
            .unwrap()
            .as_deref(),
        Some("alice")
    );

    // Over the bounds: too many entries, too many bytes, set by a client or by a grain.
    let mut crowded = silo.client();
    for i in 0..=MAX_CONTEXT_ENTRIES {
        crowded = crowded.with_context(format!("k{i}"), "v");
    }
    let err = crowded
        .grain::<PlayerGrain>("alice")
        .hit()
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::ContextTooLarge { entries: 17, .. }),
        "{err:?}"
    );
    let heavy = silo
        .client()
        .grain::<PlayerGrain>("alice")
        .with_context("blob", "x".repeat(granary::MAX_CONTEXT_BYTES + 1));
    let err = heavy.hit().await.unwrap_err();
    assert!(
        matches!(err, CallError::ContextTooLarge { entries: 1, .. }),
        "{err:?}"
    );
    let err = heavy.poke().await.unwrap_err();
    assert!(matches!(err, CallError::ContextTooLarge { .. }), "{err:?}");
    let err = alice
        .grain::<LobbyGrain>(1)
        .bloat("alice".into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::ContextTooLarge { entries: 18, .. }),
        "{err:?}"
    );
    silo.shutdown().await.unwrap();
}
