//! Silo configuration: every knob with its default.

use std::time::Duration;

/// How a silo behaves. `SiloConfig::default()` is the production default; tests shorten the
/// idle timeout and collection quantum.
#[derive(Debug, Clone)]
pub struct SiloConfig {
    /// The silo's name (appears in its [`SiloId`](granary_core::SiloId) and logs).
    pub name: String,
    /// Deadline of a call whose reference sets none. Default 30 s.
    pub call_timeout: Duration,
    /// An activation that received no call for this long is deactivated. Default 15 min.
    pub idle_timeout: Duration,
    /// How often idle activations are looked for. Default 1 min; at most `idle_timeout`.
    pub collection_quantum: Duration,
    /// Upper bound of [`Silo::shutdown`](crate::Silo::shutdown). Default 30 s.
    pub shutdown_timeout: Duration,
    /// How many times a call is routed again when it meets closing activations before it fails
    /// with `CallError::Unavailable`. Default 8.
    pub max_reroutes: u32,
    /// The most activations the silo holds at once. A call that would activate one more grain
    /// fails with `CallError::TooManyActivations` (retryable); grains already active keep
    /// working. Default 1,000,000 (an idle activation costs about 600 bytes plus its state).
    pub max_activations: usize,
    /// The most requests one activation keeps waiting for their turn. Beyond it a call fails at
    /// once with `CallError::QueueFull` (retryable) instead of waiting behind a queue the grain
    /// cannot work off before its deadline. Timer ticks are not counted. Default 10,000.
    pub max_queued_requests: usize,
    /// Send every call through the wire codec (envelope encoded to bytes and decoded again,
    /// reply likewise), exactly as the cluster transport will. Slower; for tests. Default false.
    pub wire_local_calls: bool,
    /// The largest event (bytes of JSON) `ctx.publish` accepts; a larger one fails with
    /// `CallError::EventTooLarge`. Default 1 MiB
    /// ([`DEFAULT_MAX_EVENT_SIZE`](granary_core::DEFAULT_MAX_EVENT_SIZE)).
    pub max_event_size: usize,
    /// How often the reminder service reads the reminders due soon from the shards its silo
    /// owns (it reads those due within two intervals, so a reminder registered on another silo
    /// fires at most about one interval late the first time; one registered on this silo is
    /// scheduled at once). Default 1 s.
    pub reminder_scan_interval: Duration,
    /// How long the reminder service waits before delivering again a tick whose call failed
    /// (the grain's silo died, say). Default 1 s.
    pub reminder_retry: Duration,
    /// The most reminder ticks the silo delivers at once; the others wait their turn. Default
    /// 1,024.
    pub max_reminder_ticks_in_flight: usize,
}

impl Default for SiloConfig {
    fn default() -> Self {
        Self {
            name: "silo".to_owned(),
            call_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15 * 60),
            collection_quantum: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            max_reroutes: 8,
            max_activations: 1_000_000,
            max_queued_requests: 10_000,
            wire_local_calls: false,
            max_event_size: granary_core::DEFAULT_MAX_EVENT_SIZE,
            reminder_scan_interval: Duration::from_secs(1),
            reminder_retry: Duration::from_secs(1),
            max_reminder_ticks_in_flight: 1_024,
        }
    }
}

impl SiloConfig {
    /// The fast profile for tests: 2 s call timeout, 200 ms idle timeout, 50 ms collection
    /// quantum, 5 s shutdown, reminder scans every 200 ms and retries after 200 ms.
    #[must_use]
    pub fn test_profile() -> Self {
        Self {
            name: "test-silo".to_owned(),
            call_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_millis(200),
            collection_quantum: Duration::from_millis(50),
            shutdown_timeout: Duration::from_secs(5),
            reminder_scan_interval: Duration::from_millis(200),
            reminder_retry: Duration::from_millis(200),
            ..Self::default()
        }
    }
}
