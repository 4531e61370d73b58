//! `verifyd-bench`: a reproducible load benchmark of verifyd (see `BENCHMARKS.md`).
//!
//! In one process it starts verifyd (durable SQLite in a temp dir, dev inbox channel, a
//! declared application) and a plain axum handler (the *ceiling*) on loopback, each on the
//! server runtime, and drives them from a separate load-generator runtime with pre-signed
//! HTTP/1.1 keep-alive requests (one connection per worker):
//!
//! - closed loop, per concurrency level: start (SMS to fresh numbers), report (the right
//!   code, read from the dev inbox), status by id; each in short slices that alternate with
//!   ceiling slices, so the ratio compares the two under the same machine conditions;
//! - open loop: start then report at a fixed rate.
//!
//! It prints markdown tables (requests/s, p50/p99/max latency, errors, ratio to the
//! ceiling, CPU used by the bench and by the rest of the machine) on stdout and progress on
//! stderr.
//!
//! ```text
//! cargo run --release -p verifyd-bench -- --duration-secs 5 --concurrency 1,8,32,64,256 --rate 1000
//! ```

mod cpu;
mod load;
mod servers;
mod stats;

use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hyper::{Method, Uri};
use time::format_description::well_known::Rfc3339;
use verifyd_core::Clock;
use verifyd_store_sqlite::Synchronous;

use crate::load::{Check, Feed, Prepared, Signer, Stop, Workers, closed_loop, open_loop};
use crate::servers::Servers;
use crate::stats::{Phase, Summary};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load benchmark: verifyd vs a plain axum ceiling, same process"
)]
struct Args {
    /// Seconds per timed closed-loop phase (start, status, ceiling; report runs until every
    /// verification of the start phase is reported).
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Length of one slice, milliseconds: verifyd and the ceiling take turns in slices this
    /// long, so both see the same machine (other load, disk, CPU frequency).
    #[arg(long, default_value_t = 500)]
    slice_ms: u64,
    /// Concurrency levels (workers, one connection each), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64,256")]
    concurrency: Vec<usize>,
    /// Open-loop rate, requests/s, for the fixed-rate start and report phases (0 = skip).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds of each fixed-rate phase.
    #[arg(long, default_value_t = 5)]
    rate_secs: u64,
    /// SQLite commit durability.
    #[arg(long, value_enum, default_value_t = Sync::Full)]
    sync: Sync,
    /// Worker threads of the server runtime (verifyd and the ceiling).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load generator runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Run the load generator on the server runtime instead of its own.
    #[arg(long)]
    shared_runtime: bool,
    /// Start requests signed ahead per second of a start phase; the phase ends early (and
    /// says so) if verifyd is faster than this.
    #[arg(long, default_value_t = 30_000)]
    max_start_rps: u64,
    /// Directory in which the temporary database directory is created (default: the
    /// system temp dir). Put it on the disk you want to measure.
    #[arg(long)]
    db_dir: Option<PathBuf>,
    /// Closed-loop phases to run, comma-separated (report needs start; status needs
    /// report). Skipped phases show as 0 in the tables.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "start,report,status,ceiling"
    )]
    phases: Vec<PhaseName>,
    /// Before each phase, wait up to this many seconds for the machine to be idle (under
    /// 0.2 busy cores for 3 s), so other work on a shared machine does not skew it
    /// (0 = do not wait). The `cores ... other` column shows what still overlapped.
    #[arg(long, default_value_t = 0)]
    wait_quiet_secs: u64,
    /// Install verifyd's log subscriber (info lines on stderr), as the binary does.
    #[arg(long)]
    log: bool,
    /// Run on PostgreSQL instead of SQLite: an admin URL (e.g.
    /// `postgres://postgres@127.0.0.1:5432/postgres`); a fresh database is created for
    /// the run.
    #[arg(long)]
    postgres: Option<String>,
    /// verifyd nodes sharing the database (PostgreSQL only); requests are spread over them
    /// round-robin.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// How the start phase picks its (always distinct) numbers.
    #[arg(long, value_enum, default_value_t = NumberOrder::Scattered)]
    numbers: NumberOrder,
}

