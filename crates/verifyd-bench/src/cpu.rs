//! CPU accounting from `/proc` (Linux): how many cores this process used during a phase,
//! and how many everything else on the machine used. The second number tells a clean run
//! (near 0) from one that shared the machine with a compiler.

use std::time::Instant;

/// Clock ticks per second of `/proc` times (`USER_HZ`, 100 on every mainstream Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU times at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    at: Instant,
    /// Busy ticks of the whole machine (everything but idle and iowait).
    machine_busy: u64,
    /// User + system ticks of this process (all threads).
    own: u64,
    /// User + system ticks of this process's threads, by [`GROUPS`].
    groups: [u64; GROUPS.len()],
}

/// Thread-name prefixes whose CPU is reported separately: the server runtime's workers,
/// the load generator's workers, and verifyd's SQLite writer thread.
pub const GROUPS: [&str; 3] = ["bench-server", "bench-client", "verifyd-sqlite"];

/// CPU used over an interval: seconds (from [`Snapshot::cpu_until`]) or, divided by the
/// interval, cores.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// By this process (server, load generator and SQLite writer together).
    pub own: f64,
    /// By everything else on the machine.
    pub other: f64,
    /// By this process's threads, per [`GROUPS`] entry.
    pub groups: [f64; GROUPS.len()],
}

fn machine_busy() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some(total - idle)
}

/// utime + stime from a `/proc/.../stat` file.
fn ticks_of(stat_path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name may contain spaces; fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of the man page, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn own_ticks() -> Option<u64> {
    ticks_of("/proc/self/stat")
}

/// Ticks of this process's threads, summed per [`GROUPS`] prefix.
fn group_ticks() -> [u64; GROUPS.len()] {
    let mut sums = [0; GROUPS.len()];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return sums;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if let Some(i) = GROUPS.iter().position(|g| name.trim().starts_with(g))
            && let Some(t) = ticks_of(&dir.join("stat").to_string_lossy())
        {
            sums[i] += t;
        }
    }
    sums
}

impl Snapshot {
    /// Reads the counters now; `None` where `/proc` is unavailable.
    pub fn take() -> Option<Self> {
        Some(Self {
            at: Instant::now(),
            machine_busy: machine_busy()?,
            own: own_ticks()?,
            groups: group_ticks(),
        })
    }

    /// CPU seconds used from `self` until `later`, and the wall seconds in between.
    pub fn cpu_until(&self, later: &Self) -> (Usage, f64) {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        let own = later.own.saturating_sub(self.own) as f64 / TICKS_PER_SEC;
        let busy = later.machine_busy.saturating_sub(self.machine_busy) as f64 / TICKS_PER_SEC;
        let mut groups = [0.0; GROUPS.len()];
        for (i, g) in groups.iter_mut().enumerate() {
            *g = later.groups[i].saturating_sub(self.groups[i]) as f64 / TICKS_PER_SEC;
        }
        (
            Usage {
                own,
                other: (busy - own).max(0.0),
                groups,
            },
            wall,
        )
    }
}

/// Waits until the whole machine has been nearly idle (under `threshold` busy cores) for
/// three consecutive seconds, or `max` has passed. Returns whether it got quiet.
pub async fn wait_quiet(threshold: f64, max: std::time::Duration) -> bool {
    let deadline = Instant::now() + max;
    let mut quiet_seconds = 0;
    let Some(mut last) = machine_busy() else {
        return false;
    };
    while Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let Some(now) = machine_busy() else {
            return false;
        };
        let busy = now.saturating_sub(last) as f64 / TICKS_PER_SEC;
        last = now;
        if busy < threshold {
            quiet_seconds += 1;
            if quiet_seconds >= 3 {
                return true;
            }
        } else {
            quiet_seconds = 0;
        }
    }
    false
}
