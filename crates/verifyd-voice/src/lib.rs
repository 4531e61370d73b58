//! Voice verification over a SIP trunk: flash calls and spoken-code callouts.
//!
//! [`SipChannel`] implements [`verifyd_channels::Channel`] for [`Payload::FlashCall`] and
//! [`Payload::Callout`]. It is a SIP user agent (RFC 3261, `rsipstack`) that sends every
//! INVITE to one trunk ([`SipTrunkConfig::proxy`]), over UDP, TCP or TLS, with digest
//! authentication when the trunk challenges. `send` returns once the call attempt is over:
//! a few seconds for a flash call, the ring time plus the announcement for a callout.
//!
//! # Flash call
//! `INVITE sip:+<number>@<trunk>` with `From: <sip:+<cli>@<from_domain>>` (the CLI carries
//! the code) and, when [`SipTrunkConfig::privacy`] is on, `P-Asserted-Identity` with the
//! same URI and `Privacy: none`. An SDP offer goes with it (many trunks refuse INVITEs
//! without one). On the first `180 Ringing` or `183 Session Progress` the INVITE is
//! cancelled (the same branch, RFC 3261 §9.1); the far end answers `200` to the CANCEL and
//! `487` to the INVITE, which is ACKed. If no ringing comes within the payload's
//! `dial_timeout`, the INVITE is cancelled as well and the outcome is "no answer".
//! A `200 OK` that crosses the CANCEL (the phone was picked up) is ACKed and hung up with a
//! BYE at once, and reported as answered and billed.
//!
//! # Callout
//! An INVITE offering PCMU and PCMA (`sendrecv`, `ptime` 20, plus `telephone-event`). When
//! it is answered within [`SipTrunkConfig::dial_timeout`], the channel ACKs, reads the far
//! end's RTP address and codec from the answer, and streams 20 ms G.711 packets from the
//! port it offered: [`SipTrunkConfig::leading_silence`], then "your code is" and the digits
//! ([`SipTrunkConfig::repeats`] times), then a short silence and a BYE. The digits come from
//! recorded prompts ([`SipTrunkConfig::prompts_dir`]) for their language and from espeak-ng
//! for other locales (see [`PromptError`]). The code is never logged, never passed to a
//! process and never put in a SIP message. [`Payload::Callout::script`] is not used: the
//! spoken form is built from the clips.
//!
//! # Outcomes
//! | what happened | `send` returns |
//! |---|---|
//! | flash call rang and was cancelled | `Ok`: `CallInfo { result: Cancel, complete: true, billable_duration: 0 }`, `delivered: true` |
//! | flash call answered (without ringing, or across the CANCEL) and hung up at once | `Ok`: `result: Answered`, `billable_duration` ≥ 1, `delivered: true` |
//! | callout answered, announcement played to the end | `Ok`: `result: Completed`, `billable_duration` = answered seconds rounded up, `delivered: true` |
//! | callout answered, the callee hung up before the end | `Ok`: `result: Answered`, `billable_duration` as above, `delivered: false` |
//! | `486`, `600`, `603` | `Err(SendError::Permanent)`, reason `busy (486 Busy Here)` |
//! | no 180/183 (flash) or no answer (callout) within the dial timeout, so cancelled; a callout answered only across that CANCEL; `408`, `480` | `Err(SendError::Permanent)`, reason starting `no answer` |
//! | any other 3xx–6xx, no response at all from the trunk, an unusable SDP answer, a bad payload, socket or stack errors | `Err(SendError::Permanent)`, reason starting `failed` |
//! | TLS trunk: the connection cannot be opened (a certificate that does not verify, a failed handshake, nothing listening; 10 s at most) | `Err(SendError::Permanent)`, `failed (TLS connection: <reason>)`, before any INVITE |
//!
//! A flash call that rang counts as delivered whatever final response follows (a reject
//! racing the CANCEL included): the call is in the handset's log.
//!
//! [`Delivery::message_id`] is the call's Call-ID in every `Ok`. Reasons carry SIP status
//! lines and durations, never numbers or codes.
//!
//! # Limits
//! At most [`SipTrunkConfig::max_concurrent_calls`] calls at once (later sends wait for a
//! slot) and at most [`SipTrunkConfig::calls_per_second`] new INVITEs per second (evenly
//! spaced).
//!
//! # Logs
//! This crate logs the channel name, Call-IDs, masked numbers and SIP statuses, never a code.
//! `rsipstack` may log SIP URIs (phone numbers included) at `debug` and `trace`: keep
//! `rsipstack=info` or quieter in production.
//!
//! # Layout
//! - this module: [`SipTrunkConfig`], [`SipChannel`] and the outcome mapping.
//! - `ua`: the SIP endpoint and the two call flows.
//! - `sdp`: the offer and reading the answer.
//! - `rtp`: the paced G.711 sender.
//! - `prompt`: prompt clips and espeak-ng.
//! - [`g711`], [`wav`]: codecs and WAV reading, public for tests that check what was heard.