/// `--numbers` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NumberOrder {
    /// Spread over the whole range, as real traffic is.
    Scattered,
    /// One after another (the only order before session 3): consecutive numbers share
    /// B-tree pages in the store's number-keyed indexes, so starts look cheaper than they
    /// are.
    Sequential,
    /// Mobile numbers of every numbering plan, the plan picked at random for each start
    /// (its example mobile number with the last four digits counted), as a service with
    /// users everywhere sees them.
    International,
}

/// `--sync` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Sync {
    /// fsync the WAL at every group commit.
    Full,
    /// fsync only at checkpoints.
    Normal,
}

/// `--phases` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PhaseName {
    /// `POST /verification/v1/verifications` (SMS, fresh numbers).
    Start,
    /// `PUT /verification/v1/verifications/id/{id}` with the right code.
    Report,
    /// `GET /verification/v1/verifications/id/{id}`.
    Status,
    /// The plain axum handler, in slices alternating with each verifyd phase (or alone).
    Ceiling,
}

/// One verifyd phase and the ceiling slices interleaved with it.
#[derive(Default)]
struct Paired {
    verifyd: Option<Summary>,
    ceiling: Option<Summary>,
}

/// One concurrency level's results.
struct Level {
    concurrency: usize,
    start: Paired,
    report: Paired,
    status: Paired,
    /// The ceiling alone (only when no verifyd phase ran).
    ceiling_only: Option<Summary>,
}

/// The fixed-rate results.
struct FixedRate {
    rate: u32,
    start: Summary,
    report: Summary,
}

/// mimalloc: glibc malloc was about a tenth of the server's CPU in a start profile (its
/// free-list consolidation and aligned allocations for tasks); see BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.concurrency.is_empty() && args.concurrency.iter().all(|&c| c > 0),
        "--concurrency needs positive levels"
    );
    if args.log {
        verifyd_server::telemetry::init(false);
    }
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name("bench-server")
        .enable_all()
        .build()
        .context("Failed to build the server runtime")?;
    let client_rt = if args.shared_runtime {
        None
    } else {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.client_threads.max(1))
                .thread_name("bench-client")
                .enable_all()
                .build()
                .context("Failed to build the load generator runtime")?,
        )
    };
    let sync = match args.sync {
        Sync::Full => Synchronous::Full,
        Sync::Normal => Synchronous::Normal,
    };
    anyhow::ensure!(
        args.nodes == 1 || args.postgres.is_some(),
        "--nodes > 1 needs --postgres (SQLite serves one node)"
    );
    let mut servers = server_rt.block_on(servers::start(
        sync,
        args.db_dir.as_deref(),
        args.postgres.as_deref(),
        args.nodes.max(1),
    ))?;
    eprintln!(
        "verifyd on {:?} ({}), ceiling on {}",
        servers.verifyd, servers.store_label, servers.ceiling
    );

    let outcome = client_rt
        .as_ref()
        .unwrap_or(&server_rt)
        .block_on(run(&args, &servers));
    // Close the load generator's connections before asking verifyd to drain.
    drop(client_rt);
    server_rt.block_on(servers.stop())?;
    let (levels, fixed) = outcome?;
    print!("{}", render(&args, &levels, fixed.as_ref()));
    Ok(())
}

/// Hands out distinct mobile numbers in the order `--numbers` asks for: Swedish ones,
/// `+4670` and seven digits, or any plan's at random.
struct Numbers {
    next: u64,
    order: NumberOrder,
    /// For [`NumberOrder::International`]: each plan's example mobile number without its
    /// last four digits, and how many numbers of it were handed out.
    plans: Vec<(String, u64)>,
    /// Picks the plan of each international number (seeded: every run asks the same).
    pick: rand::rngs::StdRng,
}

impl Numbers {
    fn new(order: NumberOrder) -> Self {
        let plans = if order == NumberOrder::International {
            // Plans that share a country code can share an example (+44: GB, GG, JE, IM).
            let prefixes: std::collections::BTreeSet<String> =
                verifyd_core::phone::example_mobile_numbers()
                    .into_iter()
                    .filter(|n| n.len() >= 10)
                    .map(|mut n| {
                        n.truncate(n.len() - 4);
                        n
                    })
                    .collect();
            prefixes.into_iter().map(|p| (p, 0)).collect()
        } else {
            Vec::new()
        };
        Self {
            next: 0,
            order,
            plans,
            pick: rand::SeedableRng::seed_from_u64(7),
        }
    }

