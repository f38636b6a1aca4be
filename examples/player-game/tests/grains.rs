//! Tests of the Player and Game grains with the test kit: unit tests with `GrainTest` (no silo,
//! no sleeps), and both grains in a whole in-process silo with `TestSilo` (at the end).
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::time::Duration;

use example_player_game::{
    BUFF_TICK, Buff, BuffKind, DamageOutcome, ENERGY_REGEN, ENERGY_REMINDER, GameGrain, GameState,
    JoinOutcome, MATCH_ENERGY, MAX_ENERGY, MatchCreated, MatchEnded, MatchPhase, MatchStarted,
    MatchmakerGrain, PlayerAuth, PlayerDied, PlayerGrain, PlayerState, Regen, USER,
};
use granary::CallError;
use granary_testkit::GrainTest;

fn shield(amount: i32, secs: u64) -> Buff {
    Buff {
        kind: BuffKind::Shield,
        amount,
        remaining: Duration::from_secs(secs),
    }
}

async fn player_in_game(key: &str, game: i64) -> GrainTest<PlayerGrain> {
    GrainTest::with_state(
        key,
        &PlayerState {
            game: Some(game),
            ..PlayerState::default()
        },
    )
    .await
    .unwrap()
}

// ---- Player ----

#[tokio::test]
async fn damage_reduces_health_and_is_persisted() {
    let kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    let outcome = kit.reference().take_damage(30, "p2".into()).await.unwrap();
    assert_eq!(
        outcome,
        DamageOutcome::Survived {
            health: 70,
            absorbed: 0
        }
    );
    assert_eq!(kit.stored_state().unwrap().health, 70);
    assert!(kit.published().is_empty(), "surviving publishes nothing");
}

#[tokio::test]
async fn a_shield_absorbs_damage_first_and_breaks_when_spent() {
    let kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    let player = kit.reference();
    player.apply_buff(shield(25, 10)).await.unwrap();
    assert_eq!(
        player.take_damage(10, "x".into()).await.unwrap(),
        DamageOutcome::Survived {
            health: 100,
            absorbed: 10
        }
    );
    assert_eq!(
        player.take_damage(40, "x".into()).await.unwrap(),
        DamageOutcome::Survived {
            health: 75,
            absorbed: 15
        }
    );
    assert!(kit.state().buffs.is_empty(), "the spent shield is gone");
}

#[tokio::test]
async fn lethal_damage_kills_publishes_player_died_and_tells_the_game() {
    let kit = player_in_game("victim", 7).await;
    kit.mock::<GameGrain>()
        .key(7_i64)
        .on_player_death(|_, _, _| Ok(false));
    let outcome = kit
        .reference()
        .take_damage(150, "killer".into())
        .await
        .unwrap();
    assert_eq!(outcome, DamageOutcome::Died);
    let stored = kit.stored_state().unwrap();
    assert_eq!((stored.health, stored.deaths), (0, 1));
    let died = kit.events::<PlayerDied>();
    assert_eq!(
        died,
        vec![PlayerDied {
            player: "victim".into(),
            killer: "killer".into(),
            game: Some(7)
        }]
    );
    let calls = kit.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "on_player_death");
    assert_eq!(calls[0].target.to_string(), "game/7");
    assert_eq!(
        calls[0].args::<(String, String)>(),
        ("victim".into(), "killer".into())
    );
}

#[tokio::test]
async fn a_death_the_game_refuses_commits_neither_state_nor_event() {
    let kit = player_in_game("victim", 7).await;
    kit.mock::<GameGrain>()
        .key(7_i64)
        .on_player_death(|_, _, _| {
            Err(CallError::Unavailable {
                grain: granary::GrainId::new("game", 7_i64),
                attempts: 3,
            })
        });
    let err = kit
        .reference()
        .take_damage(150, "killer".into())
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Unavailable { .. }), "{err}");
    assert!(
        kit.events::<PlayerDied>().is_empty(),
        "the event was discarded with the failed turn"
    );
    assert_eq!(
        kit.stored_state().unwrap().deaths,
        0,
        "the death was not committed"
    );
    assert!(
        kit.deactivation_requested(),
        "the unsaved death ends the activation"
    );
}

