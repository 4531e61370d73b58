//! SMS over SMPP 3.4: verifyd as an ESME on one persistent `bind_transceiver` session.
//!
//! [`SmppChannel::connect`] validates an [`SmppConfig`] and starts a background session task;
//! it does not wait for the SMSC, so the channel can be built while the SMSC is down and starts
//! working once a bind succeeds. A send made while a session is being set up (connecting and
//! binding: just after start-up, or a reconnect) waits for it, at most
//! [`SmppConfig::response_timeout`], so the first messages after a start go out with the bind
//! rather than after the caller's retry back-off. Sends made while no session is up (between
//! reconnects) fail fast with [`SendError::Retryable`].
//!
//! # Session
//! - One TCP (or TLS, `smpps://`) connection, `bind_transceiver` with `interface_version`
//!   0x34, so delivery receipts arrive on the same connection. `TCP_NODELAY` is set:
//!   with Nagle's algorithm a pipelined `submit_sm` waits for the SMSC's delayed ACK (about
//!   40 ms on Linux), which caps the window at one or two in flight.
//! - `enquire_link` every [`SmppConfig::enquire_link_interval`]; an unanswered one (within
//!   [`SmppConfig::response_timeout`]) drops the connection. The SMSC's own `enquire_link`s
//!   are answered.
//! - When the connection drops, the SMSC unbinds, or a bind fails, the task reconnects after
//!   an exponential back-off from [`SmppConfig::reconnect_min`] doubling up to
//!   [`SmppConfig::reconnect_max`]; the back-off resets once a session has stayed up for
//!   `reconnect_max`, so a flapping SMSC is not hammered.
//! - A bind the SMSC rejects with a status (bad password, unknown system id) makes sends fail
//!   with [`SendError::Permanent`] until a later bind succeeds, so the caller can try the next
//!   route instead of queueing behind a misconfiguration.
//!
//! # Sending
//! - The sender is [`OutboundMessage::sender`] when the route sets one, else
//!   [`SmppConfig::source`]: alphanumeric ids go out with TON 5 / NPI 0, numbers with TON 1 /
//!   NPI 1; the destination is the E.164 number without `+`, TON 1 / NPI 1.
//! - Text only ([`Payload::Text`]); GSM 03.38 7-bit (`data_coding` 0, unpacked) when every
//!   character fits the default alphabet or its extension table, UCS-2 (`data_coding` 8)
//!   otherwise. Long texts are split with a concatenation UDH (`esm_class` 0x40): 153 septets
//!   or 67 UCS-2 characters per part, sent in order.
//! - At most [`SmppConfig::window`] `submit_sm` unanswered at once (a semaphore; a part is one
//!   `submit_sm`), and at most [`SmppConfig::tps`] per second (evenly spaced slots).
//! - `ESME_RTHROTTLED` / `ESME_RMSGQFUL`: the SMSC did not take the message, so the channel
//!   pauses *all* submits for [`SmppConfig::throttle_backoff`] (doubling per attempt) and
//!   retries up to [`SmppConfig::throttle_retries`] times, then answers
//!   [`SendError::Retryable`] with that delay as `retry_after`.
//! - Any other error status is [`SendError::Permanent`], except `ESME_RSYSERR` and
//!   `ESME_RINVBNDSTS` (the SMSC's own trouble, or a session race), which are
//!   [`SendError::Retryable`] without an internal retry.
//!
//! # At most once
//! The channel never resends a `submit_sm` whose outcome it does not know. When a `submit_sm`
//! was written and no `submit_sm_resp` came back (response timeout, connection lost), `send`
//! returns [`SendError::OutcomeUnknown`]: the SMSC may have accepted the message. The caller decides whether a possible duplicate is acceptable;
//! a late `submit_sm_resp` is logged with its message id. Reasons starting with `not sent`
//! mean the SMSC cannot have received the message. For a long text, a failure of part 2 or
//! later says so in the reason: resending resends the parts already accepted.
//!
//! # Receipts
//! Every `deliver_sm` is answered with `deliver_sm_resp`. Those whose `esm_class` message type
//! is "MC delivery receipt" (0x04) are parsed (text `id:… stat:… err:…` and/or the TLVs
//! `receipted_message_id` 0x001E and `message_state` 0x0427; TLVs win) and pushed to the
//! [`ReceiptSender`]: `DELIVRD` → [`ReceiptStatus::Delivered`](crate::ReceiptStatus::Delivered); `UNDELIV`, `EXPIRED`,
//! `REJECTD`, `DELETED`, `UNKNOWN` → [`ReceiptStatus::Failed`](crate::ReceiptStatus::Failed); `ACCEPTD`, `ENROUTE` are
//! intermediate and not reported. Ids are normalised the same way at send and receipt time;
//! see [`MessageIdFormat`] and the [`receipt`] module. For a long text, [`Delivery::message_id`]
//! is the first part's id; receipts for later parts carry their own ids and match nothing.
//!
//! Logs carry the channel name, statuses and sequence numbers; never message text, codes or
//! phone numbers.
//!
//! # Layout
//! - this module: configuration, [`SmppChannel`] and the send path.
//! - `session`: the background task (connect, bind, events, reconnect).
//! - `encoding`: GSM 7-bit / UCS-2 encoding and concatenation.
//! - [`receipt`]: receipt parsing and message-id normalisation.