    fn next(&mut self) -> anyhow::Result<String> {
        let i = self.next;
        self.next += 1;
        if self.order == NumberOrder::International {
            anyhow::ensure!(!self.plans.is_empty(), "no example numbers");
            // Uniformly over the plans, in random order (a cycle through them all would
            // be the worst case of any cache keyed by plan).
            let at = rand::Rng::random_range(&mut self.pick, 0..self.plans.len());
            let (prefix, used) = &mut self.plans[at];
            anyhow::ensure!(*used < 10_000, "ran out of distinct numbers for {prefix}");
            *used += 1;
            return Ok(format!("{prefix}{:04}", *used - 1));
        }
        anyhow::ensure!(i < 10_000_000, "ran out of distinct +4670 numbers");
        let n = match self.order {
            // A bijection of 0..10^7: the multiplier is coprime to 10^7.
            NumberOrder::Scattered => (i * 7_654_321 + 1_234_567) % 10_000_000,
            _ => i,
        };
        Ok(format!("+4670{n:07}"))
    }
}

/// The current time (verifyd's own system clock) as an `x-timestamp` value.
fn timestamp() -> anyhow::Result<String> {
    Ok(verifyd_server::SystemClock.now().format(&Rfc3339)?)
}

const START_PATH: &str = "/verification/v1/verifications";

fn start_body(number: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"identity":{{"type":"number","endpoint":"{number}"}},"method":"sms"}}"#
    ))
}

/// `n` signed SMS starts to fresh numbers, spread over the nodes.
fn start_pool(
    signer: &Signer,
    bases: &[String],
    numbers: &mut Numbers,
    n: usize,
) -> anyhow::Result<Vec<Prepared>> {
    let ts = timestamp()?;
    (0..n)
        .map(|i| {
            let number = numbers.next()?;
            let base = &bases[i % bases.len()];
            signer.prepare(base, Method::POST, START_PATH, start_body(&number), &ts)
        })
        .collect()
}

/// Signed reports with the right code for the newest `n` verifications in the inbox, and
/// their ids.
fn report_pool(
    signer: &Signer,
    bases: &[String],
    servers: &Servers,
    n: u64,
) -> anyhow::Result<(Vec<Prepared>, Vec<String>)> {
    let n = usize::try_from(n)?;
    // Every node keeps the codes it sent; the newest `n` over all of them, newest first.
    let mut messages: Vec<_> = servers
        .inboxes
        .iter()
        .flat_map(|inbox| inbox.messages(None, n))
        .collect();
    messages.sort_by_key(|m| std::cmp::Reverse(m.created_at));
    messages.truncate(n);
    anyhow::ensure!(
        messages.len() == n,
        "the inbox holds {} codes, expected {n}",
        messages.len()
    );
    let ts = timestamp()?;
    let mut pool = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    // Oldest first, the order they were started in; reported on the next node round-robin
    // (so with several nodes most reports land on a node other than the sender).
    for (i, m) in messages.iter().rev().enumerate() {
        let base = &bases[(i + 1) % bases.len()];
        let code = m
            .code
            .as_deref()
            .with_context(|| format!("inbox message {} has no code", m.id))?;
        let body = Bytes::from(format!(r#"{{"method":"sms","sms":{{"code":"{code}"}}}}"#));
        let path = format!("/verification/v1/verifications/id/{}", m.verification_id);
        pool.push(signer.prepare(base, Method::PUT, &path, body, &ts)?);
        ids.push(m.verification_id.clone());
    }
    Ok((pool, ids))
}

/// Signed status requests by id, spread over the nodes.
fn status_pool(signer: &Signer, bases: &[String], ids: &[String]) -> anyhow::Result<Vec<Prepared>> {
    let ts = timestamp()?;
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let path = format!("/verification/v1/verifications/id/{id}");
            signer.prepare(
                &bases[(i + 2) % bases.len()],
                Method::GET,
                &path,
                Bytes::new(),
                &ts,
            )
        })
        .collect()
}