#[tokio::test]
async fn a_retried_death_after_a_refusal_dies_once() {
    let mut kit = player_in_game("victim", 7).await;
    kit.mock::<GameGrain>()
        .key(7_i64)
        .on_player_death(|_, _, _| {
            Err(CallError::SiloUnavailable {
                silo: "b".into(),
                reason: "killed".into(),
                outcome_unknown: true,
            })
        });
    let player = kit.reference();
    assert!(player.take_damage(150, "killer".into()).await.is_err());
    kit.reactivate().await.unwrap();
    kit.mock::<GameGrain>()
        .key(7_i64)
        .on_player_death(|_, _, _| Ok(true));
    assert_eq!(
        kit.reference()
            .take_damage(150, "killer".into())
            .await
            .unwrap(),
        DamageOutcome::Died,
        "the retry finds the player alive as committed, not dead from the failed turn"
    );
    let stored = kit.stored_state().unwrap();
    assert_eq!((stored.deaths, stored.game), (1, None));
    assert_eq!(kit.events::<PlayerDied>().len(), 1);
}

#[tokio::test]
async fn the_dead_take_no_more_damage_and_die_only_once() {
    let kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    let player = kit.reference();
    assert_eq!(
        player.take_damage(100, "a".into()).await.unwrap(),
        DamageOutcome::Died
    );
    assert_eq!(
        player.take_damage(5, "b".into()).await.unwrap(),
        DamageOutcome::AlreadyDead
    );
    assert_eq!(kit.events::<PlayerDied>().len(), 1);
    assert_eq!(kit.stored_state().unwrap().deaths, 1);
    assert!(
        kit.calls().is_empty(),
        "a player outside a match tells no game"
    );
}

#[tokio::test]
async fn negative_damage_is_rejected() {
    let kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    let err = kit
        .reference()
        .take_damage(-5, "cheater".into())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Rejected { reason, .. } if reason.contains("negative")),
        "{err}"
    );
    assert_eq!(kit.state().health, 100);
}

#[tokio::test]
async fn healing_is_capped_and_impossible_for_the_dead() {
    let kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    let player = kit.reference();
    player.take_damage(50, "x".into()).await.unwrap();
    assert_eq!(player.heal(20).await.unwrap(), 70);
    assert_eq!(player.heal(500).await.unwrap(), 100);
    player.take_damage(100, "x".into()).await.unwrap();
    assert!(matches!(
        player.heal(10).await,
        Err(CallError::Rejected { .. })
    ));
}

#[tokio::test]
async fn buffs_count_down_on_the_clock_and_the_timer_stops_when_none_is_left() {
    let kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    let player = kit.reference();
    player.apply_buff(shield(10, 2)).await.unwrap();
    player
        .apply_buff(Buff {
            kind: BuffKind::Strength,
            amount: 3,
            remaining: Duration::from_secs(3),
        })
        .await
        .unwrap();
    assert_eq!(kit.timers().len(), 1, "one ticking timer for all buffs");
    kit.advance(BUFF_TICK * 2).await;
    let kinds: Vec<BuffKind> = kit.state().buffs.iter().map(|b| b.kind).collect();
    assert_eq!(
        kinds,
        vec![BuffKind::Strength],
        "the 2 s shield expired, the 3 s strength did not"
    );
    let fired = kit.advance(Duration::from_secs(10)).await;
    assert_eq!(
        fired.len(),
        1,
        "one more tick expires the last buff, then the timer stops"
    );
    assert!(kit.stored_state().unwrap().buffs.is_empty());
    assert!(kit.timers().is_empty());
}

#[tokio::test]
async fn a_player_is_in_one_match_at_a_time() {
    let kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    let player = kit.reference();
    assert!(player.enter_game(1).await.unwrap());
    assert!(
        player.enter_game(1).await.unwrap(),
        "entering the same match again is fine"
    );
    assert!(!player.enter_game(2).await.unwrap());
    player.leave_game(1).await.unwrap();
    assert!(player.enter_game(2).await.unwrap());
    assert_eq!(kit.stored_state().unwrap().game, Some(2));
}