mod encoding;
pub mod receipt;
mod session;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rusmpp::pdus::{BindTransceiver, SubmitSm, SubmitSmResp};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, InterfaceVersion, Npi, RegisteredDelivery, ServiceType, Ton,
};
use rusmpp::{CommandStatus, Pdu};
use rustls::pki_types::ServerName;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use verifyd_core::PhoneNumber;

use crate::{Channel, Delivery, OutboundMessage, Payload, ReceiptSender, SendError};

pub use receipt::MessageIdFormat;
use receipt::{IdSource, normalise_id};
use session::{SessionState, SessionTask};

/// The sender shown on the handset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// An alphanumeric sender id (`Verify`), at most 11 characters: TON 5, NPI 0.
    Alphanumeric(String),
    /// A number in E.164 (`+4915112345678`, the `+` is optional): TON 1, NPI 1.
    Numeric(String),
}

impl Sender {
    /// Reads a route's sender override ([`OutboundMessage::sender`]): a leading `+` or only
    /// digits is a number, anything else an alphanumeric id.
    pub fn parse(sender: &str) -> Self {
        let digits = sender.strip_prefix('+').unwrap_or(sender);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            Sender::Numeric(sender.to_owned())
        } else {
            Sender::Alphanumeric(sender.to_owned())
        }
    }
}

/// How to reach one SMSC. Build with [`SmppConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct SmppConfig {
    /// Channel name for logs, metrics and receipts (`smpp:primary`).
    pub name: String,
    /// `smpp://host:port` (plain TCP) or `smpps://host:port` (TLS, rustls with the public web
    /// PKI roots unless [`SmppConfig::tls_root_certs_pem`] is set); the port defaults to 2775.
    pub url: String,
    /// `system_id` for the bind, at most 15 characters.
    pub system_id: String,
    /// `password` for the bind, at most 8 characters. Never logged.
    pub password: String,
    /// `system_type` for the bind, at most 12 characters (often empty).
    pub system_type: String,
    /// The default sender id; a message's [`OutboundMessage::sender`] overrides it.
    pub source: Sender,
    /// Most `submit_sm` awaiting their response at once (each part of a long text is one).
    /// Default 10; at least 1. A `submit_sm` whose response timed out stops counting, although
    /// the SMSC may still be working on it.
    pub window: usize,
    /// Most `submit_sm` per second on this bind; `None` (default) for no cap.
    pub tps: Option<u32>,
    /// Time between our `enquire_link`s. Default 30 s.
    pub enquire_link_interval: Duration,
    /// How long to wait for any response (bind, `submit_sm`, `enquire_link`) and for the TCP/TLS
    /// connect. Default 5 s.
    pub response_timeout: Duration,
    /// First reconnect delay. Default 1 s.
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 60 s.
    pub reconnect_max: Duration,
    /// Ask for a delivery receipt (`registered_delivery` 1: final success or failure).
    /// Default `true`.
    pub registered_delivery: bool,
    /// How this SMSC prints message ids. Default [`MessageIdFormat::Verbatim`].
    pub message_ids: MessageIdFormat,
    /// Internal retries after `ESME_RTHROTTLED` / `ESME_RMSGQFUL`. Default 3.
    pub throttle_retries: u32,
    /// Pause after the first throttling answer; doubles per retry. Default 250 ms.
    pub throttle_backoff: Duration,
    /// For `smpps://`: PEM certificates to trust instead of the public web PKI roots (an
    /// operator's private CA or a self-signed SMSC certificate). Default `None`.
    pub tls_root_certs_pem: Option<String>,
}

