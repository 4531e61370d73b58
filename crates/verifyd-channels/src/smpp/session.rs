//! The background session task: connect, `bind_transceiver`, serve incoming PDUs (receipts,
//! the SMSC's unbind), and reconnect with exponential back-off.
//!
//! The task owns the only [`watch::Sender`] of the session state; senders read the bound
//! [`Client`] from it and talk to rusmppc directly, so the task is not on the submit path.
//! rusmppc itself sends `enquire_link` on a timer, answers the SMSC's `enquire_link`, and closes
//! the connection when an `enquire_link_resp` is missing; the task notices through the end of
//! the event stream.

use std::pin::Pin;
use std::time::Duration;

use rusmpp::pdus::{BindTransceiver, DeliverSm, DeliverSmResp};
use rusmpp::values::MessageType;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use rusmppc::{Client, ConnectionBuilder, Event};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};

use super::receipt::{self, MessageIdFormat};
use super::{Endpoint, status_name};
use crate::{Receipt, ReceiptSender};

/// The events of one connection.
type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// What senders see of the session.
#[derive(Debug, Clone)]
pub(crate) enum SessionState {
    /// Connecting or binding.
    Connecting,
    /// Bound; submits go through this client.
    Bound(Client),
    /// The last bind was refused with this status.
    BindRejected(String),
    /// Disconnected, waiting to reconnect.
    Down,
    /// Shut down for good.
    Stopped,
}

/// Why a session ended.
enum Ended {
    /// Shutdown was requested (or the channel dropped).
    Shutdown,
    /// The connection was lost or the SMSC unbound.
    Lost(String),
}

/// Why a connect-and-bind attempt failed.
enum BindFailure {
    /// The SMSC answered the bind with an error status.
    Rejected(String),
    /// Anything else (refused connection, TLS, timeout).
    Other(String),
}

/// Everything the task needs; built by `SmppChannel::connect`.
pub(crate) struct SessionTask {
    /// Channel name, for logs and receipts.
    pub(crate) name: String,
    /// Host and port.
    pub(crate) endpoint: Endpoint,
    /// The TLS connector and server name for `smpps://`.
    pub(crate) tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// The bind PDU (holds the password; never logged).
    pub(crate) bind: BindTransceiver,
    /// Our `enquire_link` period.
    pub(crate) enquire_link_interval: Duration,
    /// Response timeout for every request, and the connect timeout.
    pub(crate) response_timeout: Duration,
    /// First reconnect delay.
    pub(crate) reconnect_min: Duration,
    /// Longest reconnect delay.
    pub(crate) reconnect_max: Duration,
    /// How receipt ids are normalised.
    pub(crate) message_ids: MessageIdFormat,
    /// Published session state.
    pub(crate) state: watch::Sender<SessionState>,
    /// `true` (or the sender dropped) means stop.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Where receipts go.
    pub(crate) receipts: ReceiptSender,
}

/// Resolves when shutdown is requested or every channel handle is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

impl SessionTask {
    /// Runs until shutdown.
    pub(crate) async fn run(mut self) {
        let mut backoff = self.reconnect_min;
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.state.send_replace(SessionState::Connecting);
            let attempt = tokio::select! {
                attempt = self.connect_and_bind() => attempt,
                () = stopped(&mut shutdown) => break,
            };
            match attempt {
                Ok((client, events)) => {
                    tracing::info!(channel = %self.name, "SMPP session bound");
                    self.state.send_replace(SessionState::Bound(client.clone()));
                    let since = Instant::now();
                    let ended = self.serve(&client, events).await;
                    self.state.send_replace(SessionState::Down);
                    match ended {
                        Ended::Shutdown => {
                            self.unbind(&client).await;
                            break;
                        }
                        Ended::Lost(reason) => {
                            // Close our side too (no-op when the connection is already gone).
                            let _ = client.close().await;
                            if since.elapsed() >= self.reconnect_max {
                                backoff = self.reconnect_min;
                            }
                            tracing::warn!(
                                channel = %self.name,
                                %reason,
                                reconnect_in_ms = backoff.as_millis(),
                                "SMPP session lost"
                            );
                        }
                    }
                }
                Err(BindFailure::Rejected(status)) => {
                    tracing::error!(
                        channel = %self.name,
                        %status,
                        reconnect_in_ms = backoff.as_millis(),
                        "SMPP bind rejected"
                    );
                    self.state
                        .send_replace(SessionState::BindRejected(status.clone()));
                }
                Err(BindFailure::Other(reason)) => {
                    tracing::warn!(
                        channel = %self.name,
                        %reason,
                        reconnect_in_ms = backoff.as_millis(),
                        "SMPP connect failed"
                    );
                    self.state.send_replace(SessionState::Down);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stopped(&mut shutdown) => break,
            }
            backoff = backoff.saturating_mul(2).min(self.reconnect_max);
        }
        self.state.send_replace(SessionState::Stopped);
        tracing::info!(channel = %self.name, "SMPP session stopped");
    }