#[tokio::test]
async fn entering_a_match_spends_energy_that_a_reminder_regenerates_until_full() {
    let kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    let player = kit.reference();
    assert!(kit.reminders().is_empty(), "a full player has no reminder");
    assert!(player.enter_game(1).await.unwrap());
    assert!(
        player.enter_game(1).await.unwrap(),
        "entering again is free"
    );
    let stored = kit.stored_state().unwrap();
    assert_eq!(stored.energy, MAX_ENERGY - MATCH_ENERGY);
    let reminders = kit.reminders();
    assert_eq!(reminders.len(), 1, "registered with the energy spent");
    assert_eq!(reminders[0].name, ENERGY_REMINDER);
    assert_eq!(reminders[0].period(), ENERGY_REGEN);

    let ran = kit.advance(ENERGY_REGEN * 10).await;
    assert_eq!(
        ran, [ENERGY_REMINDER; 2],
        "one point a period; full after the second, then nothing more fires"
    );
    let stored = kit.stored_state().unwrap();
    assert_eq!(stored.energy, MAX_ENERGY);
    assert_eq!(
        (
            stored.regen.ticks,
            stored.regen.missed,
            stored.regen.duplicates
        ),
        (2, 0, 0)
    );
    assert_eq!(
        stored.regen.last_due_ms,
        kit.now_ms() - 8 * 1_000,
        "the second tick was due 2 s after the start, 8 s ago"
    );
    assert!(kit.reminders().is_empty(), "unregistered when full");
}

#[tokio::test]
async fn energy_catches_up_on_the_ticks_missed_while_no_silo_ran() {
    let kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    let player = kit.reference();
    for game in 1..=3 {
        assert!(player.enter_game(game).await.unwrap());
        player.match_ended(game, false).await.unwrap();
    }
    assert_eq!(
        kit.stored_state().unwrap().energy,
        MAX_ENERGY - 3 * MATCH_ENERGY
    );
    assert_eq!(kit.reminders().len(), 1, "registered once, on first use");
    // The cluster is down for 3.5 periods: the first tick after it reports 2 missed.
    kit.advance_while_down(ENERGY_REGEN * 7 / 2);
    assert_eq!(kit.advance(Duration::ZERO).await, [ENERGY_REMINDER]);
    let stored = kit.stored_state().unwrap();
    assert_eq!(
        stored.energy,
        MAX_ENERGY - 3 * MATCH_ENERGY + 3,
        "1 due + 2 missed"
    );
    assert_eq!(
        stored.regen,
        Regen {
            ticks: 1,
            missed: 2,
            duplicates: 0,
            last_due_ms: kit.now_ms() - 2_500,
        },
        "the tick due at 1 s, delivered at 3.5 s"
    );
    // The next tick is due at 4 s: three more points fill it up.
    assert_eq!(kit.advance(ENERGY_REGEN * 5).await, [ENERGY_REMINDER; 3]);
    let stored = kit.stored_state().unwrap();
    assert_eq!(stored.energy, MAX_ENERGY);
    assert_eq!((stored.regen.ticks, stored.regen.missed), (4, 2));
    assert!(kit.reminders().is_empty());
}

#[tokio::test]
async fn energy_regenerates_while_the_player_is_deactivated_and_never_past_the_maximum() {
    let mut kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    assert!(kit.reference().enter_game(1).await.unwrap());
    kit.reactivate().await.unwrap();
    // Down long enough to owe far more than the 2 points spent: capped at the maximum.
    kit.advance_while_down(ENERGY_REGEN * 60);
    kit.reactivate().await.unwrap();
    assert_eq!(kit.advance(Duration::ZERO).await, [ENERGY_REMINDER]);
    let status = kit.reference().status().await.unwrap();
    assert_eq!(status.energy, MAX_ENERGY);
    assert_eq!((status.regen.ticks, status.regen.missed), (1, 59));
    assert!(kit.reminders().is_empty());
}

#[tokio::test]
async fn the_end_of_a_match_frees_the_player_and_counts_wins() {
    let kit = player_in_game("p1", 4).await;
    let player = kit.reference();
    player.match_ended(99, true).await.unwrap();
    assert_eq!(
        kit.state().game,
        Some(4),
        "the end of another match is ignored"
    );
    player.match_ended(4, true).await.unwrap();
    let stored = kit.stored_state().unwrap();
    assert_eq!((stored.game, stored.wins), (None, 1));
}