impl SmppConfig {
    /// A configuration with the documented defaults.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        system_id: impl Into<String>,
        password: impl Into<String>,
        source: Sender,
    ) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            system_id: system_id.into(),
            password: password.into(),
            system_type: String::new(),
            source,
            window: 10,
            tps: None,
            enquire_link_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            registered_delivery: true,
            message_ids: MessageIdFormat::Verbatim,
            throttle_retries: 3,
            throttle_backoff: Duration::from_millis(250),
            tls_root_certs_pem: None,
        }
    }
}

impl fmt::Debug for SmppConfig {
    /// Redacts the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmppConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("system_id", &self.system_id)
            .field("password", &"<redacted>")
            .field("system_type", &self.system_type)
            .field("source", &self.source)
            .field("window", &self.window)
            .field("tps", &self.tps)
            .field("enquire_link_interval", &self.enquire_link_interval)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("registered_delivery", &self.registered_delivery)
            .field("message_ids", &self.message_ids)
            .field("throttle_retries", &self.throttle_retries)
            .field("throttle_backoff", &self.throttle_backoff)
            .field("tls_root_certs_pem", &self.tls_root_certs_pem.is_some())
            .finish()
    }
}

/// Why an [`SmppConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmppConfigError {
    /// The URL is not `smpp://host[:port]` or `smpps://host[:port]`.
    #[error("invalid SMPP url: {0}")]
    Url(String),
    /// A bind field is too long or not ASCII.
    #[error("SMPP {field} must be ASCII and at most {max} characters")]
    Field {
        /// Which field.
        field: &'static str,
        /// Its maximum length.
        max: usize,
    },
    /// The sender is not a valid alphanumeric id or E.164 number.
    #[error("invalid SMPP sender: {0}")]
    Sender(String),
    /// The TLS roots could not be read.
    #[error("invalid SMPP TLS roots: {0}")]
    Tls(String),
    /// The window is 0 or the reconnect delays are 0 or inverted.
    #[error("invalid SMPP setting: {0}")]
    Setting(&'static str),
    /// [`SmppChannel::connect`] was called outside a Tokio runtime.
    #[error("SmppChannel::connect needs a Tokio runtime")]
    NoRuntime,
}

/// What the session task is doing, for health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmppStatus {
    /// Connecting or binding.
    Connecting,
    /// Bound: sends go out.
    Bound,
    /// The last bind was rejected by the SMSC with this status; retrying with back-off.
    BindRejected(String),
    /// Disconnected; waiting for the next attempt.
    Down,
    /// Shut down.
    Stopped,
}

