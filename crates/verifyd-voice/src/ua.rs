//! The SIP user agent (`rsipstack`) and the two call flows.
//!
//! One endpoint, one transport bound at start. A background task answers requests from
//! the trunk: those inside a dialog of ours (a BYE when the callee hangs up) go to the
//! dialog, OPTIONS keepalives get `200`, anything else `481`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::EndpointBuilder;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::typed::Route;
use rsipstack::sip::{Header, Method, Response, StatusCode, Transport, Uri};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TlsConfig, TransportLayer};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::digest::DigestWire;
use crate::{SipConfigError, SipTransport, SipTrunkConfig, TlsFiles, rtp, sdp};

/// What to do on the line.
pub(crate) enum Plan {
    /// Ring for at most `ring`, cancel on ringing.
    Flash {
        /// `+` and digits.
        cli: String,
        /// Ring limit.
        ring: Duration,
    },
    /// Ring for at most `ring`, then play `audio` (8 kHz PCM) and hang up.
    Callout {
        /// `+` and digits, or anonymous.
        caller: Option<String>,
        /// The whole announcement.
        audio: Vec<i16>,
        /// Ring limit.
        ring: Duration,
    },
}

/// How a call attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A flash call rang and was cancelled.
    Cancelled,
    /// Answered: a flash call picked up, or a callout hung up by the callee before the end.
    Answered {
        /// Answered seconds, rounded up, at least 1.
        billable: u32,
        /// Whether the call did what it was for (a flash call's CLI was shown; a callout's
        /// announcement was not cut short).
        heard: bool,
    },
    /// A callout played its announcement to the end.
    Completed {
        /// Answered seconds, rounded up.
        billable: u32,
    },
    /// 486, 600, 603.
    Busy(String),
    /// Not answered in time, 408, 480.
    NoAnswer(String),
    /// Anything else.
    Failed(String),
}

impl Outcome {
    /// A short label for logs.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Outcome::Cancelled => "cancelled",
            Outcome::Answered { .. } => "answered",
            Outcome::Completed { .. } => "completed",
            Outcome::Busy(_) => "busy",
            Outcome::NoAnswer(_) => "no answer",
            Outcome::Failed(_) => "failed",
        }
    }

    /// The outcome of a final response that was not a 2xx.
    fn from_status(status: &StatusCode) -> Self {
        let line = format!("{} {}", status.code(), status.text());
        match status.code() {
            486 | 600 | 603 => Outcome::Busy(line),
            408 | 480 => Outcome::NoAnswer(line),
            _ => Outcome::Failed(line),
        }
    }
}