    /// Opens the TCP (and TLS) connection with `TCP_NODELAY`, so pipelined `submit_sm`s are
    /// not held back by Nagle's algorithm waiting for the SMSC's delayed ACKs.
    async fn open(&self) -> Result<(Client, Events), String> {
        let tcp = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY failed: {e}"))?;
        // rusmppc's own connect() would resolve names with its own resolver and leave Nagle
        // on; its connected() takes any stream.
        let builder = ConnectionBuilder::new()
            .enquire_link_interval(self.enquire_link_interval)
            .enquire_link_response_timeout(self.response_timeout)
            .response_timeout(self.response_timeout)
            .disable_interface_version_check();
        match &self.tls {
            None => {
                let (client, events) = builder.connected(tcp);
                Ok((client, Box::pin(events)))
            }
            Some((connector, server_name)) => {
                let tls = connector
                    .connect(server_name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                let (client, events) = builder.connected(tls);
                Ok((client, Box::pin(events)))
            }
        }
    }

    /// Opens the connection and binds.
    async fn connect_and_bind(&self) -> Result<(Client, Events), BindFailure> {
        let (client, events) = match tokio::time::timeout(self.response_timeout, self.open()).await
        {
            Ok(Ok(connected)) => connected,
            Ok(Err(reason)) => return Err(BindFailure::Other(reason)),
            Err(_) => {
                return Err(BindFailure::Other(format!(
                    "connect timed out after {:?}",
                    self.response_timeout
                )));
            }
        };
        match client.bind_transceiver(self.bind.clone()).await {
            Ok(_) => Ok((client, events)),
            Err(error) => {
                let _ = client.close().await;
                Err(match error {
                    rusmppc::error::Error::UnexpectedResponse { response }
                        if response.status() != CommandStatus::EsmeRok =>
                    {
                        BindFailure::Rejected(status_name(response.status()))
                    }
                    other => BindFailure::Other(format!("bind failed: {other}")),
                })
            }
        }
    }

    /// Serves one bound session until it ends.
    async fn serve(&mut self, client: &Client, mut events: Events) -> Ended {
        let mut shutdown = self.shutdown.clone();
        let mut last_error: Option<String> = None;
        loop {
            let event = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return Ended::Shutdown,
                event = events.next() => event,
            };
            match event {
                None => {
                    return Ended::Lost(
                        last_error.unwrap_or_else(|| "connection closed".to_owned()),
                    );
                }
                Some(Event::Error(error)) => {
                    tracing::debug!(channel = %self.name, %error, "SMPP connection error");
                    last_error = Some(error.to_string());
                }
                Some(Event::Incoming(command)) => {
                    if let Some(ended) = self.incoming(client, command).await {
                        return ended;
                    }
                }
            }
        }
    }

    /// Handles one PDU from the SMSC; `Some` ends the session.
    async fn incoming(&self, client: &Client, command: Command) -> Option<Ended> {
        let sequence_number = command.sequence_number();
        let id = command.id();
        match command.pdu() {
            Some(Pdu::DeliverSm(deliver_sm)) => {
                self.deliver_sm(deliver_sm);
                if let Err(error) = client
                    .deliver_sm_resp(sequence_number, DeliverSmResp::default())
                    .await
                {
                    tracing::warn!(channel = %self.name, %error, "deliver_sm_resp not sent");
                }
                None
            }
            Some(Pdu::SubmitSmResp(response)) => {
                // The send that waited for it has returned "outcome unknown" already.
                tracing::warn!(
                    channel = %self.name,
                    sequence_number,
                    status = %status_name(command.status()),
                    message_id = %response.message_id().as_str(),
                    "late submit_sm_resp: a send reported as outcome unknown reached the SMSC"
                );
                None
            }
            _ => match id {
                CommandId::Unbind => {
                    let _ = client.unbind_resp(sequence_number).await;
                    Some(Ended::Lost("the SMSC unbound".to_owned()))
                }
                CommandId::AlertNotification | CommandId::Outbind => None,
                _ if id.is_response() => {
                    tracing::debug!(channel = %self.name, ?id, sequence_number, "unmatched response");
                    None
                }
                _ => {
                    tracing::debug!(channel = %self.name, ?id, "unsupported operation, nacked");
                    let _ = client
                        .status(CommandStatus::EsmeRinvcmdid)
                        .generic_nack(sequence_number)
                        .await;
                    None
                }
            },
        }
    }

    /// Turns a receipt into a [`Receipt`]; ignores mobile-originated messages.
    fn deliver_sm(&self, deliver_sm: &DeliverSm) {
        if deliver_sm.esm_class.message_type != MessageType::ShortMessageContainsMCDeliveryReceipt {
            tracing::debug!(channel = %self.name, "deliver_sm that is not a receipt, ignored");
            return;
        }
        match receipt::parse(deliver_sm, self.message_ids) {
            Ok(parsed) => match parsed.status {
                Some(status) => {
                    tracing::debug!(
                        channel = %self.name,
                        message_id = %parsed.message_id,
                        detail = %parsed.detail,
                        "delivery receipt"
                    );
                    let _ = self.receipts.send(Receipt {
                        channel: self.name.clone(),
                        message_id: parsed.message_id,
                        status,
                        detail: Some(parsed.detail),
                    });
                }
                None => tracing::debug!(
                    channel = %self.name,
                    message_id = %parsed.message_id,
                    detail = %parsed.detail,
                    "intermediate receipt, ignored"
                ),
            },
            Err(error) => tracing::warn!(channel = %self.name, %error, "unusable receipt"),
        }
    }

    /// Unbinds politely and closes.
    async fn unbind(&self, client: &Client) {
        match tokio::time::timeout(self.response_timeout, client.unbind()).await {
            Ok(Ok(())) => tracing::debug!(channel = %self.name, "unbound"),
            Ok(Err(error)) => tracing::debug!(channel = %self.name, %error, "unbind failed"),
            Err(_) => tracing::debug!(channel = %self.name, "unbind timed out"),
        }
        let _ = client.close().await;
    }
}