#[tokio::test]
async fn respawn_restores_the_dead_only() {
    let kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    let player = kit.reference();
    assert!(matches!(
        player.respawn().await,
        Err(CallError::Rejected { .. })
    ));
    player.take_damage(120, "x".into()).await.unwrap();
    player.respawn().await.unwrap();
    let status = player.status().await.unwrap();
    assert!(status.alive);
    assert_eq!((status.health, status.deaths), (100, 1));
}

#[tokio::test]
async fn player_state_survives_reactivation() {
    let mut kit = GrainTest::<PlayerGrain>::new("p1").await.unwrap();
    kit.reference().take_damage(35, "x".into()).await.unwrap();
    kit.reference().enter_game(3).await.unwrap();
    kit.reference().credit_kill(3, "v".into()).await.unwrap();
    kit.reactivate().await.unwrap();
    let status = kit.reference().status().await.unwrap();
    assert_eq!((status.health, status.kills), (100, 1));
}

#[tokio::test]
async fn a_retried_kill_credit_counts_once() {
    let kit = player_in_game("ann", 3).await;
    let player = kit.reference();
    player.credit_kill(3, "bob".into()).await.unwrap();
    player.credit_kill(3, "bob".into()).await.unwrap();
    player.credit_kill(3, "cid".into()).await.unwrap();
    player.credit_kill(4, "dan".into()).await.unwrap();
    assert_eq!(
        kit.stored_state().unwrap().kills,
        2,
        "bob once, cid once, nothing for a match ann is not in"
    );
}

#[tokio::test]
async fn a_death_that_ends_the_match_frees_the_victim() {
    let kit = player_in_game("victim", 7).await;
    kit.mock::<GameGrain>()
        .key(7_i64)
        .on_player_death(|_, _, _| Ok(true));
    let outcome = kit
        .reference()
        .take_damage(150, "killer".into())
        .await
        .unwrap();
    assert_eq!(outcome, DamageOutcome::Died);
    let stored = kit.stored_state().unwrap();
    assert_eq!((stored.deaths, stored.game, stored.wins), (1, None, 0));
}

// ---- Game ----

async fn lobby(game: i64, max: u32, players: &[&str]) -> GrainTest<GameGrain> {
    let kit = GrainTest::<GameGrain>::new(game).await.unwrap();
    for p in players {
        kit.mock::<PlayerGrain>()
            .key(*p)
            .enter_game(|_, _| Ok(true));
    }
    let g = kit.reference();
    g.create(max).await.unwrap();
    for p in players {
        assert_eq!(g.join((*p).into()).await.unwrap(), JoinOutcome::Joined);
    }
    kit
}

async fn running(game: i64, players: &[&str]) -> GrainTest<GameGrain> {
    let kit = lobby(game, 8, players).await;
    for p in players {
        kit.mock::<PlayerGrain>()
            .key(*p)
            .credit_kill(|_, _, _| Ok(()))
            .match_ended(|_, _, _| Ok(()));
    }
    kit.reference().start().await.unwrap();
    kit.take_calls();
    kit
}

#[tokio::test]
async fn creating_a_match_publishes_match_created_once() {
    let kit = GrainTest::<GameGrain>::new(3_i64).await.unwrap();
    kit.reference().create(4).await.unwrap();
    assert_eq!(
        kit.events::<MatchCreated>(),
        vec![MatchCreated {
            game: 3,
            max_players: 4
        }]
    );
    kit.reference()
        .create(4)
        .await
        .expect("a retried create succeeds");
    assert!(matches!(
        kit.reference().create(5).await,
        Err(CallError::Rejected { .. })
    ));
    assert_eq!(kit.events::<MatchCreated>().len(), 1, "created once");
    assert!(matches!(
        GrainTest::<GameGrain>::new(4_i64)
            .await
            .unwrap()
            .reference()
            .create(1)
            .await,
        Err(CallError::Rejected { .. })
    ));
    assert_eq!(kit.stored_state().unwrap().phase, MatchPhase::Lobby);
}

