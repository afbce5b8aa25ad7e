//! Upstream's result counting (`worker.doProbe`): a result replaces the current one only after
//! it came `successThreshold` (success) or `failureThreshold` (failure) times in a row.

/// The run of equal results so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counter {
    success_threshold: u32,
    failure_threshold: u32,
    last: Option<bool>,
    run: u32,
}

impl Counter {
    pub(super) fn new(success_threshold: i32, failure_threshold: i32) -> Self {
        let at_least_one = |t: i32| u32::try_from(t).unwrap_or(0).max(1);
        Self {
            success_threshold: at_least_one(success_threshold),
            failure_threshold: at_least_one(failure_threshold),
            last: None,
            run: 0,
        }
    }

    /// Counts one result; `Some(result)` when it becomes the probe's result.
    pub(super) fn observe(&mut self, success: bool) -> Option<bool> {
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let threshold = if success {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        (self.run >= threshold).then_some(success)
    }
}

#[cfg(test)]
mod tests {
    use super::Counter;

    #[test]
    fn failures_count_only_in_a_row() {
        let mut c = Counter::new(1, 3);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(true), Some(true), "a success resets the run");
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), Some(false), "the third in a row");
        assert_eq!(c.observe(false), Some(false), "and every one after it");
    }

    #[test]
    fn successes_need_their_own_threshold() {
        let mut c = Counter::new(2, 1);
        assert_eq!(c.observe(false), Some(false));
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), Some(true));
        // Thresholds below one (not valid in the API) act as one.
        let mut c = Counter::new(0, 0);
        assert_eq!(c.observe(true), Some(true));
        assert_eq!(c.observe(false), Some(false));
    }
}