/// Start-shaped requests (same headers and body size) to the ceiling.
fn ceiling_pool(signer: &Signer, base: &str) -> anyhow::Result<Vec<Prepared>> {
    let ts = timestamp()?;
    (0..1000)
        .map(|i| {
            let body = start_body(&format!("+4679{i:07}"));
            signer.prepare(base, Method::POST, "/ceiling", body, &ts)
        })
        .collect()
}

/// Runs one slice and records the CPU used meanwhile.
async fn measured(slice: impl Future<Output = anyhow::Result<Phase>>) -> anyhow::Result<Phase> {
    let before = cpu::Snapshot::take();
    let mut phase = slice.await?;
    if let (Some(before), Some(after)) = (before, cpu::Snapshot::take()) {
        let (usage, wall) = before.cpu_until(&after);
        phase.cpu = Some(usage);
        phase.cpu_wall_secs = wall;
    }
    Ok(phase)
}

/// Waits for an idle machine if `--wait-quiet-secs` asks for it.
async fn settle(args: &Args) {
    if args.wait_quiet_secs > 0
        && !cpu::wait_quiet(0.2, Duration::from_secs(args.wait_quiet_secs)).await
    {
        eprintln!(
            "         (machine still busy after {} s; measuring anyway)",
            args.wait_quiet_secs
        );
    }
}

/// Summarises a phase and logs it (and its first error) on stderr.
fn log_phase(name: &str, concurrency: &str, phase: &mut Phase) -> Summary {
    let s = phase.summarise();
    eprintln!(
        "{name:>16} c={concurrency:<6} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>8.3} ms  ok {:>7}  errors {}  cores {} (server/client/writer {}){}",
        s.rps,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.ok,
        s.errors,
        cores(&s),
        threads(&s),
        phase
            .max_lag_us
            .map(|l| format!("  max dispatch lag {:.3} ms", f64::from(l) / 1000.0))
            .unwrap_or_default(),
    );
    if let Some(e) = &phase.first_error {
        eprintln!("         first error: {e}");
    }
    s
}

/// What one verifyd phase sends.
struct Leg<'a> {
    name: &'static str,
    workers: &'a Workers,
    feed: Feed,
    check: Check,
    /// Go round the pool until the time is up (else: send each request once).
    cycle: bool,
    /// Stop only when the pool is used up (else: after `--duration-secs`).
    whole_pool: bool,
}

/// The ceiling's side of the pairing.
struct CeilingLeg<'a> {
    workers: &'a Workers,
    feed: Feed,
}

/// Runs `leg` in slices, each followed by a ceiling slice of the same length when
/// `ceiling` is given. Returns both phases, summarised and logged.
async fn paired(
    args: &Args,
    label: &str,
    leg: Leg<'_>,
    ceiling: Option<&CeilingLeg<'_>>,
) -> anyhow::Result<Paired> {
    settle(args).await;
    let slice = Duration::from_millis(args.slice_ms.max(10));
    let total = Duration::from_secs(args.duration_secs.max(1));
    let mut verifyd = Phase::default();
    let mut ceil = Phase::default();
    loop {
        let stop = if leg.cycle {
            Stop::Cycle(slice)
        } else {
            Stop::PoolOrTime(slice)
        };
        verifyd.absorb(measured(closed_loop(leg.workers, &leg.feed, stop, leg.check)).await?);
        if let Some(c) = ceiling {
            ceil.absorb(
                measured(closed_loop(
                    c.workers,
                    &c.feed,
                    Stop::Cycle(slice),
                    Check::Ok,
                ))
                .await?,
            );
        }
        if verifyd.pool_done {
            if !leg.whole_pool {
                eprintln!(
                    "         {} c={label}: pre-signed pool used up before {} s; raise --max-start-rps",
                    leg.name, args.duration_secs
                );
            }
            break;
        }
        if !leg.whole_pool && verifyd.elapsed >= total {
            break;
        }
    }
    let verifyd = log_phase(leg.name, label, &mut verifyd);
    let ceiling = ceiling.map(|_| log_phase(&format!("ceiling|{}", leg.name), label, &mut ceil));
    Ok(Paired {
        verifyd: Some(verifyd),
        ceiling,
    })
}

