//! Silos with roles and hosted types, over real loopback TCP and a real Redis membership table:
//! placement puts a grain only on a silo that hosts its type (and has the role the type asks
//! for), a request that reaches a gateway without the type is placed again, and a call for a
//! type no active silo hosts fails at once with `CallError::NoHost`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::provider::MembershipTable;
use granary::{
    CallError, ClientConfig, ClusterClient, ClusterConfig, GrainContext, GrainId, Result, Silo,
    SiloBuilder, SiloConfig, SiloEvent, grain,
};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use granary_testkit::redis_server::{shared_redis_url, unique_name};

const SECRET: &[u8] = b"a cluster secret of at least 32 bytes";

/// A match, hosted only by simulation silos (silos with the role `sim`).
#[derive(Debug, Default)]
pub struct GameGrain;

#[grain(name = "roles.game", state = (), role = "sim")]
impl GameGrain {
    pub async fn ping(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

/// A player, who joins games wherever they live.
#[derive(Debug, Default)]
pub struct PlayerGrain;

#[grain(name = "roles.player", state = ())]
impl PlayerGrain {
    /// Calls game `game` (on whichever silo hosts games).
    pub async fn join(&self, ctx: &GrainContext<Self>, game: i64) -> Result<()> {
        ctx.grain::<GameGrain>(game).ping().await
    }
}

const GAME: &str = "roles.game";
const PLAYER: &str = "roles.player";

/// The cluster id and Redis URL of a new cluster.
async fn new_cluster() -> (String, String) {
    (unique_name("roles"), shared_redis_url().await)
}

/// Starts one silo of cluster `cluster`, its cluster configuration changed by `configure`.
async fn start(
    url: &str,
    cluster: &str,
    name: &str,
    configure: impl FnOnce(ClusterConfig) -> ClusterConfig,
    build: impl FnOnce(SiloBuilder) -> SiloBuilder,
    roles: &[&str],
) -> (Silo, Arc<RedisStore>) {
    let store = Arc::new(
        RedisStore::connect(RedisConfig::new(url, cluster).shards(8))
            .await
            .unwrap(),
    );
    let mut config = configure(
        ClusterConfig::new(cluster, SECRET, "127.0.0.1:0".parse().unwrap()).test_profile(),
    );
    for role in roles {
        config = config.role(*role);
    }
    let builder = Silo::builder()
        .config(SiloConfig {
            name: name.into(),
            // Where a grain is active is what these tests check: no idle collection under them.
            idle_timeout: Duration::from_secs(600),
            call_timeout: Duration::from_secs(30),
            ..SiloConfig::test_profile()
        })
        .storage(store.clone())
        .membership(Arc::new(RedisMembership::new(store.clone())))
        .cluster(config);
    let silo = build(builder).start().await.unwrap();
    (silo, store)
}

/// Waits until every silo sees `n` active members.
async fn settle(silos: &[&Silo], n: usize) {
    for silo in silos {
        let mut events = silo.events();
        if silo.members().len() < n {
            events
                .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if m.len() == n))
                .await
                .unwrap();
        }
    }
}

