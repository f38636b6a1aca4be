//! kameo: `ActorRef::ask`.

use std::sync::Arc;
use std::time::Instant;

use kameo::Actor;
use kameo::actor::Spawn;
use kameo::message::{Context, Message};

use super::{Rng, current_thread, multi_thread, p50_of};

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

pub(crate) fn p1b(actors: usize, callers: usize, per_caller: usize) -> f64 {
    multi_thread(2).block_on(async {
        let refs: Arc<Vec<_>> =
            Arc::new((0..actors).map(|_| PingActor::spawn(PingActor)).collect());
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let refs = refs.clone();
                tokio::spawn(async move {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + c as u64);
                    for i in 0..per_caller as u64 {
                        std::hint::black_box(
                            refs[rng.below(refs.len())]
                                .ask(Ping(i))
                                .await
                                .expect("reply"),
                        );
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("caller");
        }
        (callers * per_caller) as f64 / start.elapsed().as_secs_f64()
    })
}
