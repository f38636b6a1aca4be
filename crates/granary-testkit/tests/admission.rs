//! `GrainTest` admits turns with the silo's scheduler: `#[read_only]` turns overlap, an
//! exclusive turn waits until they all ended, and a call back into a waiting chain is a cycle
//! for a grain that is not reentrant.

use std::pin::pin;
use std::sync::Arc;

use granary::{GrainContext, Result, grain};
use granary_testkit::GrainTest;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Nothing;

/// What the test sees of the grain: the read-only turns inside it now, the order turns
/// entered and left in, and the gate the read-only turns wait at.
#[derive(Debug)]
struct Probe {
    inside: watch::Sender<usize>,
    log: Mutex<Vec<&'static str>>,
    open: watch::Sender<bool>,
}

#[derive(Debug)]
pub(crate) struct GateGrain {
    probe: Arc<Probe>,
}

#[grain(name = "gate", state = Nothing)]
impl GateGrain {
    /// Enters, waits until the test opens the gate, leaves.
    #[read_only]
    pub async fn peek(&self, _ctx: &GrainContext<Self>) -> Result<()> {
        self.probe.log.lock().push("peek in");
        self.probe.inside.send_modify(|n| *n += 1);
        let mut open = self.probe.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        self.probe.log.lock().push("peek out");
        self.probe.inside.send_modify(|n| *n -= 1);
        Ok(())
    }

    /// An exclusive turn that does not wait on anything.
    pub async fn poke(&self, _ctx: &GrainContext<Self>) -> Result<()> {
        self.probe.log.lock().push("poke");
        Ok(())
    }
}

async fn kit() -> (GrainTest<GateGrain>, Arc<Probe>) {
    let probe = Arc::new(Probe {
        inside: watch::channel(0).0,
        log: Mutex::new(Vec::new()),
        open: watch::channel(false).0,
    });
    let made = probe.clone();
    let kit = GrainTest::with_factory("g-1", None, move |_| GateGrain {
        probe: made.clone(),
    })
    .await
    .expect("activates");
    (kit, probe)
}

type Peek = tokio::task::JoinHandle<Result<()>>;

/// A `peek` call running on its own task.
fn spawn_peek(kit: &GrainTest<GateGrain>) -> Peek {
    let reference = kit.reference();
    tokio::spawn(async move { reference.peek().await })
}

/// Two `peek` calls, returned once both are inside the grain at once (neither can leave
/// before the gate opens).
async fn two_peeks_inside(kit: &GrainTest<GateGrain>, probe: &Probe) -> [Peek; 2] {
    let peeks = [spawn_peek(kit), spawn_peek(kit)];
    let mut inside = probe.inside.subscribe();
    // A guard, not a wait: the two turns are in at once long before; a model that runs
    // read-only turns one at a time never gets there and fails here instead of hanging.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        inside.wait_for(|n| *n == 2),
    )
    .await
    .expect("two read-only turns in progress at once")
    .expect("the probe lives");
    peeks
}

#[tokio::test(flavor = "current_thread")]
async fn read_only_turns_overlap() {
    let (kit, probe) = kit().await;
    let [first, second] = two_peeks_inside(&kit, &probe).await;
    probe.open.send_replace(true);
    first.await.expect("joins").expect("peek answers");
    second.await.expect("joins").expect("peek answers");
    assert_eq!(*probe.inside.borrow(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn an_exclusive_turn_waits_for_the_read_only_ones() {
    let (kit, probe) = kit().await;
    let [first, second] = two_peeks_inside(&kit, &probe).await;
    // `poke` never waits: admitted, it would finish in this one poll. Pending, it is queued.
    let reference = kit.reference();
    let mut poke = pin!(reference.poke());
    assert!(
        futures::poll!(poke.as_mut()).is_pending(),
        "an exclusive call must wait while read-only turns run"
    );
    assert!(!probe.log.lock().contains(&"poke"));
    probe.open.send_replace(true);
    poke.await.expect("poke answers");
    first.await.expect("joins").expect("peek answers");
    second.await.expect("joins").expect("peek answers");
    assert_eq!(
        *probe.log.lock(),
        ["peek in", "peek in", "peek out", "peek out", "poke"],
        "the exclusive turn ran after both read-only turns ended"
    );
}