#[tokio::test]
async fn joining_fills_the_lobby_and_enrolls_the_player() {
    let kit = lobby(1, 2, &["ann", "bob"]).await;
    let enrolled: Vec<(String, i64)> = kit
        .calls()
        .iter()
        .map(|c| (c.target.key().to_string(), c.args::<(i64,)>().0))
        .collect();
    assert_eq!(enrolled, vec![("ann".into(), 1), ("bob".into(), 1)]);
    assert_eq!(
        kit.reference().join("ann".into()).await.unwrap(),
        JoinOutcome::AlreadyJoined
    );
    assert_eq!(
        kit.reference().join("cid".into()).await.unwrap(),
        JoinOutcome::Full
    );
    assert_eq!(
        kit.stored_state().unwrap().players,
        vec!["ann".to_owned(), "bob".to_owned()]
    );
}

#[tokio::test]
async fn a_player_in_another_match_cannot_join() {
    let kit = lobby(1, 4, &["ann"]).await;
    kit.mock::<PlayerGrain>()
        .key("busy")
        .enter_game(|_, _| Ok(false));
    assert_eq!(
        kit.reference().join("busy".into()).await.unwrap(),
        JoinOutcome::InAnotherMatch
    );
    assert_eq!(kit.state().players, vec!["ann".to_owned()]);
}

#[tokio::test]
async fn leaving_the_lobby_frees_the_player() {
    let kit = lobby(1, 4, &["ann", "bob"]).await;
    kit.mock::<PlayerGrain>()
        .key("bob")
        .leave_game(|_, _| Ok(()));
    assert!(kit.reference().leave("bob".into()).await.unwrap());
    assert!(
        !kit.reference().leave("bob".into()).await.unwrap(),
        "only once"
    );
    assert_eq!(kit.calls().last().unwrap().method, "leave_game");
    assert_eq!(kit.stored_state().unwrap().players, vec!["ann".to_owned()]);
}

#[tokio::test]
async fn a_match_needs_two_players_to_start_and_then_closes_the_lobby() {
    let kit = lobby(1, 4, &["ann"]).await;
    assert!(matches!(
        kit.reference().start().await,
        Err(CallError::Rejected { .. })
    ));
    kit.mock::<PlayerGrain>()
        .key("bob")
        .enter_game(|_, _| Ok(true));
    kit.reference().join("bob".into()).await.unwrap();
    kit.reference().start().await.unwrap();
    kit.reference()
        .start()
        .await
        .expect("a retried start succeeds");
    assert_eq!(
        kit.events::<MatchStarted>(),
        vec![MatchStarted {
            game: 1,
            players: vec!["ann".into(), "bob".into()]
        }]
    );
    assert_eq!(
        kit.reference().join("cid".into()).await.unwrap(),
        JoinOutcome::NotInLobby
    );
}

#[tokio::test]
async fn deaths_credit_killers_and_the_last_player_standing_wins() {
    let kit = running(9, &["ann", "bob", "cid"]).await;
    let game = kit.reference();
    assert!(
        !game
            .on_player_death("bob".into(), "ann".into())
            .await
            .unwrap()
    );
    assert_eq!(kit.state().phase, MatchPhase::Running);
    assert!(
        game.on_player_death("cid".into(), "ann".into())
            .await
            .unwrap(),
        "the last death ends the match"
    );
    let state: GameState = kit.stored_state().unwrap();
    assert_eq!(state.phase, MatchPhase::Ended);
    let ended = kit.events::<MatchEnded>();
    assert_eq!(
        ended,
        vec![MatchEnded {
            game: 9,
            winner: Some("ann".into()),
            kills: vec![("ann".into(), 2)],
            deaths: 2
        }]
    );
    let calls: Vec<(String, &str)> = kit
        .calls()
        .iter()
        .map(|c| (c.target.key().to_string(), c.method))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("ann".into(), "credit_kill"),
            ("ann".into(), "credit_kill"),
            ("ann".into(), "match_ended"),
            ("bob".into(), "match_ended"),
        ],
        "cid, whose death ended the match, waits on the chain and is not called"
    );
    let won: Vec<bool> = kit
        .calls()
        .iter()
        .filter(|c| c.method == "match_ended")
        .map(|c| c.args::<(i64, bool)>().1)
        .collect();
    assert_eq!(won, vec![true, false]);
    let credited: Vec<(i64, String)> = kit
        .calls()
        .iter()
        .filter(|c| c.method == "credit_kill")
        .map(|c| c.args::<(i64, String)>())
        .collect();
    assert_eq!(credited, vec![(9, "bob".into()), (9, "cid".into())]);
}