/// All phases.
async fn run(args: &Args, servers: &Servers) -> anyhow::Result<(Vec<Level>, Option<FixedRate>)> {
    let signer = Signer::new(&servers.credentials.key, &servers.credentials.secret)?;
    let bases: Vec<String> = servers
        .verifyd
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    let verifyd = bases[0].clone();
    let ceiling = format!("http://{}", servers.ceiling);
    let verifyd_warm: Uri = format!("{verifyd}/healthz").parse()?;
    let ceiling_warm: Uri = format!("{ceiling}/healthz").parse()?;
    let wanted = |p: PhaseName| args.phases.contains(&p);
    let mut numbers = Numbers::new(args.numbers);
    let mut levels = Vec::new();

    for &c in &args.concurrency {
        let label = c.to_string();
        let v_workers = Workers::open(&verifyd_warm, c).await?;
        let c_workers = Workers::open(&ceiling_warm, c).await?;
        let ceiling_leg = CeilingLeg {
            workers: &c_workers,
            feed: Feed::new(ceiling_pool(&signer, &ceiling)?),
        };
        let pair_with = wanted(PhaseName::Ceiling).then_some(&ceiling_leg);
        let mut level = Level {
            concurrency: c,
            start: Paired::default(),
            report: Paired::default(),
            status: Paired::default(),
            ceiling_only: None,
        };

        if wanted(PhaseName::Start) {
            let n = usize::try_from(args.max_start_rps * args.duration_secs.max(1))?;
            let leg = Leg {
                name: "start",
                workers: &v_workers,
                feed: Feed::new(start_pool(&signer, &bases, &mut numbers, n)?),
                check: Check::Ok,
                cycle: false,
                whole_pool: false,
            };
            level.start = paired(args, &label, leg, pair_with).await?;
        }

        let started = level.start.verifyd.map_or(0, |s| s.ok);
        if wanted(PhaseName::Report) && started > 0 {
            let (reports, ids) = report_pool(&signer, &bases, servers, started)?;
            let leg = Leg {
                name: "report",
                workers: &v_workers,
                feed: Feed::new(reports),
                check: Check::Contains(b"\"SUCCESSFUL\""),
                cycle: false,
                whole_pool: true,
            };
            level.report = paired(args, &label, leg, pair_with).await?;

            if wanted(PhaseName::Status) {
                let leg = Leg {
                    name: "status",
                    workers: &v_workers,
                    feed: Feed::new(status_pool(&signer, &bases, &ids)?),
                    check: Check::Contains(b"\"SUCCESSFUL\""),
                    cycle: true,
                    whole_pool: false,
                };
                level.status = paired(args, &label, leg, pair_with).await?;
            }
        }

        if !wanted(PhaseName::Start) && wanted(PhaseName::Ceiling) {
            settle(args).await;
            let mut alone = measured(closed_loop(
                &c_workers,
                &ceiling_leg.feed,
                Stop::Cycle(Duration::from_secs(args.duration_secs.max(1))),
                Check::Ok,
            ))
            .await?;
            level.ceiling_only = Some(log_phase("ceiling", &label, &mut alone));
        }
        levels.push(level);
    }

    let fixed = if args.rate > 0 {
        settle(args).await;
        let n = usize::try_from(u64::from(args.rate) * args.rate_secs.max(1))?;
        let label = format!("{}/s", args.rate);
        let pool = Arc::new(start_pool(&signer, &bases, &mut numbers, n)?);
        let mut start = measured(open_loop(&verifyd_warm, pool, args.rate, Check::Ok)).await?;
        let start_s = log_phase("start", &label, &mut start);
        let (reports, _) = report_pool(&signer, &bases, servers, start.ok)?;
        let mut report = measured(open_loop(
            &verifyd_warm,
            Arc::new(reports),
            args.rate,
            Check::Contains(b"\"SUCCESSFUL\""),
        ))
        .await?;
        let report_s = log_phase("report", &label, &mut report);
        Some(FixedRate {
            rate: args.rate,
            start: start_s,
            report: report_s,
        })
    } else {
        None
    };
    Ok((levels, fixed))
}

/// Cores used during a phase: the bench process / everything else on the machine.
fn cores(s: &Summary) -> String {
    s.cpu
        .map_or_else(|| "-".into(), |u| format!("{:.2} / {:.2}", u.own, u.other))
}

