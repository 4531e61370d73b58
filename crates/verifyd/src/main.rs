//! `verifyd`: the thin binary. It parses the command line and calls `verifyd-server`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::SeedableRng;
use rand::rngs::StdRng;
use verifyd_server::app::{new_application, open_store};
use verifyd_server::{App, Config, telemetry};
use verifyd_store::{EventState, MinAuth};

#[derive(Parser)]
#[command(
    name = "verifyd",
    version,
    about = "Phone-number verification server (Sinch Verification API v1)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (defaults: 127.0.0.1:8080, ./verifyd.db, dev inbox).
    Serve {
        /// TOML configuration file (see `verifyd config default`).
        #[arg(long, env = "VERIFYD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate {
        /// TOML configuration file.
        #[arg(long, env = "VERIFYD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Manage applications.
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect and redeliver callback events (the outbox).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List events, oldest first.
    List {
        /// pending, delivered, dead or all.
        #[arg(long, default_value = "dead")]
        state: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// TOML configuration file.
        #[arg(long, env = "VERIFYD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Queue events for delivery again (a running server picks them up within its poll
    /// interval).
    Redeliver {
        /// Event ids.
        ids: Vec<i64>,
        /// Every dead event.
        #[arg(long)]
        all_dead: bool,
        /// TOML configuration file.
        #[arg(long, env = "VERIFYD_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AppsCommand {
    /// Create an application and print its key and secret.
    Create {
        /// Application name.
        #[arg(long)]
        name: String,
        /// Callback URL for verification events.
        #[arg(long)]
        callback_url: Option<String>,
        /// Weakest accepted auth: signed, basic or public.
        #[arg(long, default_value = "basic")]
        min_auth: String,
        /// Let the callback URL resolve to private / link-local addresses.
        #[arg(long)]
        allow_private_callbacks: bool,
        /// Allow starts when the request event gets no usable answer.
        #[arg(long)]
        callback_fail_open: bool,
        /// TOML configuration file (to find the database).
        #[arg(long, env = "VERIFYD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List applications (keys and names; never secrets).
    List {
        /// TOML configuration file.
        #[arg(long, env = "VERIFYD_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the documented default configuration.
    Default,
    /// Validate a configuration file and print the effective listen address and database.
    Check {
        /// TOML configuration file.
        #[arg(long, env = "VERIFYD_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// mimalloc: glibc malloc was about a tenth of the server's CPU in a start profile (its
/// free-list consolidation and aligned allocations for tasks); see BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("Failed to start the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Migrate { config } => {
            let settings = Config::load(config.as_deref())?.settings()?;
            telemetry::init(settings.json_logs);
            open_store(&settings, true).await?;
            println!("database schema is up to date");
            Ok(())
        }
        Command::Apps { command } => apps(command).await,
        Command::Events { command } => events(command).await,
        Command::Config { command } => match command {
            ConfigCommand::Default => {
                print!("{}", verifyd_server::config::DEFAULT_CONFIG);
                Ok(())
            }
            ConfigCommand::Check { config } => {
                let settings = Config::load(config.as_deref())?.settings()?;
                // The database URL may carry a password: show only its scheme.
                let scheme = settings.database_url.split("://").next().unwrap_or("?");
                println!(
                    "ok: listen {} public_url {} database {scheme}://… applications {}",
                    settings.listen,
                    settings.public_url,
                    settings.applications.len()
                );
                Ok(())
            }
        },
    }
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Config::load(config.as_deref())?.settings()?;
    telemetry::init(settings.json_logs);
    let listen = settings.listen;
    let app = App::build(settings).await?;
    if let Some(created) = app.ensure_an_application().await? {
        // Printed once, on stdout and not through the logger, so the secret never lands in
        // log storage.
        println!("verifyd: no application existed, so one was created:");
        println!("  name:   {}", created.name);
        println!("  key:    {}", created.key);
        println!("  secret: {}", created.secret);
        println!("Store the secret now; it is not shown again.");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("Failed to listen on {listen}"))?;
    app.serve(listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

async fn apps(command: AppsCommand) -> anyhow::Result<()> {
    match command {
        AppsCommand::Create {
            name,
            callback_url,
            min_auth,
            allow_private_callbacks,
            callback_fail_open,
            config,
        } => {
            let settings = Config::load(config.as_deref())?.settings()?;
            let min_auth = MinAuth::parse(&min_auth).with_context(|| {
                format!("--min-auth {min_auth:?}: expected signed, basic or public")
            })?;
            if let Some(url) = &callback_url {
                verifyd_server::config::check_callback_url(url)
                    .map_err(|e| anyhow::anyhow!("--callback-url: {e}"))?;
            }
            if min_auth == MinAuth::Public && callback_url.is_none() {
                anyhow::bail!("--min-auth public needs --callback-url");
            }
            let store = open_store(&settings, true).await?;
            let mut rng = StdRng::from_os_rng();
            let mut app = new_application(&name, &mut rng, verifyd_core_clock_now());
            app.callback_url = callback_url;
            app.min_auth = min_auth;
            app.allow_private_callbacks = allow_private_callbacks;
            app.callback_fail_open = callback_fail_open;
            store.insert_application(&app).await?;
            println!("name:   {}", app.name);
            println!("key:    {}", app.key);
            println!("secret: {}", app.secret);
            Ok(())
        }
        AppsCommand::List { config } => {
            let settings = Config::load(config.as_deref())?.settings()?;
            let store = open_store(&settings, true).await?;
            for app in store.list_applications().await? {
                println!(
                    "{}\t{}\tmin_auth={}\tcallback={}",
                    app.key,
                    app.name,
                    app.min_auth.as_str(),
                    app.callback_url.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
    }
}

async fn events(command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::List {
            state,
            limit,
            config,
        } => {
            let settings = Config::load(config.as_deref())?.settings()?;
            let filter = match state.as_str() {
                "all" => None,
                s => Some(EventState::parse(s).with_context(|| {
                    format!("--state {s:?}: expected pending, delivered, dead or all")
                })?),
            };
            let store = open_store(&settings, true).await?;
            for e in store.list_events(filter, limit).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\tattempts={}\t{}",
                    e.id,
                    e.state.as_str(),
                    e.kind.as_str(),
                    e.app,
                    e.verification_id,
                    e.attempts,
                    e.last_error.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        EventsCommand::Redeliver {
            mut ids,
            all_dead,
            config,
        } => {
            let settings = Config::load(config.as_deref())?.settings()?;
            let store = open_store(&settings, true).await?;
            if all_dead {
                ids.extend(
                    store
                        .list_events(Some(EventState::Dead), usize::MAX >> 1)
                        .await?
                        .into_iter()
                        .map(|e| e.id),
                );
            }
            if ids.is_empty() {
                anyhow::bail!("name event ids or pass --all-dead");
            }
            let now = verifyd_core_clock_now();
            for id in ids {
                if store.redeliver_event(id, now).await? {
                    println!("{id}\tqueued");
                } else {
                    println!("{id}\tnot found");
                }
            }
            Ok(())
        }
    }
}

/// The CLI's wall-clock reading, for `created_at` of applications it creates.
fn verifyd_core_clock_now() -> time::OffsetDateTime {
    use verifyd_server::SystemClock;
    verifyd_server::app::clock_now(&SystemClock)
}