/// Shared by every clone of an [`SmppChannel`].
struct Inner {
    name: String,
    source: (Ton, Npi, COctetString<1, 21>),
    registered_delivery: bool,
    message_ids: MessageIdFormat,
    throttle_retries: u32,
    throttle_backoff: Duration,
    /// How long a send waits for a session that is being set up.
    setup_wait: Duration,
    /// The session task publishes the bound client (or why there is none) here.
    state: watch::Receiver<SessionState>,
    /// One permit per unanswered `submit_sm`.
    window: Semaphore,
    /// Throughput cap and throttling pause.
    pacer: crate::pacer::Pacer,
    /// Concatenation reference of the next long message.
    next_reference: AtomicU8,
    /// `true` asks the session task to unbind and stop. The task also stops when this sender
    /// is dropped, i.e. with the last clone of the channel.
    shutdown: watch::Sender<bool>,
    /// The session task, awaited by [`SmppChannel::shutdown`].
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// The SMPP channel. Cheap to clone; the session stops when the last clone is dropped or on
/// [`SmppChannel::shutdown`].
#[derive(Clone)]
pub struct SmppChannel {
    inner: Arc<Inner>,
}

impl fmt::Debug for SmppChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmppChannel")
            .field("name", &self.inner.name)
            .field("status", &self.status())
            .finish()
    }
}

/// Checks an ASCII bind field and turns it into a C-octet string.
fn c_octet<const MAX: usize>(
    value: &str,
    field: &'static str,
) -> Result<COctetString<1, MAX>, SmppConfigError> {
    let error = SmppConfigError::Field {
        field,
        max: MAX - 1,
    };
    if !value.is_ascii() || value.len() >= MAX {
        return Err(error);
    }
    COctetString::from_str(value).map_err(|_| error)
}

/// TON, NPI and address of the configured sender.
fn source_address(sender: &Sender) -> Result<(Ton, Npi, COctetString<1, 21>), SmppConfigError> {
    match sender {
        Sender::Alphanumeric(id) => {
            let ok = !id.is_empty()
                && id.chars().count() <= 11
                && id.chars().all(|c| c.is_ascii_graphic() || c == ' ');
            if !ok {
                return Err(SmppConfigError::Sender(
                    "an alphanumeric sender is 1 to 11 ASCII characters".to_owned(),
                ));
            }
            let addr = c_octet::<21>(id, "sender")?;
            Ok((Ton::Alphanumeric, Npi::Unknown, addr))
        }
        Sender::Numeric(number) => {
            let digits = number.strip_prefix('+').unwrap_or(number);
            let ok = (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(SmppConfigError::Sender(
                    "a numeric sender is an E.164 number".to_owned(),
                ));
            }
            let addr = c_octet::<21>(digits, "sender")?;
            Ok((Ton::International, Npi::Isdn, addr))
        }
    }
}

/// Where the SMSC is, from [`SmppConfig::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `smpps://`: TLS.
    pub(crate) tls: bool,
    /// Host name or IP address (without brackets).
    pub(crate) host: String,
    /// TCP port, 2775 when the URL has none.
    pub(crate) port: u16,
}

/// Parses `smpp://host[:port]` / `smpps://host[:port]` (`ssmpp://` is accepted as an alias;
/// IPv6 literals go in brackets).
fn parse_url(url: &str) -> Result<Endpoint, SmppConfigError> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("smpp://") {
        (false, rest)
    } else if let Some(rest) = url
        .strip_prefix("smpps://")
        .or_else(|| url.strip_prefix("ssmpp://"))
    {
        (true, rest)
    } else {
        return Err(SmppConfigError::Url(
            "the scheme must be smpp:// or smpps://".to_owned(),
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| SmppConfigError::Url("unclosed [ in the host".to_owned()))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(SmppConfigError::Url("the url has no host".to_owned()));
    }
    let port = match port {
        None => 2775,
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| SmppConfigError::Url("the port is not a number".to_owned()))?,
    };
    Ok(Endpoint {
        tls,
        host: host.to_owned(),
        port,
    })
}