/// Cores used during a phase by the server runtime, the load generator and the writer.
fn threads(s: &Summary) -> String {
    s.cpu.map_or_else(
        || "-".into(),
        |u| {
            format!(
                "{:.2} / {:.2} / {:.2}",
                u.groups[0], u.groups[1], u.groups[2]
            )
        },
    )
}

fn pct(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.0}%", 100.0 * part / whole)
    } else {
        "-".into()
    }
}

/// One row of the closed-loop table.
fn row(out: &mut String, concurrency: usize, name: &str, s: &Summary, vs: Option<&Summary>) {
    let _ = writeln!(
        out,
        "| {concurrency} | {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
        s.rps,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.ok + s.errors,
        s.errors,
        vs.map_or_else(|| "-".into(), |c| pct(s.rps, c.rps)),
        cores(s),
        threads(s),
    );
}

/// The markdown report.
fn render(args: &Args, levels: &[Level], fixed: Option<&FixedRate>) -> String {
    let mut out = String::new();
    let runtime = if args.shared_runtime {
        format!("one shared runtime, {} worker threads", args.server_threads)
    } else {
        format!(
            "server runtime {} worker threads, load generator runtime {} worker threads",
            args.server_threads, args.client_threads
        )
    };
    let _ = writeln!(
        out,
        "\nverifyd-bench: store {}, sync={:?}, {} s per phase in {} ms slices alternating with the ceiling, {runtime}\n",
        match &args.postgres {
            Some(_) => format!("PostgreSQL ({} node(s))", args.nodes.max(1)),
            None => "SQLite".to_string(),
        },
        args.sync,
        args.duration_secs,
        args.slice_ms
    );
    let _ = writeln!(
        out,
        "### Closed loop (one keep-alive connection per worker)\n"
    );
    let _ = writeln!(
        out,
        "| concurrency | phase | req/s | p50 ms | p99 ms | max ms | requests | errors | vs ceiling | cores bench / other | cores server / client / writer |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for l in levels {
        for (name, p) in [
            ("start", &l.start),
            ("report", &l.report),
            ("status", &l.status),
        ] {
            if let Some(v) = &p.verifyd {
                row(&mut out, l.concurrency, name, v, p.ceiling.as_ref());
            }
            if let Some(c) = &p.ceiling {
                row(
                    &mut out,
                    l.concurrency,
                    &format!("ceiling, between {name} slices"),
                    c,
                    None,
                );
            }
        }
        if let Some(c) = &l.ceiling_only {
            row(&mut out, l.concurrency, "ceiling", c, None);
        }
    }
    let _ = writeln!(
        out,
        "\n### Ratio to the ceiling (target: start and report >= 30%)\n"
    );
    let _ = writeln!(
        out,
        "| concurrency | start req/s | ceiling req/s | start/ceiling | report req/s | ceiling req/s | report/ceiling | status req/s | ceiling req/s | status/ceiling |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cell = |p: &Paired| match (&p.verifyd, &p.ceiling) {
        (Some(v), Some(c)) => format!("{:.0} | {:.0} | {}", v.rps, c.rps, pct(v.rps, c.rps)),
        (Some(v), None) => format!("{:.0} | - | -", v.rps),
        _ => "- | - | -".into(),
    };
    for l in levels {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            l.concurrency,
            cell(&l.start),
            cell(&l.report),
            cell(&l.status),
        );
    }
    if let Some(f) = fixed {
        let _ = writeln!(
            out,
            "\n### Open loop at {} requests/s (target: p99 < 10 ms)\n",
            f.rate
        );
        let _ = writeln!(
            out,
            "| phase | achieved req/s | p50 ms | p99 ms | max ms | requests | errors | p99 < 10 ms | cores bench / other | cores server / client / writer |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|");
        for (name, s) in [("start", &f.start), ("report", &f.report)] {
            let _ = writeln!(
                out,
                "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
                s.rps,
                s.p50_ms,
                s.p99_ms,
                s.max_ms,
                s.ok + s.errors,
                s.errors,
                if s.p99_ms < 10.0 && s.errors == 0 {
                    "yes"
                } else {
                    "no"
                },
                cores(s),
                threads(s),
            );
        }
    }
    out
}