mod digest;
pub mod g711;
mod prompt;
mod rtp;
mod sdp;
mod ua;
pub mod wav;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use verifyd_channels::{Channel, Delivery, OutboundMessage, Payload, SendError};
use verifyd_core::{CallInfo, CallResult};

pub use prompt::PromptError;

use prompt::{Layout, Prompts};
use ua::{Outcome, Ua};
use verifyd_channels::pacer::Pacer;

/// The Debian package with the default prompts.
pub const DEFAULT_PROMPTS_DIR: &str = "/usr/share/asterisk/sounds/en_US_f_Allison";

/// How SIP messages reach the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SipTransport {
    /// UDP from the bound port (the default).
    #[default]
    Udp,
    /// A TCP connection opened on the first call and reused.
    Tcp,
    /// SIP over TLS (RFC 3261 §26.2, port 5061 when [`SipTrunkConfig::proxy`] has none): a
    /// TLS connection opened on the first call and reused. URIs stay `sip:` and a preloaded
    /// Route carries `;transport=tls`, as carrier trunks expect (`sips:` would demand TLS on
    /// every hop to the handset, which no PSTN trunk gives).
    ///
    /// The trunk's certificate is always verified: against [`SipTrunkConfig::tls_ca_file`],
    /// or the system's CA bundle when that is `None`, for the name in
    /// [`SipTrunkConfig::tls_server_name`] (default: the host of
    /// [`SipTrunkConfig::proxy`], an IP address included). A certificate that does not
    /// verify fails the call; nothing falls back to plaintext.
    ///
    /// There is no TLS listener: requests the trunk starts inside a dialog (a callee's BYE)
    /// reach the Contact address over UDP unless the trunk sends them on the open
    /// connection.
    Tls,
}

