//! Raw actix: `Addr::send` for calls, `do_send` for one-way messages.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{Rng, p50_of};

struct PingActor {
    ticks: u64,
    target: u64,
    done: Option<oneshot::Sender<()>>,
}

impl PingActor {
    fn new() -> Self {
        Self {
            ticks: 0,
            target: u64::MAX,
            done: None,
        }
    }
}

impl Actor for PingActor {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Ping(u64);

impl Handler<Ping> for PingActor {
    type Result = u64;
    fn handle(&mut self, msg: Ping, _ctx: &mut Context<Self>) -> u64 {
        msg.0 + 1
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

impl Handler<Tick> for PingActor {
    type Result = ();
    fn handle(&mut self, _msg: Tick, _ctx: &mut Context<Self>) {
        self.ticks += 1;
        if self.ticks == self.target
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Expect(u64, oneshot::Sender<()>);

impl Handler<Expect> for PingActor {
    type Result = ();
    fn handle(&mut self, msg: Expect, _ctx: &mut Context<Self>) {
        self.target = msg.0;
        self.done = Some(msg.1);
    }
}

/// Caller and actor on the same arbiter (the System's).
pub(crate) fn p1a(calls: usize) -> f64 {
    System::new().block_on(async move {
        let addr = PingActor::new().start();
        p50_of(calls, |i| {
            let addr = &addr;
            async move { addr.send(Ping(i)).await.expect("reply") }
        })
        .await
    })
}

/// Actors spread over two arbiters, half the callers on each.
pub(crate) fn p1b(actors: usize, callers: usize, per_caller: usize) -> f64 {
    System::new().block_on(async move {
        let arbiters = [Arbiter::new(), Arbiter::new()];
        let addrs: Arc<Vec<Addr<PingActor>>> = Arc::new(
            (0..actors)
                .map(|i| {
                    PingActor::start_in_arbiter(&arbiters[i % 2].handle(), |_| PingActor::new())
                })
                .collect(),
        );
        for a in addrs.iter() {
            a.send(Ping(0)).await.expect("started");
        }
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let start = Instant::now();
        for c in 0..callers {
            let (addrs, done) = (addrs.clone(), done_tx.clone());
            arbiters[c % 2].spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + c as u64);
                for i in 0..per_caller as u64 {
                    std::hint::black_box(
                        addrs[rng.below(addrs.len())]
                            .send(Ping(i))
                            .await
                            .expect("reply"),
                    );
                }
                let _ = done.send(());
            });
        }
        for _ in 0..callers {
            done_rx.recv().await.expect("caller finished");
        }
        let rate = (callers * per_caller) as f64 / start.elapsed().as_secs_f64();
        for arbiter in arbiters {
            arbiter.stop();
        }
        rate
    })
}

/// One sender, one actor, same arbiter.
pub(crate) fn p2(messages: usize) -> f64 {
    System::new().block_on(async move {
        let addr = PingActor::new().start();
        let (done_tx, done_rx) = oneshot::channel();
        addr.send(Expect(messages as u64, done_tx))
            .await
            .expect("armed");
        let start = Instant::now();
        for i in 0..messages {
            addr.do_send(Tick);
            if i % 1024 == 0 {
                tokio::task::yield_now().await;
            }
        }
        done_rx.await.expect("all counted");
        messages as f64 / start.elapsed().as_secs_f64()
    })
}

/// Heap bytes per idle actor after one call each.
pub(crate) fn p8(actors: usize) -> f64 {
    System::new().block_on(async move {
        let mut addrs = Vec::with_capacity(actors);
        let before = crate::alloc::live();
        for i in 0..actors {
            let addr = PingActor::new().start();
            addr.send(Ping(i as u64)).await.expect("reply");
            addrs.push(addr);
        }
        let after = crate::alloc::live();
        let per_actor = (after - before) as f64 / actors as f64;
        drop(addrs);
        per_actor
    })
}
