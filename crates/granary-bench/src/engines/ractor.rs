//! ractor: `ActorRef::call` with an RPC reply port.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, rpc::CallResult};

use super::{Target, current_thread, drive_callers, multi_thread, p50_of};

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

impl Target for ActorRef<Msg> {
    async fn call(&self, x: u64) -> u64 {
        ping(self, x).await
    }
}

pub(crate) fn p1b(actors: usize, callers: usize, per_caller: usize) -> f64 {
    multi_thread(2).block_on(async {
        let mut refs = Vec::with_capacity(actors);
        for _ in 0..actors {
            refs.push(Actor::spawn(None, PingActor, ()).await.expect("spawned").0);
        }
        let stop = refs.clone();
        let rate = drive_callers(refs, callers, per_caller).await;
        for r in &stop {
            r.stop(None);
        }
        rate
    })
}
