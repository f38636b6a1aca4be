//! The filter chain on its own: order, refusals, panics, context changes, after hooks.

use std::sync::Mutex;

use granary_core::MAX_CONTEXT_BYTES;

use super::*;

/// Records its hooks in a shared log; refuses, panics or tags the context as told.
struct Probe {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    act: Act,
}

#[derive(Clone, Copy, PartialEq)]
enum Act {
    Pass,
    Refuse,
    Panic,
    Tag,
    Bloat,
}

impl CallFilter for Probe {
    fn name(&self) -> &str {
        self.name
    }

    async fn before(&self, call: &mut FilterCall<'_>) -> Result<(), Refusal> {
        self.log
            .lock()
            .unwrap()
            .push(format!("before {}", self.name));
        tokio::task::yield_now().await; // a filter that waits
        match self.act {
            Act::Pass => Ok(()),
            Act::Refuse => Err(Refusal::new("no entry")),
            Act::Panic => panic!("filter bug"),
            Act::Tag => {
                call.context_mut().insert("tag", self.name);
                Ok(())
            }
            Act::Bloat => {
                call.context_mut()
                    .insert("blob", "x".repeat(MAX_CONTEXT_BYTES));
                Ok(())
            }
        }
    }

    fn after(&self, _call: &FilterCall<'_>, result: Result<(), &CallError>, _elapsed: Duration) {
        let how = match result {
            Ok(()) => "ok".to_owned(),
            Err(CallError::Refused { filter, .. }) => format!("refused by {filter}"),
            Err(other) => format!("{other:?}")
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned(),
        };
        self.log
            .lock()
            .unwrap()
            .push(format!("after {} {how}", self.name));
    }
}

fn chain_of(acts: &[(&'static str, Act)]) -> (Filters, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut list = FilterList::default();
    for &(name, act) in acts {
        list.push(Probe {
            name,
            log: log.clone(),
            act,
        });
    }
    (list.build().expect("filters"), log)
}

/// Runs `filters` around a turn that records the context it saw and answers 7.
async fn run(filters: &Filters, ran: &Mutex<Option<RequestContext>>) -> Result<u32, CallError> {
    let grain = GrainId::new("Player", "alice");
    let chain = CallChain::root().with_context(&RequestContext::new().with("user", "alice"));
    let call = FilterCall::new(&grain, "hit", CallKind::Call, chain);
    filters
        .around(call, |chain| async move {
            *ran.lock().unwrap() = Some(chain.context);
            Ok(7)
        })
        .await
}

fn take(log: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn no_filters_build_no_chain() {
    assert!(FilterList::default().build().is_none());
}

#[tokio::test]
async fn filters_run_in_order_and_their_after_hooks_in_reverse() {
    let (filters, log) = chain_of(&[("a", Act::Pass), ("b", Act::Tag), ("c", Act::Pass)]);
    let ran = Mutex::new(None);
    assert_eq!(run(&filters, &ran).await, Ok(7));
    assert_eq!(
        take(&log),
        [
            "before a",
            "before b",
            "before c",
            "after c ok",
            "after b ok",
            "after a ok"
        ]
    );
    let seen = ran.lock().unwrap().take().expect("the turn ran");
    assert_eq!(seen.get("user"), Some("alice"));
    assert_eq!(
        seen.get("tag"),
        Some("b"),
        "the turn sees what a filter set"
    );
}

#[tokio::test]
async fn a_refusal_stops_the_call_and_only_earlier_filters_see_it() {
    let (filters, log) = chain_of(&[("a", Act::Pass), ("b", Act::Refuse), ("c", Act::Pass)]);
    let ran = Mutex::new(None);
    let err = run(&filters, &ran).await.expect_err("refused");
    assert!(
        matches!(&err, CallError::Refused { filter, reason, method, .. }
            if filter == "b" && reason == "no entry" && method == "hit"),
        "{err:?}"
    );
    assert!(ran.lock().unwrap().is_none(), "the turn did not run");
    assert_eq!(take(&log), ["before a", "before b", "after a refused by b"]);
}

#[tokio::test]
async fn a_panicking_filter_fails_that_call_only() {
    let (filters, log) = chain_of(&[("a", Act::Pass), ("b", Act::Panic)]);
    let ran = Mutex::new(None);
    let err = run(&filters, &ran).await.expect_err("failed");
    assert!(
        matches!(&err, CallError::FilterPanicked { filter, message, .. }
            if filter == "b" && message == "filter bug"),
        "{err:?}"
    );
    assert!(ran.lock().unwrap().is_none());
    assert_eq!(
        take(&log),
        ["before a", "before b", "after a FilterPanicked"]
    );
    // The same chain serves the next call (the panicking filter panics again, which is its
    // bug; the chain itself is intact).
    let (filters, _) = chain_of(&[("a", Act::Pass)]);
    assert_eq!(run(&filters, &ran).await, Ok(7));
}

#[tokio::test]
async fn a_filter_that_grows_the_context_past_its_bounds_fails_the_call() {
    let (filters, log) = chain_of(&[("a", Act::Bloat)]);
    let ran = Mutex::new(None);
    let err = run(&filters, &ran).await.expect_err("too large");
    assert!(
        matches!(err, CallError::ContextTooLarge { entries: 2, .. }),
        "{err:?}"
    );
    assert!(ran.lock().unwrap().is_none());
    assert_eq!(take(&log), ["before a", "after a ContextTooLarge"]);
}
