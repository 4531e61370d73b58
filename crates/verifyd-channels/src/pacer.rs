//! Pacing of sends to a provider: a rate cap (an SMSC's `submit_sm` per second, a SIP
//! trunk's calls per second) and a shared pause after the provider says it is overloaded.
//!
//! The pacer hands out start times ("slots") spaced `1/rate` apart, so the cap is smooth
//! rather than bursty; a caller sleeps until its slot with tokio time. Without a cap, slots
//! are "now" unless a throttling pause is in force. The mutex is a std one: the critical
//! section is a comparison and an addition and never crosses an `.await`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Hands out send start times.
#[derive(Debug)]
pub struct Pacer {
    /// Spacing between two sends; `None` means uncapped.
    interval: Option<Duration>,
    /// The earliest start time of the next send.
    next: Mutex<Instant>,
}

impl Pacer {
    /// A pacer allowing at most `rate` sends per second (`None` or 0: no cap).
    #[must_use]
    pub fn new(rate: Option<u32>) -> Self {
        let interval = rate.filter(|&r| r > 0).map(|r| Duration::from_secs(1) / r);
        Self {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot.
    pub async fn wait(&self) {
        let now = Instant::now();
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(now);
            *next = slot + self.interval.unwrap_or_default();
            slot
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }

    /// Holds every send back until `pause` from now (the provider throttled us).
    pub fn pause(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if *next < until {
            *next = until;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_by_the_cap() {
        let pacer = Pacer::new(Some(10));
        let start = Instant::now();
        for _ in 0..5 {
            pacer.wait().await;
        }
        // 5 submits at 10/s: the 5th starts 400 ms after the first.
        assert_eq!(Instant::now() - start, Duration::from_millis(400));
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

    #[tokio::test(start_paused = true)]
    async fn a_pause_delays_the_next_submit_even_without_a_cap() {
        let pacer = Pacer::new(None);
        let start = Instant::now();
        pacer.wait().await;
        assert_eq!(Instant::now(), start);
        pacer.pause(Duration::from_millis(250));
        pacer.wait().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(250));
    }
}