/// Where the system CA bundle is looked for when [`SipTrunkConfig::tls_ca_file`] is `None`
/// (Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine).
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// One SIP trunk. Build with [`SipTrunkConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct SipTrunkConfig {
    /// Channel name for logs and metrics (`sip:carrier`).
    pub name: String,
    /// Where INVITEs go: `host:port` of the trunk's SBC or proxy (port 5060 when omitted).
    /// Resolved on every call.
    pub proxy: String,
    /// UDP (default), TCP or TLS.
    pub transport: SipTransport,
    /// TLS only: the CA certificates (PEM file) the trunk's certificate must chain to, for
    /// a trunk with a private CA. `None` (default): the system CA bundle.
    pub tls_ca_file: Option<PathBuf>,
    /// TLS only: the name sent as SNI and checked against the trunk's certificate. `None`
    /// (default): the host of [`Self::proxy`].
    pub tls_server_name: Option<String>,
    /// TLS only: our client certificate chain (PEM) for trunks that demand mutual TLS;
    /// goes with [`Self::tls_client_key`]. Default `None`.
    pub tls_client_cert: Option<PathBuf>,
    /// TLS only: the private key (PEM, PKCS#8 or PKCS#1) of [`Self::tls_client_cert`].
    /// Never logged.
    pub tls_client_key: Option<PathBuf>,
    /// The host in the Request-URI and To (`sip:+<number>@<host>`); default: [`Self::proxy`].
    /// When it differs from [`Self::proxy`], the proxy is an outbound proxy: the INVITE
    /// carries a preloaded `Route: <sip:<proxy address>;lr>` (RFC 3261 §8.1.2), which is
    /// also what sends the CANCEL to the proxy.
    pub request_uri_host: Option<String>,
    /// Local SIP address to bind. Default `0.0.0.0:5060`, where Via and Contact carry the
    /// host's first non-loopback IPv4 address unless [`Self::advertised`] is set. Tests use
    /// `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// The address to put in Via and Contact when [`Self::bind`] is a wildcard or behind
    /// NAT. Default `None`: the bound address.
    pub advertised: Option<SocketAddr>,
    /// The domain of our From URIs (`sip:+<cli>@<from_domain>`).
    pub from_domain: String,
    /// Digest user for 401/407 challenges; `None` (default): no authentication.
    pub auth_user: Option<String>,
    /// Digest password. Never logged.
    pub auth_password: Option<String>,
    /// Most calls in progress at once; later sends wait. Default 10; at least 1.
    pub max_concurrent_calls: usize,
    /// Most new INVITEs per second, evenly spaced; `None` for no cap. Default `Some(5)`.
    pub calls_per_second: Option<u32>,
    /// Send the caller's number as `P-Asserted-Identity` with `Privacy: none` (RFC 3325,
    /// RFC 3323), as trusted trunks expect; `false` for trunks that reject these headers
    /// from us, leaving only `From`. Default `true`.
    pub privacy: bool,
    /// How long a callout may ring before it is cancelled, and the flash-call ring limit
    /// when the payload's `dial_timeout` is 0. Default 30 s.
    pub dial_timeout: Duration,
    /// The number callouts come from (E.164, `+` optional); [`OutboundMessage::sender`]
    /// overrides it. `None` (default): `From: <sip:anonymous@<from_domain>>`, no PAI.
    pub callout_cli: Option<String>,
    /// The address RTP is sent from and offered in SDP (`c=`). Default `127.0.0.1`, which
    /// only works with a trunk on the same host: set the host's address. With a loopback
    /// address the channel refuses answers whose media address is not loopback.
    pub media_ip: IpAddr,
    /// Recorded prompts: `digits/0.wav` … `digits/9.wav` (8 kHz or any rate, 16-bit PCM) and
    /// optionally `your-code-is.wav`. Default [`DEFAULT_PROMPTS_DIR`]; `None`: espeak-ng
    /// for every locale.
    pub prompts_dir: Option<PathBuf>,
    /// The language of [`Self::prompts_dir`] (`en`); other locales use espeak-ng.
    pub prompts_locale: String,
    /// The espeak-ng executable. Default `espeak-ng` (on `PATH`).
    pub espeak: PathBuf,
    /// Silence before the first word. Default 1 s (far ends swallow the first ~100 ms).
    pub leading_silence: Duration,
    /// How many times the code is said. Default 2.
    pub repeats: u32,
    /// Silence between words. Default 200 ms.
    pub digit_gap: Duration,
    /// Silence between repetitions. Default 700 ms.
    pub repeat_gap: Duration,
    /// After the CANCEL, how long to wait for the INVITE's final response (`487`, or a
    /// crossing `200`) before giving the attempt up. Default 4 s.
    pub cancel_grace: Duration,
}

impl SipTrunkConfig {
    /// A configuration with the documented defaults.
    pub fn new(
        name: impl Into<String>,
        proxy: impl Into<String>,
        from_domain: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            proxy: proxy.into(),
            transport: SipTransport::Udp,
            tls_ca_file: None,
            tls_server_name: None,
            tls_client_cert: None,
            tls_client_key: None,
            request_uri_host: None,
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5060)),
            advertised: None,
            from_domain: from_domain.into(),
            auth_user: None,
            auth_password: None,
            max_concurrent_calls: 10,
            calls_per_second: Some(5),
            privacy: true,
            dial_timeout: Duration::from_secs(30),
            callout_cli: None,
            media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            prompts_dir: Some(PathBuf::from(DEFAULT_PROMPTS_DIR)),
            prompts_locale: "en".into(),
            espeak: PathBuf::from("espeak-ng"),
            leading_silence: Duration::from_secs(1),
            repeats: 2,
            digit_gap: Duration::from_millis(200),
            repeat_gap: Duration::from_millis(700),
            cancel_grace: Duration::from_secs(4),
        }
    }

    fn layout(&self) -> Layout {
        Layout {
            leading: self.leading_silence,
            digit_gap: self.digit_gap,
            repeat_gap: self.repeat_gap,
            trailing: Duration::from_millis(400),
            repeats: self.repeats,
        }
    }
}

