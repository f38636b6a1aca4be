//! [`PlayerAuth`]: the example's authorization filter, and [`host`], which sets up a silo
//! builder with the example's grains and that filter.

use granary::{CallFilter, CallKind, FilterCall, Grain, Refusal, SiloBuilder};
use player_game_api::USER;

use crate::{GameGrain, MatchmakerGrain, PlayerGrain};

/// An incoming call filter that lets a call to a [`PlayerGrain`] through only when it comes
/// from that player's own session (the request context's [`USER`] is the player's key) or from
/// inside the cluster: a call made by a grain's turn (its call chain holds a grain, as when a
/// game tells its players the match ended) or the runtime's timer and reminder ticks. Other
/// calls are refused with a [`Refusal`]; the caller gets `CallError::Refused` naming
/// [`PlayerAuth::NAME`]. Calls to other grain types pass.
///
/// The cluster's secret keeps strangers out; this filter keeps one player's session from
/// acting as another's. (A one-way call a grain makes starts a chain of its own, with no grain
/// on it: the example makes none to players.)
#[derive(Debug, Default, Clone, Copy)]
pub struct PlayerAuth;

impl PlayerAuth {
    /// The filter's name, in the `CallError::Refused` its refusals give.
    pub const NAME: &'static str = "player-auth";
}

impl CallFilter for PlayerAuth {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn before(&self, call: &mut FilterCall<'_>) -> Result<(), Refusal> {
        if call.grain().type_name() != PlayerGrain::TYPE_NAME
            || matches!(call.kind(), CallKind::Timer | CallKind::Reminder)
            || !call.chain().grains.is_empty()
        {
            return Ok(());
        }
        let player = call.grain().key().to_string();
        match call.context().get(USER) {
            Some(user) if user == player => Ok(()),
            Some(user) => Err(Refusal::new(format!(
                "user {user} may not act as player {player}"
            ))),
            None => Err(Refusal::new(format!(
                "no user in the request context; call player {player} with \
                 `.with_context(\"{USER}\", \"{player}\")`"
            ))),
        }
    }
}

/// `builder` with the example's grains registered ([`PlayerGrain`], [`GameGrain`],
/// [`MatchmakerGrain`]) and [`PlayerAuth`] installed as an incoming filter: every silo of the
/// example (the `silo` binary, the demo's silos) is built through it.
#[must_use]
pub fn host(builder: SiloBuilder) -> SiloBuilder {
    builder
        .register::<PlayerGrain>()
        .register::<GameGrain>()
        .register::<MatchmakerGrain>()
        .incoming_filter(PlayerAuth)
}