#[tokio::test]
async fn a_death_reported_again_after_the_end_tells_the_players_again() {
    let kit = running(6, &["ann", "bob"]).await;
    let game = kit.reference();
    assert!(
        game.on_player_death("bob".into(), "ann".into())
            .await
            .unwrap()
    );
    kit.take_calls();
    assert!(
        game.on_player_death("bob".into(), "ann".into())
            .await
            .unwrap(),
        "a retried report still says the match is over"
    );
    let calls: Vec<(String, &str)> = kit
        .calls()
        .iter()
        .map(|c| (c.target.key().to_string(), c.method))
        .collect();
    assert_eq!(calls, vec![("ann".into(), "match_ended")]);
    assert_eq!(kit.events::<MatchEnded>().len(), 1, "ended once");
    assert_eq!(kit.stored_state().unwrap().kills.get("ann"), Some(&1));
}

#[tokio::test]
async fn self_kills_are_not_credited_and_duplicate_reports_are_ignored() {
    let kit = running(2, &["ann", "bob", "cid"]).await;
    let game = kit.reference();
    game.on_player_death("bob".into(), "bob".into())
        .await
        .unwrap();
    game.on_player_death("bob".into(), "ann".into())
        .await
        .unwrap();
    let state = kit.stored_state().unwrap();
    assert_eq!(state.deaths, 1);
    assert!(state.kills.is_empty());
    assert!(kit.calls().iter().all(|c| c.method != "credit_kill"));
}

#[tokio::test]
async fn ending_by_hand_reports_results_and_only_while_running() {
    let kit = running(5, &["ann", "bob"]).await;
    let result = kit.reference().end().await.unwrap();
    assert_eq!(
        (result.winner, result.deaths),
        (None, 0),
        "two alive: no winner"
    );
    assert!(matches!(
        kit.reference().end().await,
        Err(CallError::Rejected { .. })
    ));
    assert_eq!(
        kit.reference().info().await.unwrap().phase,
        MatchPhase::Ended
    );
    assert_eq!(kit.events::<MatchEnded>().len(), 1);
}

#[tokio::test]
async fn a_game_with_a_string_key_refuses_politely() {
    let kit = GrainTest::<GameGrain>::new("not-a-number").await.unwrap();
    let err = kit.reference().create(2).await.unwrap_err();
    assert!(err.to_string().contains("integers"), "{err}");
}

// ---- Matchmaker ----

/// A matchmaker whose open matches answer a join with `outcomes`, match `i` with `outcomes[i]`,
/// ids from 1.
async fn matchmaker(outcomes: &'static [JoinOutcome]) -> (GrainTest<MatchmakerGrain>, Vec<i64>) {
    let kit = GrainTest::<MatchmakerGrain>::new("lobby").await.unwrap();
    let mut open = Vec::new();
    for (id, outcome) in (1_i64..).zip(outcomes) {
        kit.mock::<GameGrain>()
            .key(id)
            .join(move |_, _| Ok(*outcome));
        open.push(id);
    }
    (kit, open)
}

#[tokio::test]
async fn the_matchmaker_passes_over_matches_without_room() {
    // Wherever the player's hash starts, only match 3 has room.
    let (kit, open) = matchmaker(&[
        JoinOutcome::Full,
        JoinOutcome::NotInLobby,
        JoinOutcome::Joined,
    ])
    .await;
    let mm = kit.reference();
    assert_eq!(mm.queue("ann".into(), open.clone()).await.unwrap(), 3);
    // A retry (the game answers AlreadyJoined) lands in the same match.
    let (kit, open) = matchmaker(&[JoinOutcome::Full, JoinOutcome::AlreadyJoined]).await;
    assert_eq!(kit.reference().queue("ann".into(), open).await.unwrap(), 2);
}