/// The TLS connector for `host`: trusting exactly the certificates in `pem` when given, the
/// public web PKI roots (`webpki-roots`) otherwise.
fn tls_connector(
    host: &str,
    pem: Option<&str>,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), SmppConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| SmppConfigError::Tls(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| SmppConfigError::Tls(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(SmppConfigError::Tls("no certificate in the PEM".to_owned()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SmppConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| SmppConfigError::Url("the host is not a valid TLS server name".to_owned()))?;
    Ok((
        tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    ))
}

/// The first concatenation reference, different per process so that two restarts in a row
/// do not reuse references towards the same handset.
fn random_reference() -> u8 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish().to_le_bytes()[0]
}

/// Upper-case SMPP name of a command status (`ESME_RTHROTTLED`) and its code.
fn status_name(status: CommandStatus) -> String {
    let code = u32::from(status);
    let debug = format!("{status:?}");
    match debug.strip_prefix("Esme") {
        Some(rest) => format!("ESME_{} (0x{code:08X})", rest.to_ascii_uppercase()),
        None => format!("0x{code:08X}"),
    }
}

/// How one `submit_sm` failed.
#[derive(Debug)]
enum SubmitFailure {
    /// The SMSC cannot have received it.
    NotSent(String),
    /// It was written and no answer came: the SMSC may have accepted it.
    Unknown(String),
    /// Still throttled after the internal retries.
    Throttled {
        status: String,
        retry_after: Duration,
    },
    /// Refused with a status; `transient` for statuses worth retrying later.
    Rejected { status: String, transient: bool },
    /// The bind itself was refused.
    BindRejected(String),
}

impl SubmitFailure {
    /// The [`SendError`] for a failure of part `index` (0-based) of `total`.
    fn into_send_error(self, index: usize, total: usize) -> SendError {
        let partial = if index > 0 {
            format!(
                " (part {} of {total}; earlier parts were accepted and a resend repeats them)",
                index + 1
            )
        } else {
            String::new()
        };
        match self {
            SubmitFailure::NotSent(reason) => SendError::Retryable {
                reason: format!("not sent: {reason}{partial}"),
                retry_after: None,
            },
            SubmitFailure::Unknown(reason) => SendError::OutcomeUnknown {
                reason: format!("{reason}; the SMSC may have accepted the message{partial}"),
            },
            SubmitFailure::Throttled {
                status,
                retry_after,
            } => SendError::Retryable {
                reason: format!("SMSC still throttling after retries: {status}{partial}"),
                retry_after: Some(retry_after),
            },
            SubmitFailure::Rejected {
                status,
                transient: true,
            } => SendError::Retryable {
                reason: format!("submit_sm refused: {status}{partial}"),
                retry_after: None,
            },
            SubmitFailure::Rejected {
                status,
                transient: false,
            } => SendError::Permanent {
                reason: format!("submit_sm rejected: {status}{partial}"),
            },
            SubmitFailure::BindRejected(status) => SendError::Permanent {
                reason: format!("SMPP bind rejected by the SMSC: {status}"),
            },
        }
    }
}

impl SmppChannel {
    /// Validates `config` and starts the session task, which connects and binds in the
    /// background and pushes delivery receipts to `receipts`.
    ///
    /// # Errors
    /// [`SmppConfigError`] for an unusable configuration, or outside a Tokio runtime.
    pub fn connect(config: SmppConfig, receipts: ReceiptSender) -> Result<Self, SmppConfigError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SmppConfigError::NoRuntime)?;
        let endpoint = parse_url(&config.url)?;
        if config.window == 0 {
            return Err(SmppConfigError::Setting("window must be at least 1"));
        }
        if config.reconnect_min.is_zero() || config.reconnect_max < config.reconnect_min {
            return Err(SmppConfigError::Setting(
                "reconnect_min must be > 0 and <= reconnect_max",
            ));
        }
        let bind = BindTransceiver::builder()
            .system_id(c_octet::<16>(&config.system_id, "system_id")?)
            .password(c_octet::<9>(&config.password, "password")?)
            .system_type(c_octet::<13>(&config.system_type, "system_type")?)
            .interface_version(InterfaceVersion::Smpp3_4)
            .addr_ton(Ton::Unknown)
            .addr_npi(Npi::Unknown)
            .address_range(COctetString::empty())
            .build();
        let source = source_address(&config.source)?;
        let tls = if endpoint.tls {
            Some(tls_connector(
                &endpoint.host,
                config.tls_root_certs_pem.as_deref(),
            )?)
        } else {
            None
        };

        let (state_tx, state_rx) = watch::channel(SessionState::Connecting);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = SessionTask {
            name: config.name.clone(),
            endpoint,
            tls,
            bind,
            enquire_link_interval: config.enquire_link_interval,
            response_timeout: config.response_timeout,
            reconnect_min: config.reconnect_min,
            reconnect_max: config.reconnect_max,
            message_ids: config.message_ids,
            state: state_tx,
            shutdown: shutdown_rx,
            receipts,
        };
        let handle = runtime.spawn(task.run());
        Ok(Self {
            inner: Arc::new(Inner {
                name: config.name,
                source,
                registered_delivery: config.registered_delivery,
                message_ids: config.message_ids,
                throttle_retries: config.throttle_retries,
                throttle_backoff: config.throttle_backoff,
                setup_wait: config.response_timeout,
                state: state_rx,
                window: Semaphore::new(config.window),
                pacer: crate::pacer::Pacer::new(config.tps),
                next_reference: AtomicU8::new(random_reference()),
                shutdown: shutdown_tx,
                task: std::sync::Mutex::new(Some(handle)),
            }),
        })
    }

    /// The channel's name (`smpp:primary`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// What the session is doing now.
    pub fn status(&self) -> SmppStatus {
        match &*self.inner.state.borrow() {
            SessionState::Connecting => SmppStatus::Connecting,
            SessionState::Bound(_) => SmppStatus::Bound,
            SessionState::BindRejected(status) => SmppStatus::BindRejected(status.clone()),
            SessionState::Down => SmppStatus::Down,
            SessionState::Stopped => SmppStatus::Stopped,
        }
    }

    /// Waits until a session is bound, at most `timeout`; returns whether it is.
    pub async fn wait_bound(&self, timeout: Duration) -> bool {
        let mut state = self.inner.state.clone();
        tokio::time::timeout(
            timeout,
            state.wait_for(|s| matches!(s, SessionState::Bound(_))),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// Unbinds, closes the connection and stops reconnecting; later sends fail with
    /// [`SendError::Retryable`] ("not sent").
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let handle = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle
            && let Err(error) = handle.await
        {
            tracing::warn!(channel = %self.inner.name, %error, "SMPP session task failed");
        }
    }

    /// Builds the `submit_sm` for one part.
    fn submit_sm(
        &self,
        source: &(Ton, Npi, COctetString<1, 21>),
        destination: &COctetString<1, 21>,
        part: encoding::Part,
    ) -> SubmitSm {
        let (ton, npi, source) = source;
        let esm_class: u8 = if part.udhi { 0x40 } else { 0x00 };
        let registered: u8 = u8::from(self.inner.registered_delivery);
        // A part is at most 6 + 160 octets, far below OctetString's 255; an empty message is
        // the impossible fallback.
        let short_message = OctetString::from_vec(part.short_message).unwrap_or_default();
        SubmitSm::builder()
            .service_type(ServiceType::default())
            .source_addr_ton(*ton)
            .source_addr_npi(*npi)
            .source_addr(source.clone())
            .dest_addr_ton(Ton::International)
            .dest_addr_npi(Npi::Isdn)
            .destination_addr(destination.clone())
            .esm_class(EsmClass::from(esm_class))
            .registered_delivery(RegisteredDelivery::from(registered))
            .data_coding(DataCoding::from(part.data_coding))
            .short_message(short_message)
            .build()
    }

    /// Sends one `submit_sm`: window permit, pacing, the bound client, throttling retries.
    async fn submit(&self, sm: &SubmitSm) -> Result<SubmitSmResp, SubmitFailure> {
        let inner = &self.inner;
        let mut attempt: u32 = 0;
        let connecting = matches!(&*inner.state.borrow(), SessionState::Connecting);
        if connecting {
            let mut state = inner.state.clone();
            // Whatever it ends in (bound, down, rejected, or still connecting at the
            // deadline) is judged below.
            let _ = tokio::time::timeout(
                inner.setup_wait,
                state.wait_for(|s| !matches!(s, SessionState::Connecting)),
            )
            .await;
        }
        loop {
            let permit = inner
                .window
                .acquire()
                .await
                .map_err(|_| SubmitFailure::NotSent("the channel is closed".to_owned()))?;
            inner.pacer.wait().await;
            let client = match &*inner.state.borrow() {
                SessionState::Bound(client) => client.clone(),
                SessionState::BindRejected(status) => {
                    return Err(SubmitFailure::BindRejected(status.clone()));
                }
                SessionState::Stopped => {
                    return Err(SubmitFailure::NotSent(
                        "the SMPP channel is shut down".to_owned(),
                    ));
                }
                SessionState::Connecting | SessionState::Down => {
                    return Err(SubmitFailure::NotSent(
                        "no SMPP session is bound".to_owned(),
                    ));
                }
            };
            if client.is_closed() {
                return Err(SubmitFailure::NotSent(
                    "the SMPP connection is closed".to_owned(),
                ));
            }
            let result = client.submit_sm(sm.clone()).await;
            drop(permit);
            let response = match result {
                Ok(response) => return Ok(response),
                Err(rusmppc::error::Error::UnexpectedResponse { response }) => response,
                Err(error) => return Err(classify_error(&error)),
            };
            let status = response.status();
            if status == CommandStatus::EsmeRok {
                // A successful answer that is not a submit_sm_resp: nothing tells us whether
                // the message was taken.
                let kind = match response.pdu() {
                    Some(Pdu::GenericNack) => "generic_nack".to_owned(),
                    _ => format!("{:?}", response.id()),
                };
                return Err(SubmitFailure::Unknown(format!(
                    "unexpected answer to submit_sm: {kind}"
                )));
            }
            if matches!(
                status,
                CommandStatus::EsmeRthrottled | CommandStatus::EsmeRmsgqful
            ) {
                let delay = inner
                    .throttle_backoff
                    .saturating_mul(2u32.saturating_pow(attempt));
                inner.pacer.pause(delay);
                tracing::info!(
                    channel = %inner.name,
                    status = %status_name(status),
                    attempt,
                    delay_ms = delay.as_millis(),
                    "SMSC throttling; pausing submits"
                );
                if attempt < inner.throttle_retries {
                    attempt += 1;
                    continue;
                }
                return Err(SubmitFailure::Throttled {
                    status: status_name(status),
                    retry_after: delay,
                });
            }
            return Err(SubmitFailure::Rejected {
                status: status_name(status),
                transient: matches!(
                    status,
                    CommandStatus::EsmeRsyserr | CommandStatus::EsmeRinvbndsts
                ),
            });
        }
    }
}