/// How long opening a TCP or TLS connection to the trunk (connect and handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Billable seconds: rounded up, at least one.
fn billable(d: Duration) -> u32 {
    u32::try_from(d.as_millis().div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// An rsipstack error, reduced to its kind: the full text can hold URIs with numbers.
fn stack_error(e: &rsipstack::Error) -> String {
    let kind = match e {
        rsipstack::Error::SipMessageError(_) => "bad SIP message",
        rsipstack::Error::DnsResolutionError(_) => "DNS resolution",
        rsipstack::Error::TransportLayerError(..) => "transport",
        rsipstack::Error::TransactionError(..) => "transaction",
        rsipstack::Error::EndpointError(_) => "endpoint",
        rsipstack::Error::DialogError(..) => "dialog",
        rsipstack::Error::IoError(_) => "I/O",
        rsipstack::Error::AddrParseError(_) => "address",
        _ => "SIP stack",
    };
    format!("{kind} error")
}

/// Why the ringing phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancelled {
    /// A flash call rang.
    OnRinging,
    /// The ring limit passed.
    OnTimeout,
}

/// The end of the ringing phase.
struct Ringing {
    /// The INVITE task's result; `None` when it did not end within the grace after CANCEL.
    result: Option<InviteAsyncResult>,
    /// Whether and why we sent CANCEL.
    cancelled: Option<Cancelled>,
    /// Whether the trunk sent anything (100, 18x, a final response).
    heard_back: bool,
}

/// Ends a call whose `send` future was dropped mid-call (a caller's timeout): CANCEL while
/// it rings, BYE once answered. Disarmed when the call ends normally.
struct HangUpOnDrop {
    dialog: Option<InviteDialog>,
    layer: Arc<DialogLayer>,
}

impl Drop for HangUpOnDrop {
    fn drop(&mut self) {
        let Some(dialog) = self.dialog.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let layer = self.layer.clone();
        runtime.spawn(async move {
            tracing::info!("call abandoned by the caller; hanging up");
            if let Err(e) = dialog.hangup().await {
                tracing::debug!(error = %stack_error(&e), "hang-up failed");
            }
            layer.remove_dialog(&dialog.id());
        });
    }
}

/// The SIP side of a channel.
pub(crate) struct Ua {
    layer: Arc<DialogLayer>,
    /// The endpoint, for opening stream connections to the trunk before an INVITE.
    endpoint: rsipstack::transaction::endpoint::EndpointInnerRef,
    /// Our Contact URI.
    contact: Uri,
    local: SocketAddr,
    /// Cancelled on drop: stops the endpoint, its transport and the request loop.
    shutdown: CancellationToken,
}

impl Drop for Ua {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Ua {
    /// Binds the SIP socket and starts the endpoint.
    /// `tls`: the trunk's TLS material when it is reached over TLS.
    pub(crate) async fn start(
        config: &SipTrunkConfig,
        tls: Option<TlsFiles>,
    ) -> Result<Self, SipConfigError> {
        let stack = |e: rsipstack::Error| SipConfigError::Stack(e.to_string());
        let shutdown = CancellationToken::new();
        let transport = TransportLayer::new(shutdown.child_token());
        if let Some(tls) = tls {
            // Outbound TLS connections verify the trunk's certificate against `ca_certs`
            // for `server_name` (rsipstack builds a rustls client with these roots and
            // never installs a permissive verifier unless asked to).
            let (client_cert, client_key) = tls.client.unzip();
            transport.set_tls_config(TlsConfig {
                ca_certs: Some(tls.ca_certs),
                client_cert,
                client_key,
                sni_hostname: Some(tls.server_name),
                ..Default::default()
            });
        }
        let udp = UdpConnection::create_connection(
            config.bind,
            config.advertised,
            Some(shutdown.child_token()),
        )
        .await
        .map_err(stack)?;
        let bound = udp.get_addr().addr.clone();
        transport.add_transport(udp.into());
        let endpoint = EndpointBuilder::new()
            .with_user_agent(concat!("verifyd/", env!("CARGO_PKG_VERSION")))
            .with_transport_layer(transport)
            .with_cancel_token(shutdown.child_token())
            // rsipstack answers 401/407 itself; this writes its credentials with RFC
            // quoting (`qop=auth`, not `qop="auth"`) on the wire.
            .with_inspector(Box::new(DigestWire))
            .build();
        let mut incoming = endpoint.incoming_transactions().map_err(stack)?;
        let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let local: SocketAddr = match config.advertised {
            Some(addr) => addr,
            None => bound
                .to_string()
                .parse()
                .map_err(|_| SipConfigError::Stack(format!("bound to {bound}")))?,
        };
        let contact = Uri::try_from(format!("sip:verifyd@{local}").as_str())
            .map_err(|e| SipConfigError::Stack(e.to_string()))?;

        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                tracing::warn!(error = %stack_error(&e), "SIP endpoint stopped");
            }
        });
        let requests = layer.clone();
        tokio::spawn(async move {
            while let Some(mut tx) = incoming.recv().await {
                let dialog = requests.match_dialog(&tx);
                tokio::spawn(async move {
                    let answered = match dialog {
                        Some(mut dialog) => dialog.handle(&mut tx).await,
                        None => match tx.original.method {
                            Method::Ack => Ok(()),
                            Method::Options => tx.reply(StatusCode::OK).await,
                            _ => tx.reply(StatusCode::CallTransactionDoesNotExist).await,
                        },
                    };
                    if let Err(e) = answered {
                        tracing::debug!(error = %stack_error(&e), "answering a trunk request failed");
                    }
                });
            }
        });
        Ok(Self {
            layer,
            endpoint: endpoint.inner.clone(),
            contact,
            local,
            shutdown,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A fresh Call-ID: 128 random bits `@` our domain.
    pub(crate) fn new_call_id(&self, domain: &str) -> String {
        format!("{:032x}@{domain}", rand::random::<u128>())
    }

    /// Places one call and reports how it ended.
    pub(crate) async fn call(
        &self,
        config: &SipTrunkConfig,
        to: &str,
        call_id: &str,
        plan: Plan,
    ) -> Outcome {
        // The RTP socket: bound for flash calls too, so early media finds an open port.
        let media = match UdpSocket::bind((config.media_ip, 0)).await {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(format!("cannot bind RTP: {}", e.kind())),
        };
        let Ok(media_addr) = media.local_addr() else {
            return Outcome::Failed("cannot bind RTP".into());
        };
        let caller = match &plan {
            Plan::Flash { cli, .. } => Some(cli.as_str()),
            Plan::Callout { caller, .. } => caller.as_deref(),
        };
        let offer = sdp::offer(media_addr, rand::random::<u32>().into());
        let option = match self.invite(config, to, caller, offer, call_id).await {
            Ok(o) => o,
            Err(detail) => return Outcome::Failed(detail),
        };
        let (state_tx, mut states) = self.layer.new_dialog_state_channel();
        let (dialog, invite) = match self.layer.do_invite_async(option, state_tx) {
            Ok(x) => x,
            Err(e) => return Outcome::Failed(stack_error(&e)),
        };
        tracing::debug!(%call_id, "INVITE sent");
        let mut guard = HangUpOnDrop {
            dialog: Some(dialog.clone()),
            layer: self.layer.clone(),
        };
        let outcome = match plan {
            Plan::Flash { ring, .. } => {
                let rung = ringing(
                    &dialog,
                    invite,
                    &mut states,
                    ring,
                    true,
                    config.cancel_grace,
                )
                .await;
                self.end_flash(&dialog, rung, ring).await
            }
            Plan::Callout { audio, ring, .. } => {
                let rung = ringing(
                    &dialog,
                    invite,
                    &mut states,
                    ring,
                    false,
                    config.cancel_grace,
                )
                .await;
                match self.answered(rung, ring) {
                    Ok(response) => {
                        self.speak(config, &dialog, states, &response, &media, &audio)
                            .await
                    }
                    Err(outcome) => outcome,
                }
            }
        };
        guard.dialog = None;
        outcome
    }

    /// The INVITE for `to` from `caller`.
    async fn invite(
        &self,
        config: &SipTrunkConfig,
        to: &str,
        caller: Option<&str>,
        offer: String,
        call_id: &str,
    ) -> Result<InviteOption, String> {
        let (transport, default_port) = match config.transport {
            SipTransport::Udp => (Transport::Udp, 5060),
            SipTransport::Tcp => (Transport::Tcp, 5060),
            SipTransport::Tls => (Transport::Tls, 5061),
        };
        let target = resolve(&config.proxy, default_port)
            .await
            .ok_or_else(|| "cannot resolve the trunk address".to_string())?;
        if matches!(transport, Transport::Tcp | Transport::Tls) {
            self.connect_first(transport, target).await?;
        }
        let ruri_host = config.request_uri_host.as_deref().unwrap_or(&config.proxy);
        let uri = |s: String| Uri::try_from(s.as_str()).map_err(|_| "bad SIP URI".to_string());
        let callee = uri(format!("sip:{to}@{ruri_host}"))?;
        let mut headers = Vec::new();
        let caller = match caller {
            Some(number) => {
                let from = format!("sip:{number}@{}", config.from_domain);
                if config.privacy {
                    headers.push(Header::Other(
                        "P-Asserted-Identity".into(),
                        format!("<{from}>"),
                    ));
                    headers.push(Header::Other("Privacy".into(), "none".into()));
                }
                uri(from)?
            }
            None => uri(format!("sip:anonymous@{}", config.from_domain))?,
        };
        let credential = config
            .auth_user
            .clone()
            .zip(config.auth_password.clone())
            .map(|(username, password)| Credential {
                username,
                password,
                realm: None,
                auth_username: None,
            });
        // An outbound proxy that is not the Request-URI's host is named in a preloaded
        // Route (RFC 3261 §8.1.2, loose routing). `destination` alone sends the INVITE
        // there, but rsipstack builds the CANCEL from the INVITE and routes it by its Route
        // header or else by the Request-URI: without the Route the CANCEL went to the
        // carrier host (unresolvable, or not us to talk to) and the call rang on.
        let route_set = if ruri_host == config.proxy {
            Vec::new()
        } else {
            let transport_param = match config.transport {
                SipTransport::Udp => "",
                SipTransport::Tcp => ";transport=tcp",
                SipTransport::Tls => ";transport=tls",
            };
            vec![Route {
                display_name: None,
                uri: uri(format!("sip:{target};lr{transport_param}"))?,
                params: Vec::new(),
            }]
        };
        Ok(InviteOption {
            caller,
            callee,
            destination: Some(SipAddr {
                r#type: Some(transport),
                addr: target.into(),
            }),
            route_set,
            content_type: Some("application/sdp".into()),
            offer: Some(offer.into_bytes()),
            contact: self.contact.clone(),
            credential,
            headers: Some(headers),
            call_id: Some(call_id.to_owned()),
            ..Default::default()
        })
    }

    /// Opens (or finds open) the TCP or TLS connection to the trunk, so that a connection
    /// that cannot be made (nobody listening, an untrusted or misnamed certificate, a peer
    /// that does not speak TLS) fails the call at once with the reason. Left to the INVITE
    /// transaction, rsipstack would drop the error and retry until Timer B, and the call
    /// would end as "no response" after the ring limit.
    async fn connect_first(&self, transport: Transport, target: SocketAddr) -> Result<(), String> {
        let addr = SipAddr {
            r#type: Some(transport),
            addr: target.into(),
        };
        let what = if transport == Transport::Tls {
            "TLS"
        } else {
            "TCP"
        };
        let lookup = self.endpoint.transport_layer.lookup(&addr, None);
        match tokio::time::timeout(CONNECT_TIMEOUT, lookup).await {
            Ok(Ok(_)) => Ok(()),
            // rustls' and the socket's reasons name certificates and addresses, never a
            // number being called.
            Ok(Err(rsipstack::Error::IoError(e))) => Err(format!("{what} connection: {e}")),
            Ok(Err(rsipstack::Error::Error(e))) => Err(format!("{what} connection: {e}")),
            Ok(Err(e)) => Err(format!("{what} connection: {}", stack_error(&e))),
            Err(_) => Err(format!(
                "{what} connection: not established within {}",
                secs(CONNECT_TIMEOUT)
            )),
        }
    }

    /// How a flash call ended.
    async fn end_flash(&self, dialog: &InviteDialog, rung: Ringing, ring: Duration) -> Outcome {
        let on_ringing = rung.cancelled == Some(Cancelled::OnRinging);
        match rung.result {
            Some(Ok((id, Some(response)))) if response.status_code.kind() == ok_kind() => {
                if rung.cancelled.is_some() {
                    // rsipstack ACKs a 2xx that crossed our CANCEL and sends the BYE.
                    tracing::info!("flash call answered across the CANCEL; hung up");
                    Outcome::Answered {
                        billable: 1,
                        heard: true,
                    }
                } else {
                    // Answered without ringing: hang up at once.
                    let answered = Instant::now();
                    if let Err(e) = dialog.bye().await {
                        tracing::warn!(error = %stack_error(&e), "BYE failed");
                    }
                    self.layer.remove_dialog(&id);
                    Outcome::Answered {
                        billable: billable(answered.elapsed()),
                        heard: true,
                    }
                }
            }
            // It rang: whatever the final response (487, or a reject racing the CANCEL),
            // the call is in the handset's log.
            _ if on_ringing => Outcome::Cancelled,
            Some(Ok((_, Some(response)))) if !cancelled_487(&rung, &response) => {
                Outcome::from_status(&response.status_code)
            }
            _ if rung.heard_back => Outcome::NoAnswer(format!("no ringing within {}", secs(ring))),
            Some(Err(e)) => Outcome::Failed(stack_error(&e)),
            _ => Outcome::Failed("no response from the trunk".into()),
        }
    }

    /// The 2xx of an answered callout, or the outcome of one that was not answered.
    fn answered(&self, rung: Ringing, ring: Duration) -> Result<Response, Outcome> {
        let no_answer = || Outcome::NoAnswer(format!("not answered within {}", secs(ring)));
        match rung.result {
            Some(Ok((_, Some(response)))) if response.status_code.kind() == ok_kind() => {
                if rung.cancelled.is_some() {
                    // Picked up as the CANCEL went out: rsipstack ACKs and hangs up.
                    Err(no_answer())
                } else {
                    Ok(response)
                }
            }
            Some(Ok((_, Some(response)))) if !cancelled_487(&rung, &response) => {
                Err(Outcome::from_status(&response.status_code))
            }
            _ if rung.heard_back => Err(no_answer()),
            Some(Err(e)) => Err(Outcome::Failed(stack_error(&e))),
            _ => Err(Outcome::Failed("no response from the trunk".into())),
        }
    }

    /// Plays `audio` on an answered callout, then hangs up.
    async fn speak(
        &self,
        config: &SipTrunkConfig,
        dialog: &InviteDialog,
        mut states: DialogStateReceiver,
        response: &Response,
        media: &UdpSocket,
        audio: &[i16],
    ) -> Outcome {
        let answered = Instant::now();
        let id = dialog.id();
        let answer = std::str::from_utf8(response.body())
            .map_err(|_| "SDP answer is not UTF-8".to_string())
            .and_then(|body| sdp::parse_answer(body).map_err(|e| format!("SDP: {e}")))
            .and_then(|answer| {
                if config.media_ip.is_loopback() && !answer.rtp.ip().is_loopback() {
                    Err("SDP: the media address is not on loopback".to_string())
                } else {
                    Ok(answer)
                }
            });
        let answer = match answer {
            Ok(a) => a,
            Err(detail) => {
                self.hang_up(dialog).await;
                return Outcome::Failed(detail);
            }
        };
        tracing::debug!(rtp = %answer.rtp, law = ?answer.law, "callout answered");

        // The callee hanging up (a BYE to us) ends the stream.
        let hung_up = CancellationToken::new();
        let watcher = {
            let hung_up = hung_up.clone();
            tokio::spawn(async move {
                while let Some(state) = states.recv().await {
                    if matches!(state, DialogState::Terminated(..)) {
                        hung_up.cancel();
                        break;
                    }
                }
            })
        };
        let played = rtp::play(media, answer.rtp, answer.law, audio, &hung_up).await;
        let by_callee = hung_up.is_cancelled();
        if !by_callee {
            self.hang_up(dialog).await;
        }
        watcher.abort();
        self.layer.remove_dialog(&dialog.id());
        self.layer.remove_dialog(&id);
        let billable = billable(answered.elapsed());
        match played {
            Ok(p) if !p.interrupted => Outcome::Completed { billable },
            Ok(_) => Outcome::Answered {
                billable,
                heard: false,
            },
            Err(e) => Outcome::Failed(format!("RTP: {}", e.kind())),
        }
    }

    async fn hang_up(&self, dialog: &InviteDialog) {
        if let Err(e) = dialog.bye().await {
            tracing::warn!(error = %stack_error(&e), "BYE failed");
        }
    }
}

/// The trunk's address: `host:port`, or a bare host on `default_port` (5060, or 5061 for TLS).
async fn resolve(proxy: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(mut addrs) = tokio::net::lookup_host(proxy).await
        && let Some(addr) = addrs.next()
    {
        return Some(addr);
    }
    tokio::net::lookup_host((proxy, default_port))
        .await
        .ok()?
        .next()
}

/// Whether `response` is the `487` to an INVITE we cancelled (anything else, such as a
/// `486` that crossed the CANCEL, says more).
fn cancelled_487(rung: &Ringing, response: &Response) -> bool {
    rung.cancelled.is_some() && response.status_code == StatusCode::RequestTerminated
}

fn ok_kind() -> rsipstack::sip::StatusCodeKind {
    rsipstack::sip::StatusCodeKind::Successful
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Waits out the ringing phase: until the INVITE's final response, cancelling on the first
/// 180/183 (`cancel_on_ringing`) or when `ring` has passed, then waiting at most `grace`
/// for the final response to the cancelled INVITE.
async fn ringing(
    dialog: &InviteDialog,
    mut invite: JoinHandle<InviteAsyncResult>,
    states: &mut DialogStateReceiver,
    ring: Duration,
    cancel_on_ringing: bool,
    grace: Duration,
) -> Ringing {
    let deadline = Instant::now() + ring;
    let mut cancelled = None;
    let mut give_up = None;
    let mut heard_back = false;
    let result = loop {
        let mut cancel_now = None;
        tokio::select! {
            joined = &mut invite => {
                heard_back |= matches!(joined, Ok(Ok((_, Some(_)))));
                break match joined {
                    Ok(r) => Some(r),
                    Err(_) => Some(Err(rsipstack::Error::Error("INVITE task ended".into()))),
                };
            }
            Some(state) = states.recv() => match state {
                DialogState::Trying(_) => heard_back = true,
                DialogState::Early(_, response) => {
                    heard_back = true;
                    let rings = matches!(
                        response.status_code,
                        StatusCode::Ringing | StatusCode::SessionProgress
                    );
                    if rings && cancel_on_ringing && cancelled.is_none() {
                        tracing::debug!(status = response.status_code.code(), "ringing; cancelling");
                        cancel_now = Some(Cancelled::OnRinging);
                    }
                }
                _ => {}
            },
            () = tokio::time::sleep_until(deadline), if cancelled.is_none() => {
                tracing::debug!("ring limit reached; cancelling");
                cancel_now = Some(Cancelled::OnTimeout);
            }
            () = sleep_until_some(give_up) => break None,
        }
        if let Some(why) = cancel_now {
            cancelled = Some(why);
            give_up = Some(Instant::now() + grace);
            // CANCEL is its own transaction; rsipstack defers it until a provisional
            // response if none came yet (RFC 3261 §9.1).
            let dialog = dialog.clone();
            tokio::spawn(async move {
                if let Err(e) = dialog.cancel().await {
                    tracing::debug!(error = %stack_error(&e), "CANCEL failed");
                }
            });
        }
    };
    Ringing {
        result,
        cancelled,
        heard_back,
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_map_to_busy_no_answer_or_failed() {
        assert_eq!(
            Outcome::from_status(&StatusCode::BusyHere),
            Outcome::Busy("486 Busy Here".into())
        );
        assert!(matches!(
            Outcome::from_status(&StatusCode::BusyEverywhere),
            Outcome::Busy(_)
        ));
        assert!(matches!(
            Outcome::from_status(&StatusCode::Decline),
            Outcome::Busy(_)
        ));
        assert!(matches!(
            Outcome::from_status(&StatusCode::TemporarilyUnavailable),
            Outcome::NoAnswer(_)
        ));
        assert!(matches!(
            Outcome::from_status(&StatusCode::RequestTimeout),
            Outcome::NoAnswer(_)
        ));
        assert!(matches!(
            Outcome::from_status(&StatusCode::NotFound),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            Outcome::from_status(&StatusCode::Forbidden),
            Outcome::Failed(_)
        ));
    }

    #[tokio::test]
    async fn the_trunk_port_defaults_to_5060() {
        assert_eq!(
            resolve("127.0.0.1:5070", 5060).await,
            Some("127.0.0.1:5070".parse().unwrap())
        );
        assert_eq!(
            resolve("127.0.0.1", 5060).await,
            Some("127.0.0.1:5060".parse().unwrap())
        );
        assert_eq!(
            resolve("[::1]:5080", 5060).await,
            Some("[::1]:5080".parse().unwrap())
        );
        assert_eq!(
            resolve("127.0.0.1", 5061).await,
            Some("127.0.0.1:5061".parse().unwrap())
        );
    }

    #[test]
    fn billable_seconds_round_up_to_at_least_one() {
        assert_eq!(billable(Duration::from_millis(3)), 1);
        assert_eq!(billable(Duration::from_millis(1000)), 1);
        assert_eq!(billable(Duration::from_millis(1001)), 2);
        assert_eq!(billable(Duration::ZERO), 1);
    }
}