fn active_on(silos: &[&Silo], grain: &GrainId) -> Vec<usize> {
    (0..silos.len())
        .filter(|&i| silos[i].is_active(grain))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn games_land_only_on_the_sim_silo_and_players_spread_over_the_rest() {
    let (cluster, url) = new_cluster().await;
    // The sim silo registers both types but hosts only games; silo 1 registers games too but
    // lacks the role games ask for; silo 2 does not register games at all.
    let (sim, store) = start(
        &url,
        &cluster,
        "sim",
        // The role games ask for comes from `#[grain(role = "sim")]` in this test.
        |c| c,
        |b| {
            b.register::<GameGrain>()
                .register::<PlayerGrain>()
                .hosts::<GameGrain>()
        },
        &["sim"],
    )
    .await;
    let (meta1, _) = start(
        &url,
        &cluster,
        "meta1",
        |c| c,
        |b| b.register::<GameGrain>().register::<PlayerGrain>(),
        &["social"],
    )
    .await;
    let (meta2, _) = start(
        &url,
        &cluster,
        "meta2",
        // Without games registered, this silo does not know their role: the hosted types in
        // the rows are enough to place them.
        |c| c,
        |b| b.register::<PlayerGrain>(),
        &[],
    )
    .await;
    let silos = [&sim, &meta1, &meta2];
    settle(&silos, 3).await;

    // The membership table shows what each silo hosts and is.
    let table = RedisMembership::new(store).read().await.unwrap();
    let row = |silo: &Silo| {
        table
            .entries
            .iter()
            .find(|e| e.silo == *silo.id())
            .unwrap()
            .clone()
    };
    assert_eq!(row(&sim).hosts, Some(vec![GAME.to_owned()]));
    assert_eq!(row(&sim).roles, vec!["sim".to_owned()]);
    // Silo 1 registers games but lacks the role they ask for: it does not host them.
    assert_eq!(row(&meta1).hosts, Some(vec![PLAYER.to_owned()]));
    assert_eq!(row(&meta1).roles, vec!["social".to_owned()]);
    assert_eq!(row(&meta2).hosts, Some(vec![PLAYER.to_owned()]));
    assert!(row(&meta2).roles.is_empty());

    // Players called from the sim silo (which does not host them) and from each meta silo;
    // each player calls its game from wherever it lives.
    let mut player = 0;
    for caller in silos {
        for _ in 0..12 {
            caller
                .client()
                .grain::<PlayerGrain>(player)
                .join(player % 4)
                .await
                .unwrap();
            player += 1;
        }
    }
    // Then through a cluster client whose gateways are all three silos: a call reaching the
    // sim silo as gateway is placed again, on a silo that hosts players.
    let gateways = silos.iter().map(|s| s.address().unwrap()).collect();
    let client = ClusterClient::connect(ClientConfig::new(&cluster, SECRET, gateways))
        .await
        .unwrap();
    for _ in 0..12 {
        client
            .grain::<PlayerGrain>(player)
            .join(player % 4)
            .await
            .unwrap();
        player += 1;
    }
    // And a game called straight from a silo that lacks the role.
    meta1.client().grain::<GameGrain>(99).ping().await.unwrap();

    for game in (0..4).chain([99]) {
        assert_eq!(
            active_on(&silos, &GrainId::new(GAME, game)),
            vec![0],
            "game {game} is active on the sim silo only"
        );
    }
    let mut per_silo = [0; 3];
    for p in 0..player {
        let on = active_on(&silos, &GrainId::new(PLAYER, p));
        assert_eq!(on.len(), 1, "player {p} is active on one silo: {on:?}");
        per_silo[on[0]] += 1;
    }
    assert_eq!(per_silo[0], 0, "no player on the sim silo: {per_silo:?}");
    assert!(
        per_silo[1] > 0 && per_silo[2] > 0,
        "players spread over the other silos: {per_silo:?}"
    );

    drop(client);
    for silo in [meta2, meta1, sim] {
        silo.shutdown().await.unwrap();
    }
}

/// Whether `err` is the no-host error for games, with `role`.
fn is_no_host(err: &CallError, role: Option<&str>) -> bool {
    matches!(err, CallError::NoHost { grain_type, role: r }
        if grain_type == GAME && r.as_deref() == role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_for_a_type_no_active_silo_hosts_fails_at_once_with_no_host() {
    let (cluster, url) = new_cluster().await;
    let (a, _) = start(
        &url,
        &cluster,
        "a",
        |c| c,
        |b| b.register::<PlayerGrain>(),
        &[],
    )
    .await;
    let (b, _) = start(
        &url,
        &cluster,
        "b",
        |c| c,
        |b| b.register::<PlayerGrain>(),
        &[],
    )
    .await;
    settle(&[&a, &b], 2).await;

    // From a silo, from a grain on another silo, and through a client's gateway: the error
    // names the type and comes long before the 30 s call timeout.
    let started = Instant::now();
    let err = a.client().grain::<GameGrain>(1).ping().await.unwrap_err();
    assert!(is_no_host(&err, None), "{err:?}");
    assert!(err.to_string().contains(GAME), "{err}");
    let err = b
        .client()
        .grain::<PlayerGrain>(7)
        .join(1)
        .await
        .unwrap_err();
    assert!(is_no_host(&err, None), "{err:?}");
    let gateways = vec![a.address().unwrap(), b.address().unwrap()];
    let client = ClusterClient::connect(ClientConfig::new(&cluster, SECRET, gateways))
        .await
        .unwrap();
    let err = client.grain::<GameGrain>(2).ping().await.unwrap_err();
    assert!(is_no_host(&err, None), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed at once, not at the timeout: {:?}",
        started.elapsed()
    );
    assert!(!err.is_retryable());
    drop(client);
    for silo in [a, b] {
        silo.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_asking_for_a_role_no_silo_has_fails_with_no_host_naming_the_role() {
    let (cluster, url) = new_cluster().await;
    // The silo registers games and has the role `sim` their attribute asks for, but its
    // configuration asks for `referee` instead (it overrides the attribute): it does not host
    // games.
    let (a, store) = start(
        &url,
        &cluster,
        "a",
        |c| c.require_role(GAME, "referee"),
        |b| b.register::<GameGrain>().register::<PlayerGrain>(),
        &["sim"],
    )
    .await;
    settle(&[&a], 1).await;
    let table = RedisMembership::new(store).read().await.unwrap();
    assert_eq!(table.entries[0].hosts, Some(vec![PLAYER.to_owned()]));
    let err = a.client().grain::<GameGrain>(1).ping().await.unwrap_err();
    assert!(is_no_host(&err, Some("referee")), "{err:?}");
    assert!(err.to_string().contains("\"referee\""), "{err}");
    assert!(!a.is_active(&GrainId::new(GAME, 1)));
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn hosting_a_type_that_is_not_registered_is_a_start_error() {
    let err = Silo::builder()
        .register::<PlayerGrain>()
        .hosts::<GameGrain>()
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, granary::StartError::HostsUnregistered(GAME)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grain_whose_partner_is_active_nowhere_goes_to_a_silo_that_hosts_it() {
    let (cluster, url) = new_cluster().await;
    // Players are co-located with the game of the same key; the sim silo hosts no players.
    let colocate =
        |c: ClusterConfig| c.colocate(PLAYER, |g| Some(GrainId::new(GAME, g.key().clone())));
    let (sim, _) = start(
        &url,
        &cluster,
        "sim",
        colocate,
        |b| b.register::<GameGrain>(),
        &["sim"],
    )
    .await;
    let (meta, _) = start(
        &url,
        &cluster,
        "meta",
        colocate,
        |b| b.register::<PlayerGrain>(),
        &[],
    )
    .await;
    settle(&[&sim, &meta], 2).await;
    // Game 5 is active nowhere: the player cannot stay on the sim silo (the call made there is
    // placed again, on a silo that hosts players).
    sim.client().grain::<PlayerGrain>(5).join(5).await.unwrap();
    let silos = [&sim, &meta];
    assert_eq!(active_on(&silos, &GrainId::new(PLAYER, 5)), vec![1]);
    assert_eq!(active_on(&silos, &GrainId::new(GAME, 5)), vec![0]);
    for silo in [meta, sim] {
        silo.shutdown().await.unwrap();
    }
}