/// Classifies a client error other than an error response.
fn classify_error(error: &rusmppc::error::Error) -> SubmitFailure {
    use rusmppc::error::Error;
    match error {
        Error::ResponseTimeout { timeout, .. } => {
            SubmitFailure::Unknown(format!("no submit_sm_resp within {timeout:?}"))
        }
        // The request may have been written before the connection went away.
        Error::ConnectionClosed | Error::ConnectionClosedByPeer => {
            SubmitFailure::Unknown("the connection closed before the submit_sm_resp".to_owned())
        }
        // The write failed, so the PDU did not reach the SMSC whole.
        Error::Io(e) => SubmitFailure::NotSent(format!("write failed: {e}")),
        Error::Encode(e) => SubmitFailure::Rejected {
            status: format!("cannot encode submit_sm: {e}"),
            transient: false,
        },
        other => SubmitFailure::NotSent(other.to_string()),
    }
}

/// The destination address: E.164 digits without the `+`.
fn destination_addr(to: &PhoneNumber) -> Result<COctetString<1, 21>, SendError> {
    let digits = to.as_str().trim_start_matches('+');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SendError::Permanent {
            reason: "the recipient is not an E.164 number".to_owned(),
        });
    }
    c_octet::<21>(digits, "destination").map_err(|_| SendError::Permanent {
        reason: "the recipient number is too long for SMPP".to_owned(),
    })
}