impl fmt::Debug for SipTrunkConfig {
    /// Redacts the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipTrunkConfig")
            .field("name", &self.name)
            .field("proxy", &self.proxy)
            .field("transport", &self.transport)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .field("request_uri_host", &self.request_uri_host)
            .field("bind", &self.bind)
            .field("advertised", &self.advertised)
            .field("from_domain", &self.from_domain)
            .field("auth_user", &self.auth_user)
            .field(
                "auth_password",
                &self.auth_password.as_ref().map(|_| "<redacted>"),
            )
            .field("max_concurrent_calls", &self.max_concurrent_calls)
            .field("calls_per_second", &self.calls_per_second)
            .field("privacy", &self.privacy)
            .field("dial_timeout", &self.dial_timeout)
            .field("callout_cli", &self.callout_cli)
            .field("media_ip", &self.media_ip)
            .field("prompts_dir", &self.prompts_dir)
            .field("prompts_locale", &self.prompts_locale)
            .field("espeak", &self.espeak)
            .field("leading_silence", &self.leading_silence)
            .field("repeats", &self.repeats)
            .field("digit_gap", &self.digit_gap)
            .field("repeat_gap", &self.repeat_gap)
            .field("cancel_grace", &self.cancel_grace)
            .finish()
    }
}

/// Why a [`SipChannel`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum SipConfigError {
    /// A setting is out of range.
    #[error("invalid SIP trunk setting: {0}")]
    Setting(&'static str),
    /// The SIP socket could not be bound or the stack could not start.
    #[error("SIP stack: {0}")]
    Stack(String),
    /// A TLS file (CA bundle, client certificate or key) could not be read or holds no PEM
    /// of the right kind.
    #[error("SIP TLS: {0}")]
    Tls(String),
    /// The prompts could not be loaded.
    #[error(transparent)]
    Prompts(#[from] PromptError),
}

/// The TLS material of a trunk, read at start.
pub(crate) struct TlsFiles {
    /// PEM CA certificates.
    pub(crate) ca_certs: Vec<u8>,
    /// PEM client certificate chain and key.
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
    /// SNI and certificate identity.
    pub(crate) server_name: String,
}

impl TlsFiles {
    /// Reads the files named in `config` (for [`SipTransport::Tls`]).
    async fn load(config: &SipTrunkConfig) -> Result<Self, SipConfigError> {
        async fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, SipConfigError> {
            tokio::fs::read(path).await.map_err(|e| {
                SipConfigError::Tls(format!("cannot read the {what} {}: {e}", path.display()))
            })
        }
        fn has_pem(data: &[u8], label: &str) -> bool {
            let marker = format!("-----BEGIN {label}-----");
            data.windows(marker.len()).any(|w| w == marker.as_bytes())
        }
        let ca_path = match &config.tls_ca_file {
            Some(path) => path.clone(),
            None => SYSTEM_CA_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    SipConfigError::Tls("no system CA bundle found; set tls_ca_file".to_string())
                })?,
        };
        let ca_certs = read(&ca_path, "CA file").await?;
        if !has_pem(&ca_certs, "CERTIFICATE") {
            return Err(SipConfigError::Tls(format!(
                "no PEM certificate in the CA file {}",
                ca_path.display()
            )));
        }
        let client = match (&config.tls_client_cert, &config.tls_client_key) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read(cert_path, "client certificate").await?;
                if !has_pem(&cert, "CERTIFICATE") {
                    return Err(SipConfigError::Tls(format!(
                        "no PEM certificate in {}",
                        cert_path.display()
                    )));
                }
                let key = read(key_path, "client key").await?;
                if !has_pem(&key, "PRIVATE KEY") && !has_pem(&key, "RSA PRIVATE KEY") {
                    return Err(SipConfigError::Tls(format!(
                        "no PEM PKCS#8 or PKCS#1 private key in {}",
                        key_path.display()
                    )));
                }
                Some((cert, key))
            }
            (None, None) => None,
            _ => {
                return Err(SipConfigError::Setting(
                    "tls_client_cert and tls_client_key go together",
                ));
            }
        };
        let server_name = match &config.tls_server_name {
            Some(name) => name.clone(),
            None => proxy_host(&config.proxy).to_string(),
        };
        Ok(Self {
            ca_certs,
            client,
            server_name,
        })
    }
}

/// The host of a `host`, `host:port`, `[v6]` or `[v6]:port` proxy address.
fn proxy_host(proxy: &str) -> &str {
    let proxy = proxy.trim();
    if let Some(rest) = proxy.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match proxy.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, _)) if !host.contains(':') => host,
        _ => proxy,
    }
}

/// The voice channel: one SIP user agent in front of one trunk.
///
/// Cheap to share behind an `Arc`; dropping it stops the SIP endpoint.
pub struct SipChannel {
    config: SipTrunkConfig,
    ua: Ua,
    prompts: Prompts,
    /// Call slots ([`SipTrunkConfig::max_concurrent_calls`]).
    slots: Semaphore,
    pacer: Pacer,
}

