//! Logging. Filter with `RUST_LOG` (default `info`). Log lines never carry codes, secrets or
//! whole phone numbers: the code paths log ids and masked numbers only.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (text or JSON lines on stderr). Safe to call twice; the
/// second call does nothing.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
