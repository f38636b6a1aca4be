//! kameo: `ActorRef::ask`.

use kameo::Actor;
use kameo::actor::{ActorRef, Spawn};
use kameo::message::{Context, Message};

use super::{Target, current_thread, drive_callers, multi_thread, p50_of};

#[derive(Actor)]
struct PingActor;

struct Ping(u64);

impl Message<Ping> for PingActor {
    type Reply = u64;

    async fn handle(&mut self, msg: Ping, _ctx: &mut Context<Self, Self::Reply>) -> u64 {
        msg.0 + 1
    }
}

pub(crate) fn p1a(calls: usize) -> f64 {
    current_thread().block_on(async {
        let actor = PingActor::spawn(PingActor);
        p50_of(calls, |i| {
            let actor = &actor;
            async move { actor.ask(Ping(i)).await.expect("reply") }
        })
        .await
    })
}

impl Target for ActorRef<PingActor> {
    async fn call(&self, x: u64) -> u64 {
        self.ask(Ping(x)).await.expect("reply")
    }
}

pub(crate) fn p1b(actors: usize, callers: usize, per_caller: usize) -> f64 {
    multi_thread(2).block_on(async {
        let refs = (0..actors).map(|_| PingActor::spawn(PingActor)).collect();
        drive_callers(refs, callers, per_caller).await
    })
}