#[tokio::test]
async fn the_matchmaker_picks_the_same_match_for_the_same_player() {
    let (kit, open) = matchmaker(&[JoinOutcome::Joined; 4]).await;
    let mm = kit.reference();
    let first = mm.queue("m7-p3".into(), open.clone()).await.unwrap();
    kit.take_calls();
    assert_eq!(mm.queue("m7-p3".into(), open.clone()).await.unwrap(), first);
    let calls = kit.take_calls();
    assert_eq!(calls.len(), 1, "the first choice had room: {calls:?}");
    // Different players spread over the open matches.
    let mut picked = std::collections::BTreeSet::new();
    for p in 0..32 {
        picked.insert(mm.queue(format!("m7-p{p}"), open.clone()).await.unwrap());
    }
    assert!(picked.len() > 1, "32 players all hashed to {picked:?}");
}

#[tokio::test]
async fn the_matchmaker_refuses_when_no_match_has_room() {
    let (kit, open) = matchmaker(&[JoinOutcome::Full, JoinOutcome::Full]).await;
    let mm = kit.reference();
    let err = mm.queue("ann".into(), open).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Rejected { reason, .. } if reason.contains("open another")),
        "{err}"
    );
    let err = mm.queue("ann".into(), Vec::new()).await.unwrap_err();
    assert!(matches!(err, CallError::Rejected { .. }), "{err}");
    let (kit, open) = matchmaker(&[JoinOutcome::InAnotherMatch]).await;
    let err = kit.reference().queue("ann".into(), open).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Rejected { reason, .. } if reason.contains("another match")),
        "{err}"
    );
}

// ---- Both grains in a whole silo ----

/// `TestSilo`: the real runtime in-process (in-memory storage, the fast test profile). Calls
/// between the grains go through the silo, and a grain deactivated on demand comes back from
/// what it committed.
#[tokio::test]
async fn a_game_and_its_players_in_a_test_silo() {
    use granary_testkit::TestSilo;

    let silo = TestSilo::start(|b| b.register::<PlayerGrain>().register::<GameGrain>())
        .await
        .unwrap();
    let client = silo.client();
    let game = client.grain::<GameGrain>(7_i64);
    let (alice, bob) = (
        client.grain::<PlayerGrain>("alice"),
        client.grain::<PlayerGrain>("bob"),
    );
    game.create(2).await.unwrap();
    for player in ["alice", "bob"] {
        assert_eq!(game.join(player.into()).await.unwrap(), JoinOutcome::Joined);
    }
    game.start().await.unwrap();
    assert_eq!(
        bob.take_damage(150, "alice".into()).await.unwrap(),
        DamageOutcome::Died
    );

    // Both grains leave memory; their next calls load what they committed.
    assert!(silo.deactivate(game.id()).await.unwrap());
    assert!(silo.deactivate(alice.id()).await.unwrap());
    assert_eq!(silo.silo().activation_count(), 1, "bob is still active");
    let info = game.info().await.unwrap();
    assert_eq!(info.phase, MatchPhase::Ended);
    assert_eq!(info.result.unwrap().winner.as_deref(), Some("alice"));
    let alice = alice.status().await.unwrap();
    assert_eq!((alice.kills, alice.wins, alice.game), (1, 1, None));
    silo.shutdown().await.unwrap();
}

/// The example's silo set-up (`example_player_game::host`): players queue through the
/// matchmaker, and the authorization filter lets a player's own session and the grains' calls
/// to players through, and refuses a forged call or one without a user.
#[tokio::test]
async fn the_authorization_filter_refuses_forged_calls_to_players() {
    use granary_testkit::TestSilo;

    let silo = TestSilo::start(example_player_game::host).await.unwrap();
    let client = silo.client();
    let game = client.grain::<GameGrain>(9_i64);
    game.create(2).await.unwrap();
    // The matchmaker (a stateless worker) joins each player through the game, which calls the
    // player: a call chain with grains on it, let through without a user.
    let mm = client.grain::<MatchmakerGrain>("lobby");
    for player in ["ann", "bob"] {
        assert_eq!(mm.queue(player.into(), vec![9]).await.unwrap(), 9);
    }
    game.start().await.unwrap();

    let ann = client.grain::<PlayerGrain>("ann").with_context(USER, "ann");
    assert_eq!(
        ann.status().await.unwrap().game,
        Some(9),
        "ann's own session"
    );

    let forged = client.grain::<PlayerGrain>("bob").with_context(USER, "ann");
    let err = forged.take_damage(150, "ann".into()).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Refused { filter, reason, .. }
            if filter == PlayerAuth::NAME && reason.contains("ann may not act as player bob")),
        "{err}"
    );
    let anonymous = client.grain::<PlayerGrain>("bob");
    let err = anonymous.status().await.unwrap_err();
    assert!(
        matches!(&err, CallError::Refused { reason, .. } if reason.contains("no user")),
        "{err}"
    );

    // The refused hit did nothing; bob's own session takes it, and the game (a grain) tells
    // ann she won.
    let bob = client.grain::<PlayerGrain>("bob").with_context(USER, "bob");
    assert_eq!(
        bob.status().await.unwrap().health,
        example_player_game::MAX_HEALTH
    );
    assert_eq!(
        bob.take_damage(150, "ann".into()).await.unwrap(),
        DamageOutcome::Died
    );
    let ann = ann.status().await.unwrap();
    assert_eq!((ann.kills, ann.wins, ann.game), (1, 1, None));
    // Other grain types need no user.
    assert_eq!(game.info().await.unwrap().phase, MatchPhase::Ended);
    silo.shutdown().await.unwrap();
}