impl fmt::Debug for SipChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipChannel")
            .field("name", &self.config.name)
            .field("local", &self.ua.local_addr())
            .finish_non_exhaustive()
    }
}

impl SipChannel {
    /// Validates `config`, binds the SIP socket, starts the endpoint and loads the prompts.
    ///
    /// # Errors
    /// [`SipConfigError`] for a bad setting, a socket that cannot be bound, or prompts that
    /// cannot be read.
    pub async fn start(config: SipTrunkConfig) -> Result<Self, SipConfigError> {
        if config.max_concurrent_calls == 0 {
            return Err(SipConfigError::Setting(
                "max_concurrent_calls must be at least 1",
            ));
        }
        if config.proxy.trim().is_empty() || config.from_domain.trim().is_empty() {
            return Err(SipConfigError::Setting(
                "proxy and from_domain are required",
            ));
        }
        if config.dial_timeout.is_zero() {
            return Err(SipConfigError::Setting("dial_timeout must be positive"));
        }
        if config.auth_user.is_some() != config.auth_password.is_some() {
            return Err(SipConfigError::Setting(
                "auth_user and auth_password go together",
            ));
        }
        let tls = match config.transport {
            SipTransport::Tls => Some(TlsFiles::load(&config).await?),
            SipTransport::Udp | SipTransport::Tcp => {
                if config.tls_ca_file.is_some()
                    || config.tls_server_name.is_some()
                    || config.tls_client_cert.is_some()
                    || config.tls_client_key.is_some()
                {
                    return Err(SipConfigError::Setting(
                        "tls_* settings need the TLS transport",
                    ));
                }
                None
            }
        };
        let prompts = Prompts::load(
            config.prompts_dir.as_deref(),
            &config.prompts_locale,
            config.espeak.clone(),
        )
        .await?;
        let ua = Ua::start(&config, tls).await?;
        tracing::info!(channel = %config.name, local = %ua.local_addr(), "SIP channel started");
        Ok(Self {
            slots: Semaphore::new(config.max_concurrent_calls),
            pacer: Pacer::new(config.calls_per_second),
            config,
            ua,
            prompts,
        })
    }

    /// The local SIP address (the bound one, or [`SipTrunkConfig::advertised`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.ua.local_addr()
    }

    /// Turns a call outcome into what [`Channel::send`] returns.
    fn deliver(call_id: String, outcome: Outcome) -> Result<Delivery, SendError> {
        let ok = |result, billable, delivered| {
            Ok(Delivery {
                message_id: Some(call_id.clone()),
                call: Some(CallInfo {
                    result: Some(result),
                    complete: true,
                    billable_duration: billable,
                    termination_price: None,
                }),
                delivered,
            })
        };
        match outcome {
            Outcome::Cancelled => ok(CallResult::Cancel, 0, true),
            Outcome::Answered { billable, heard } => ok(CallResult::Answered, billable, heard),
            Outcome::Completed { billable } => ok(CallResult::Completed, billable, true),
            Outcome::Busy(detail) => Err(SendError::Permanent {
                reason: format!("busy ({detail})"),
            }),
            Outcome::NoAnswer(detail) => Err(SendError::Permanent {
                reason: format!("no answer ({detail})"),
            }),
            Outcome::Failed(detail) => Err(SendError::Permanent {
                reason: format!("failed ({detail})"),
            }),
        }
    }
}

/// `+` and the digits of a number as written by a user or a route (`+46 70-123` → `+4670123`);
/// `None` when there are no digits.
fn e164(number: &str) -> Option<String> {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    (!digits.is_empty()).then(|| format!("+{digits}"))
}

#[async_trait]
impl Channel for SipChannel {
    fn name(&self) -> &str {
        &self.config.name
    }

