//! The grain-call floor: one plain tokio task per actor with an mpsc mailbox and a oneshot
//! reply, found through a `DashMap` lookup on every call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

use super::{Target, current_thread, drive_callers, multi_thread, p50_of};

enum Msg {
    Ping(u64, oneshot::Sender<u64>),
    Tick(Arc<AtomicU64>, u64, Option<oneshot::Sender<()>>),
}

type Directory = Arc<DashMap<u64, mpsc::UnboundedSender<Msg>>>;

fn spawn_actor(directory: &Directory, id: u64) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    directory.insert(id, tx);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Ping(x, reply) => {
                    let _ = reply.send(x + 1);
                }
                Msg::Tick(count, target, done) => {
                    if count.fetch_add(1, Ordering::Relaxed) + 1 == target
                        && let Some(done) = done
                    {
                        let _ = done.send(());
                    }
                }
            }
        }
    });
}

async fn ping(directory: &Directory, id: u64, x: u64) -> u64 {
    let (tx, rx) = oneshot::channel();
    let mailbox = directory.get(&id).expect("actor exists").clone();
    mailbox
        .send(Msg::Ping(x, tx))
        .map_err(|_| ())
        .expect("actor alive");
    rx.await.expect("reply")
}

pub(crate) fn p1a(calls: usize) -> f64 {
    current_thread().block_on(async {
        let directory: Directory = Arc::default();
        spawn_actor(&directory, 1);
        p50_of(calls, |i| {
            let directory = &directory;
            async move { ping(directory, 1, i).await }
        })
        .await
    })
}

struct FloorTarget {
    directory: Directory,
    id: u64,
}

impl Target for FloorTarget {
    async fn call(&self, x: u64) -> u64 {
        ping(&self.directory, self.id, x).await
    }
}

pub(crate) fn p1b(actors: usize, callers: usize, per_caller: usize) -> f64 {
    multi_thread(2).block_on(async {
        let directory: Directory = Arc::default();
        for id in 0..actors as u64 {
            spawn_actor(&directory, id);
        }
        let targets = (0..actors as u64)
            .map(|id| FloorTarget {
                directory: directory.clone(),
                id,
            })
            .collect();
        drive_callers(targets, callers, per_caller).await
    })
}

pub(crate) fn p2(messages: usize) -> f64 {
    current_thread().block_on(async {
        let directory: Directory = Arc::default();
        spawn_actor(&directory, 1);
        let count = Arc::new(AtomicU64::new(0));
        let (done_tx, done_rx) = oneshot::channel();
        let mut done_tx = Some(done_tx);
        let start = Instant::now();
        for i in 0..messages as u64 {
            let done = if i + 1 == messages as u64 {
                done_tx.take()
            } else {
                None
            };
            let mailbox = directory.get(&1).expect("actor exists").clone();
            mailbox
                .send(Msg::Tick(count.clone(), messages as u64, done))
                .map_err(|_| ())
                .expect("alive");
            if i % 1024 == 0 {
                tokio::task::yield_now().await;
            }
        }
        done_rx.await.expect("all counted");
        messages as f64 / start.elapsed().as_secs_f64()
    })
}

pub(crate) fn p8(actors: usize) -> f64 {
    current_thread().block_on(async {
        let directory: Directory = Arc::new(DashMap::with_capacity(0));
        let before = crate::alloc::live();
        for id in 0..actors as u64 {
            spawn_actor(&directory, id);
            ping(&directory, id, 0).await;
        }
        let after = crate::alloc::live();
        (after - before) as f64 / actors as f64
    })
}
