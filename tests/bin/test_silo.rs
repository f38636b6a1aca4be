//! A silo process hosting the test grains, configured by `GRANARY_*` variables (see
//! `granary-node`): the multi-process cluster tests start, SIGKILL and SIGSTOP it.

use granary_tests::{CounterGrain, MatchGrain, ReminderGrain};

#[tokio::main]
async fn main() {
    let settings = match granary_node::Settings::load(None) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("test-silo: {err}");
            std::process::exit(err.exit_code());
        }
    };
    if let Err(err) = granary_node::run(settings, |silo| {
        let silo = silo
            .register::<CounterGrain>()
            .register::<ReminderGrain>()
            .register::<MatchGrain>();
        granary_tests::subscribed::subscribe(silo)
    })
    .await
    {
        eprintln!("test-silo: {err}");
        std::process::exit(err.exit_code());
    }
}