#[async_trait]
impl Channel for SmppChannel {
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// Submits the text; see the module docs for encoding, windowing, throttling and the
    /// "outcome unknown" rule.
    async fn send(&self, message: &OutboundMessage) -> Result<Delivery, SendError> {
        let Payload::Text { body, .. } = &message.payload else {
            return Err(SendError::Permanent {
                reason: "not an SMS channel".to_owned(),
            });
        };
        let destination = destination_addr(&message.to)?;
        let source = match &message.sender {
            None => self.inner.source.clone(),
            Some(sender) => {
                source_address(&Sender::parse(sender)).map_err(|e| SendError::Permanent {
                    reason: e.to_string(),
                })?
            }
        };
        let reference = self.inner.next_reference.fetch_add(1, Ordering::Relaxed);
        let parts = encoding::encode(body, reference).map_err(|e| SendError::Permanent {
            reason: e.to_string(),
        })?;
        let total = parts.len();
        let mut first_id = None;
        for (index, part) in parts.into_iter().enumerate() {
            let sm = self.submit_sm(&source, &destination, part);
            match self.submit(&sm).await {
                Ok(response) => {
                    if index == 0 {
                        let id = normalise_id(
                            response.message_id().as_str(),
                            self.inner.message_ids,
                            IdSource::Response,
                        );
                        // An SMSC that answers without an id cannot be matched to receipts.
                        first_id = (!id.is_empty()).then_some(id);
                    }
                }
                Err(failure) => {
                    tracing::warn!(
                        channel = %self.inner.name,
                        verification_id = %message.verification_id,
                        part = index + 1,
                        parts = total,
                        failure = ?failure,
                        "submit_sm failed"
                    );
                    return Err(failure.into_send_error(index, total));
                }
            }
        }
        tracing::debug!(
            channel = %self.inner.name,
            verification_id = %message.verification_id,
            parts = total,
            "submitted"
        );
        Ok(Delivery {
            message_id: first_id,
            call: None,
            delivered: false,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn config_debug_redacts_the_password() {
        let config = SmppConfig::new(
            "smpp:test",
            "smpp://127.0.0.1:2775",
            "id",
            "secret12",
            Sender::Alphanumeric("Verify".into()),
        );
        assert!(!format!("{config:?}").contains("secret12"));
    }

    #[test]
    fn urls_and_senders_are_validated() {
        let endpoint = |tls, host: &str, port| Endpoint {
            tls,
            host: host.to_owned(),
            port,
        };
        assert_eq!(parse_url("smpp://h:1"), Ok(endpoint(false, "h", 1)));
        assert_eq!(parse_url("smpps://h"), Ok(endpoint(true, "h", 2775)));
        assert_eq!(parse_url("smpp://[::1]:9"), Ok(endpoint(false, "::1", 9)));
        assert!(parse_url("http://h").is_err());
        assert!(parse_url("smpp://:2775").is_err());
        assert!(parse_url("smpp://h:x").is_err());
        assert!(source_address(&Sender::Alphanumeric("TwelveChars!".into())).is_err());
        assert!(source_address(&Sender::Numeric("+49abc".into())).is_err());
        let (ton, npi, addr) = source_address(&Sender::Numeric("+4915112345678".into())).unwrap();
        assert_eq!(
            (ton, npi, addr.as_str()),
            (Ton::International, Npi::Isdn, "4915112345678")
        );
    }

    #[test]
    fn status_names_are_smpp_style() {
        assert_eq!(
            status_name(CommandStatus::EsmeRthrottled),
            "ESME_RTHROTTLED (0x00000058)"
        );
    }

    #[tokio::test]
    async fn connect_rejects_overlong_bind_fields() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut config = SmppConfig::new(
            "smpp:test",
            "smpp://127.0.0.1:1",
            "id",
            "123456789",
            Sender::Alphanumeric("Verify".into()),
        );
        assert_eq!(
            SmppChannel::connect(config.clone(), tx.clone()).err(),
            Some(SmppConfigError::Field {
                field: "password",
                max: 8
            })
        );
        config.password = "12345678".into();
        let channel = SmppChannel::connect(config, tx).unwrap();
        channel.shutdown().await;
        assert_eq!(channel.status(), SmppStatus::Stopped);
    }
}