/// A player's session attacks through its own player grain (the silos' filter lets it act
/// only as itself), and the game pushes every change to its watchers: the hits, then the kill
/// that ends the match (its credit comes back to the attacker on the attack's own call chain:
/// the player grain is reentrant), in push order.
#[tokio::test]
async fn attacks_from_a_session_are_pushed_to_the_matchs_watchers_to_the_end() {
    use example_player_game::{MatchView, MatchWatcher, MatchWatcherRef};
    use granary_testkit::TestSilo;
    use tokio::sync::mpsc;

    struct Screen(mpsc::UnboundedSender<MatchView>);
    impl MatchWatcher for Screen {
        async fn on_update(&self, view: MatchView) -> granary::Result<()> {
            let _ = self.0.send(view);
            Ok(())
        }
    }

    let silo = TestSilo::start(example_player_game::host).await.unwrap();
    let client = silo.client();
    let game = client.grain::<GameGrain>(11_i64);
    game.create(2).await.unwrap();
    let (views, mut pushed) = mpsc::unbounded_channel();
    let screen = client.observe(MatchWatcherRef::object(Screen(views)));
    let lobby = game.watch(screen.reference()).await.unwrap();
    assert_eq!((lobby.phase, lobby.seq), (MatchPhase::Lobby, 0));
    let mm = client.grain::<MatchmakerGrain>("lobby");
    for player in ["ann", "bob"] {
        assert_eq!(mm.queue(player.into(), vec![11]).await.unwrap(), 11);
    }
    game.start().await.unwrap();
    let ann = client.grain::<PlayerGrain>("ann").with_context(USER, "ann");
    let err = ann.attack("cid".into()).await.unwrap_err();
    assert!(matches!(err, CallError::Rejected { .. }), "{err}");
    assert_eq!(
        ann.attack("bob".into()).await.unwrap(),
        DamageOutcome::Survived {
            health: 65,
            absorbed: 0
        }
    );
    ann.attack("bob".into()).await.unwrap();
    assert_eq!(ann.attack("bob".into()).await.unwrap(), DamageOutcome::Died);
    let mut lines = Vec::new();
    let mut last_seq = 0;
    while lines.last().is_none_or(|l: &String| !l.contains("ended")) {
        let view = pushed.recv().await.unwrap();
        assert!(view.seq > last_seq, "pushes arrive in order");
        last_seq = view.seq;
        lines.push(view.last.clone());
        if view.phase == MatchPhase::Ended {
            assert_eq!(view.result.unwrap().winner.as_deref(), Some("ann"));
            assert_eq!(view.health, vec![("ann".into(), 100), ("bob".into(), 0)]);
        }
    }
    assert_eq!(
        lines,
        [
            "ann joined",
            "bob joined",
            "the match started",
            "ann hit bob: 65 health left",
            "ann hit bob: 30 health left",
            "the match ended: ann won",
        ]
    );
    let ann = ann.status().await.unwrap();
    assert_eq!((ann.kills, ann.wins, ann.game), (1, 1, None));
    drop(screen);
    silo.shutdown().await.unwrap();
}
