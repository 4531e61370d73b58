//! The calls-per-second cap: start times ("slots") handed out `1/cps` apart, so call
//! attempts are spread evenly rather than sent in bursts. The mutex is a std one: the
//! critical section is a comparison and an addition and never crosses an `.await`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Hands out call start times.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// Spacing between two call attempts; `None` means uncapped.
    interval: Option<Duration>,
    /// The earliest start of the next call attempt.
    next: Mutex<Instant>,
}

impl Pacer {
    /// At most `cps` call attempts per second (`None` or 0: no cap).
    pub(crate) fn new(cps: Option<u32>) -> Self {
        Self {
            interval: cps.filter(|&c| c > 0).map(|c| Duration::from_secs(1) / c),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot.
    pub(crate) async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(now);
            *next = slot + interval;
            slot
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn call_attempts_are_spaced_by_the_cap() {
        let pacer = Pacer::new(Some(4));
        let start = Instant::now();
        for _ in 0..3 {
            pacer.wait().await;
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn no_cap_never_waits() {
        let pacer = Pacer::new(None);
        let start = Instant::now();
        for _ in 0..10 {
            pacer.wait().await;
        }
        assert_eq!(Instant::now(), start);
    }
}
