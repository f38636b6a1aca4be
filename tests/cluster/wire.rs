//! The wire path: every generated method of the example grains, driven through encoded
//! envelopes exactly as the cluster transport will drive them.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use example_player_game::{
    Buff, BuffKind, DamageOutcome, GameGrain, JoinOutcome, MatchPhase, MatchView, MatchWatcher,
    MatchWatcherRef, PlayerGrain,
};
use granary::{Grain, SiloConfig};
use granary_testkit::TestSilo;

/// The match watcher the test subscribes: forwards each pushed view.
struct Screen(tokio::sync::mpsc::UnboundedSender<MatchView>);

impl MatchWatcher for Screen {
    async fn on_update(&self, view: MatchView) -> granary::Result<()> {
        let _ = self.0.send(view);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_method_works_through_the_wire_codec() {
    let seen: Arc<Mutex<BTreeSet<(String, u32, bool)>>> = Arc::default();
    let record = seen.clone();
    let config = SiloConfig {
        wire_local_calls: true,
        idle_timeout: Duration::from_secs(60),
        ..SiloConfig::test_profile()
    };
    let silo = TestSilo::start_with(config, move |b| {
        b.register::<PlayerGrain>()
            .register::<GameGrain>()
            .observe_calls(move |grain, method, encoded| {
                record
                    .lock()
                    .unwrap()
                    .insert((grain.type_name().to_owned(), method.0, encoded));
            })
    })
    .await
    .unwrap();
    let client = silo.client();

    let game = client.grain::<GameGrain>(1_i64);
    game.create(3).await.unwrap();
    for p in ["ann", "bob", "cid"] {
        assert_eq!(game.join(p.into()).await.unwrap(), JoinOutcome::Joined);
    }
    assert!(game.leave("cid".into()).await.unwrap());
    game.start().await.unwrap();
    let ann = client.grain::<PlayerGrain>("ann");
    let bob = client.grain::<PlayerGrain>("bob");
    bob.apply_buff(Buff {
        kind: BuffKind::Shield,
        amount: 5,
        remaining: Duration::from_secs(5),
    })
    .await
    .unwrap();
    assert_eq!(
        bob.take_damage(20, "ann".into()).await.unwrap(),
        DamageOutcome::Survived {
            health: 85,
            absorbed: 5
        }
    );
    assert_eq!(bob.heal(10).await.unwrap(), 95);
    assert_eq!(
        bob.take_damage(200, "ann".into()).await.unwrap(),
        DamageOutcome::Died
    ); // → on_player_death, credit_kill, match end
    let info = game.info().await.unwrap();
    assert_eq!(info.phase, MatchPhase::Ended);
    assert_eq!(info.result.unwrap().winner.as_deref(), Some("ann"));
    bob.respawn().await.unwrap();
    let status = ann.status().await.unwrap(); // after the one-way match_ended in ann's queue
    assert_eq!((status.kills, status.wins, status.game), (1, 1, None));

    let game2 = client.grain::<GameGrain>(2_i64);
    game2.create(2).await.unwrap();
    let (views, mut pushed) = tokio::sync::mpsc::unbounded_channel();
    let screen = client.observe(MatchWatcherRef::object(Screen(views)));
    assert_eq!(
        game2.watch(screen.reference()).await.unwrap().phase,
        MatchPhase::Lobby
    );
    game2.join("ann".into()).await.unwrap();
    game2.join("bob".into()).await.unwrap();
    game2.start().await.unwrap();
    // → the victim's take_damage, the game's on_hit, a push to the watcher.
    assert!(matches!(
        ann.attack("bob".into()).await.unwrap(),
        DamageOutcome::Survived { .. }
    ));
    while pushed.recv().await.unwrap().phase != MatchPhase::Running {}
    assert_eq!(game2.end().await.unwrap().deaths, 0);
    let _ = bob.status().await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(_, _, encoded)| *encoded),
        "every dispatched call arrived encoded"
    );
    let called: BTreeSet<(String, u32)> = seen.into_iter().map(|(t, m, _)| (t, m)).collect();
    let all: BTreeSet<(String, u32)> = PlayerGrain::METHODS
        .iter()
        .map(|m| ("player".to_owned(), m.id.0))
        .chain(
            GameGrain::METHODS
                .iter()
                .map(|m| ("game".to_owned(), m.id.0)),
        )
        .collect();
    let missing: Vec<_> = all.difference(&called).collect();
    assert!(
        missing.is_empty(),
        "methods never driven through the wire path: {missing:?}"
    );
    silo.shutdown().await.unwrap();
}
