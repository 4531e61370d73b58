//! Results of one phase and their summary (exact percentiles over every sample).

use std::time::Duration;

use crate::cpu::Usage;

/// Raw results of one phase.
#[derive(Debug, Default)]
pub struct Phase {
    /// Answers that were HTTP 200 and passed the phase's check.
    pub ok: u64,
    /// Everything else (non-200, transport errors, failed checks).
    pub errors: u64,
    /// From the first worker starting to the last one finishing.
    pub elapsed: Duration,
    /// One latency per request, microseconds.
    pub latencies_us: Vec<u32>,
    /// Every request of a non-cycling pool has been sent.
    pub pool_done: bool,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
    /// Open loop only: the latest the scheduler dispatched a request, microseconds.
    pub max_lag_us: Option<u32>,
    /// CPU seconds used during the phase, when `/proc` is readable.
    pub cpu: Option<Usage>,
    /// Wall seconds over which `cpu` was measured.
    pub cpu_wall_secs: f64,
}

/// What the tables show of a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Successful requests per second.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Worst latency, milliseconds.
    pub max_ms: f64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Cores used during the phase (bench process, everything else).
    pub cpu: Option<Usage>,
}

impl Phase {
    /// Adds a later slice of the same phase to this one.
    pub fn absorb(&mut self, slice: Phase) {
        self.ok += slice.ok;
        self.errors += slice.errors;
        self.elapsed += slice.elapsed;
        self.latencies_us.extend(slice.latencies_us);
        self.pool_done |= slice.pool_done;
        if self.first_error.is_none() {
            self.first_error = slice.first_error;
        }
        self.cpu = match (self.cpu, slice.cpu) {
            (None, u) | (u, None) => u,
            (Some(a), Some(b)) => {
                let mut sum = a;
                sum.own += b.own;
                sum.other += b.other;
                for (s, g) in sum.groups.iter_mut().zip(b.groups) {
                    *s += g;
                }
                Some(sum)
            }
        };
        self.cpu_wall_secs += slice.cpu_wall_secs;
    }

    /// Sorts the samples and summarises them.
    pub fn summarise(&mut self) -> Summary {
        self.latencies_us.sort_unstable();
        let at = |q: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least q of all samples at or below it.
            let rank = (q * self.latencies_us.len() as f64).ceil() as usize;
            let index = rank.clamp(1, self.latencies_us.len()) - 1;
            f64::from(self.latencies_us[index]) / 1000.0
        };
        let secs = self.elapsed.as_secs_f64();
        Summary {
            rps: if secs > 0.0 {
                self.ok as f64 / secs
            } else {
                0.0
            },
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: self
                .latencies_us
                .last()
                .map_or(0.0, |&m| f64::from(m) / 1000.0),
            ok: self.ok,
            errors: self.errors,
            cpu: self
                .cpu
                .filter(|_| self.cpu_wall_secs > 0.0)
                .map(|u| Usage {
                    own: u.own / self.cpu_wall_secs,
                    other: u.other / self.cpu_wall_secs,
                    groups: u.groups.map(|g| g / self.cpu_wall_secs),
                }),
        }
    }
}
