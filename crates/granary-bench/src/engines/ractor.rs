//! ractor: `ActorRef::call` with an RPC reply port.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, rpc::CallResult};

use super::{Rng, current_thread, multi_thread, p50_of};

struct PingActor;

enum Msg {
    Ping(u64, RpcReplyPort<u64>),
}

impl Actor for PingActor {
    type Msg = Msg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Msg>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Ping(x, reply) => {
                let _ = reply.send(x + 1);
            }
        }
        Ok(())
    }
}

async fn ping(actor: &ActorRef<Msg>, x: u64) -> u64 {
    match actor
        .call(|reply| Msg::Ping(x, reply), None)
        .await
        .expect("sent")
    {
        CallResult::Success(v) => v,
        _ => panic!("ractor call failed"),
    }
}

pub(crate) fn p1a(calls: usize) -> f64 {
    current_thread().block_on(async {
        let (actor, _handle) = Actor::spawn(None, PingActor, ()).await.expect("spawned");
        let p50 = p50_of(calls, |i| {
            let actor = &actor;
            async move { ping(actor, i).await }
        })
        .await;
        actor.stop(None);
        p50
    })
}

pub(crate) fn p1b(actors: usize, callers: usize, per_caller: usize) -> f64 {
    multi_thread(2).block_on(async {
        let mut refs = Vec::with_capacity(actors);
        for _ in 0..actors {
            refs.push(Actor::spawn(None, PingActor, ()).await.expect("spawned").0);
        }
        let refs = Arc::new(refs);
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let refs = refs.clone();
                tokio::spawn(async move {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + c as u64);
                    for i in 0..per_caller as u64 {
                        std::hint::black_box(ping(&refs[rng.below(refs.len())], i).await);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("caller");
        }
        let rate = (callers * per_caller) as f64 / start.elapsed().as_secs_f64();
        for r in refs.iter() {
            r.stop(None);
        }
        rate
    })
}
