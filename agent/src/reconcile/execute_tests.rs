//! Executor helpers: stops in parallel, and the grace left after a preStop hook.
use std::time::Duration;

use super::stop::{MINIMUM_GRACE, grace_after_hook, join_all};

#[tokio::test(start_paused = true)]
async fn join_all_runs_futures_together_and_keeps_their_order() {
    let started = tokio::time::Instant::now();
    let outputs = join_all(
        [3, 1, 2]
            .map(|s| async move {
                tokio::time::sleep(Duration::from_secs(s)).await;
                s
            })
            .into(),
    )
    .await;
    assert_eq!(outputs, [3, 1, 2]);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(3),
        "not one after another"
    );
}

#[test]
fn grace_left_after_the_hook_counts_whole_seconds_as_upstream() {
    let s = Duration::from_secs;
    // No hook, or a hook faster than a second: the whole grace period.
    assert_eq!(grace_after_hook(s(5), Duration::ZERO), s(5));
    assert_eq!(grace_after_hook(s(5), Duration::from_millis(30)), s(5));
    // A 1.04 s hook leaves 4 s, not 3.96 s (which StopContainer would truncate to 3).
    assert_eq!(grace_after_hook(s(5), Duration::from_millis(1_040)), s(4));
    // At least 2 s are left for SIGTERM, unless the grace period is zero.
    assert_eq!(grace_after_hook(s(5), s(4)), MINIMUM_GRACE);
    assert_eq!(grace_after_hook(s(1), Duration::ZERO), MINIMUM_GRACE);
    assert_eq!(
        grace_after_hook(Duration::ZERO, Duration::ZERO),
        Duration::ZERO
    );
}