    #[tracing::instrument(skip_all, fields(channel = %self.config.name, to = %message.to.masked()))]
    async fn send(&self, message: &OutboundMessage) -> Result<Delivery, SendError> {
        let failed = |reason: &str| {
            Err(SendError::Permanent {
                reason: format!("failed ({reason})"),
            })
        };
        // Checked before taking a slot, so a bad payload never waits.
        let plan = match &message.payload {
            Payload::FlashCall { cli, dial_timeout } => {
                let Some(cli) = e164(cli) else {
                    return failed("the flash-call CLI has no digits");
                };
                let ring = match dial_timeout {
                    0 => self.config.dial_timeout,
                    s => Duration::from_secs(u64::from(*s)),
                };
                ua::Plan::Flash { cli, ring }
            }
            Payload::Callout { code, locale, .. } => {
                if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
                    return failed("a callout code must be digits");
                }
                let prompts = match self.prompts.for_locale(locale).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, %locale, "no prompts for the callout");
                        return failed("no prompts for the locale");
                    }
                };
                let caller = message
                    .sender
                    .as_deref()
                    .or(self.config.callout_cli.as_deref())
                    .and_then(e164);
                ua::Plan::Callout {
                    caller,
                    audio: prompts.announce(code, &self.config.layout()),
                    ring: self.config.dial_timeout,
                }
            }
            Payload::Text { .. } | Payload::Seamless { .. } => {
                return failed("the SIP channel only places flash calls and callouts");
            }
        };
        let Ok(_slot) = self.slots.acquire().await else {
            return failed("the channel is shutting down");
        };
        self.pacer.wait().await;
        let call_id = self.ua.new_call_id(&self.config.from_domain);
        let outcome = self
            .ua
            .call(&self.config, message.to.as_str(), &call_id, plan)
            .await;
        tracing::info!(%call_id, outcome = outcome.label(), "call finished");
        Self::deliver(call_id, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tls_settings_are_checked_at_start() {
        let base = || {
            let mut c = SipTrunkConfig::new("sip:t", "127.0.0.1:5061", "verify.example");
            c.bind = "127.0.0.1:0".parse().unwrap();
            c.prompts_dir = None;
            c
        };
        let mut udp_with_ca = base();
        udp_with_ca.tls_ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            SipChannel::start(udp_with_ca).await,
            Err(SipConfigError::Setting(_))
        ));

        let mut missing_ca = base();
        missing_ca.transport = SipTransport::Tls;
        missing_ca.tls_ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            SipChannel::start(missing_ca).await,
            Err(SipConfigError::Tls(m)) if m.contains("cannot read the CA file")
        ));

        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let mut bad_ca = base();
        bad_ca.transport = SipTransport::Tls;
        bad_ca.tls_ca_file = Some(not_pem);
        assert!(matches!(
            SipChannel::start(bad_ca).await,
            Err(SipConfigError::Tls(m)) if m.contains("no PEM certificate")
        ));

        let mut half_client = base();
        half_client.transport = SipTransport::Tls;
        half_client.tls_client_cert = Some("/nonexistent/client.pem".into());
        assert!(matches!(
            SipChannel::start(half_client).await,
            Err(SipConfigError::Setting(_))
        ));
    }

    #[test]
    fn the_proxy_host_is_the_tls_server_name() {
        assert_eq!(
            proxy_host("sbc.carrier.example:5061"),
            "sbc.carrier.example"
        );
        assert_eq!(proxy_host("sbc.carrier.example"), "sbc.carrier.example");
        assert_eq!(proxy_host("127.0.0.1:5061"), "127.0.0.1");
        assert_eq!(proxy_host("[::1]:5061"), "::1");
        assert_eq!(proxy_host("::1"), "::1");
    }

    #[test]
    fn numbers_are_reduced_to_plus_and_digits() {
        assert_eq!(e164("+46 70-123").as_deref(), Some("+4670123"));
        assert_eq!(e164("4930123").as_deref(), Some("+4930123"));
        assert_eq!(e164("Verify"), None);
    }

    #[test]
    fn outcomes_map_to_deliveries_and_reason_prefixes() {
        let d = SipChannel::deliver("c1".into(), Outcome::Cancelled).unwrap();
        assert_eq!(d.message_id.as_deref(), Some("c1"));
        let call = d.call.unwrap();
        assert_eq!(call.result, Some(CallResult::Cancel));
        assert!(call.complete);
        assert_eq!(call.billable_duration, 0);

        let d = SipChannel::deliver("c2".into(), Outcome::Completed { billable: 14 }).unwrap();
        assert_eq!(d.call.unwrap().billable_duration, 14);

        let reason = |o| match SipChannel::deliver("c".into(), o) {
            Err(SendError::Permanent { reason }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(Outcome::Busy("486 Busy Here".into())),
            "busy (486 Busy Here)"
        );
        assert!(reason(Outcome::NoAnswer("x".into())).starts_with("no answer"));
        assert!(reason(Outcome::Failed("x".into())).starts_with("failed"));
    }
}
