//! Configuration: compiled defaults (`config.default.toml`, which is also the reference
//! documentation), then an optional TOML file, then `VERIFYD_*` environment variables.
//! [`Config`] is plain data; [`Config::settings`] validates it into the runtime
//! [`Settings`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use time::Duration;
use verifyd_core::locale::{CODE_PLACEHOLDER, Templates};
use verifyd_core::{CliRange, Method, Policy, PriceTable};
use verifyd_store::MinAuth;
use verifyd_store_sqlite::Synchronous;

use crate::fraud::{FraudConfig, FraudPolicy, TestNumberConfig};

/// The documented default configuration (`verifyd config default` prints it).
pub const DEFAULT_CONFIG: &str = include_str!("../config.default.toml");

/// The configuration as written.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Listen address.
    pub listen: String,
    /// Public base URL ("" = derived from `listen`).
    pub public_url: String,
    /// `sqlite://PATH`.
    pub database_url: String,
    /// `full` or `normal`.
    pub sqlite_synchronous: String,
    /// Run PostgreSQL migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// PostgreSQL connections per node.
    pub pg_max_connections: usize,
    /// `text` or `json`.
    pub log_format: String,
    /// Bearer token of the admin API ("" = disabled).
    pub admin_token: String,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[callbacks]`.
    pub callbacks: CallbacksConfig,
    /// `[verification]`.
    pub verification: VerificationConfig,
    /// `[flashcall]`.
    pub flashcall: FlashcallConfig,
    /// `[dev_inbox]`.
    pub dev_inbox: DevInboxConfig,
    /// `[delivery]`.
    pub delivery: DeliveryConfig,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// `[channels]`: real delivery channels.
    #[serde(default)]
    pub channels: ChannelsConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[seamless]`.
    pub seamless: SeamlessConfig,
    /// `[fraud]` (defaults for every application).
    pub fraud: FraudConfig,
    /// `[templates.*]`.
    pub templates: TemplatesConfig,
    /// `[pricing]`.
    pub pricing: PricingConfig,
    /// `[[applications]]`.
    #[serde(default)]
    pub applications: Vec<ApplicationConfig>,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthConfig {
    /// Allowed clock difference for signed requests, seconds.
    pub timestamp_skew_seconds: u32,
}

/// `[delivery]`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryConfig {
    /// Send timeout per route.
    pub timeout_ms: u64,
    /// Retryable failures before failover.
    pub max_retries: u32,
    /// Back-off base.
    pub retry_base_ms: u64,
    /// Job lease.
    pub lease_seconds: u64,
    /// Inline wait at start.
    pub inline_wait_ms: u64,
    /// WhatsApp → SMS fallback.
    pub whatsapp_fallback_to_sms: bool,
    /// Run the worker.
    pub worker: bool,
    /// Worker poll period.
    pub poll_interval_ms: u64,
}

/// `[channels]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChannelsConfig {
    /// `[[channels.whatsapp]]`.
    #[serde(default)]
    pub whatsapp: Vec<WhatsappChannelConfig>,
    /// `[[channels.http_sms]]`.
    #[serde(default)]
    pub http_sms: Vec<HttpSmsChannelConfig>,
    /// `[[channels.smpp]]`.
    #[serde(default)]
    pub smpp: Vec<SmppChannelConfig>,
    /// `[[channels.sip]]`.
    #[serde(default)]
    pub sip: Vec<SipChannelConfig>,
}

/// `[[channels.sip]]`: a SIP trunk for flash calls and callouts.
#[derive(Clone, Deserialize)]
pub struct SipChannelConfig {
    /// Channel name.
    pub name: String,
    /// The trunk's SBC or proxy, `host:port`.
    pub proxy: String,
    /// `udp` (default), `tcp` or `tls` (SIP over TLS, port 5061 by default; the trunk's
    /// certificate is always verified).
    pub transport: Option<String>,
    /// TLS: PEM CA bundle for a trunk with a private CA (default: the system bundle).
    pub tls_ca_file: Option<String>,
    /// TLS: the name checked against the trunk's certificate and sent as SNI (default: the
    /// host of `proxy`).
    pub tls_server_name: Option<String>,
    /// TLS: PEM client certificate for mutual TLS (with `tls_client_key`).
    pub tls_client_cert: Option<String>,
    /// TLS: PEM private key of `tls_client_cert`.
    pub tls_client_key: Option<String>,
    /// Domain in From / P-Asserted-Identity.
    pub from_domain: String,
    /// Local SIP address to bind (default 0.0.0.0:5060).
    pub bind: Option<String>,
    /// Digest user.
    pub auth_user: Option<String>,
    /// Digest password.
    pub auth_password: Option<String>,
    /// Calls at once on this trunk.
    pub max_concurrent_calls: Option<usize>,
    /// New calls per second.
    pub calls_per_second: Option<u32>,
    /// Send P-Asserted-Identity and `Privacy: none`.
    pub privacy: Option<bool>,
    /// Media (RTP) address advertised in SDP.
    pub media_ip: Option<String>,
    /// Directory of digit prompts (8 kHz WAV).
    pub prompts_dir: Option<String>,
    /// Caller id for callouts.
    pub callout_cli: Option<String>,
}

/// `[[channels.whatsapp]]`: the WhatsApp Cloud API.
#[derive(Clone, Deserialize)]
pub struct WhatsappChannelConfig {
    /// Channel name (routes refer to it; status webhooks arrive at
    /// `/webhooks/v1/whatsapp/{name}`).
    pub name: String,
    /// The business phone number id.
    pub phone_number_id: String,
    /// System-user access token.
    pub access_token: String,
    /// The approved authentication template.
    pub template_name: String,
    /// Default template language (`en_US`).
    pub language: Option<String>,
    /// Languages the template is approved in.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Graph API base URL.
    pub base_url: Option<String>,
    /// Graph API version.
    pub api_version: Option<String>,
    /// App secret: verifies `X-Hub-Signature-256` on status webhooks.
    pub app_secret: String,
    /// The webhook subscription's verify token (`hub.verify_token`).
    pub verify_token: String,
}

/// `[[channels.http_sms]]`: Sinch SMS, Twilio or Vonage over HTTP.
#[derive(Clone, Deserialize)]
pub struct HttpSmsChannelConfig {
    /// Channel name (delivery reports arrive at `/webhooks/v1/sms/{name}`).
    pub name: String,
    /// `sinch`, `twilio` or `vonage`.
    pub provider: String,
    /// API base URL (the provider's by default).
    pub base_url: Option<String>,
    /// Default sender (alphanumeric or E.164).
    pub from: Option<String>,
    /// Sinch: service plan id.
    pub service_plan_id: Option<String>,
    /// Sinch: API token.
    pub api_token: Option<String>,
    /// Twilio: account SID.
    pub account_sid: Option<String>,
    /// Twilio: auth token (also verifies `X-Twilio-Signature`).
    pub auth_token: Option<String>,
    /// Twilio: messaging service SID instead of `from`.
    pub messaging_service_sid: Option<String>,
    /// Vonage: API key.
    pub api_key: Option<String>,
    /// Vonage: API secret.
    pub api_secret: Option<String>,
}

/// `[[channels.smpp]]`: an SMSC over SMPP 3.4.
#[derive(Clone, Deserialize)]
pub struct SmppChannelConfig {
    /// Channel name.
    pub name: String,
    /// `smpp://host:port` or `smpps://host:port`.
    pub url: String,
    /// Bind system id.
    pub system_id: String,
    /// Bind password.
    pub password: String,
    /// Bind system type.
    #[serde(default)]
    pub system_type: String,
    /// Default sender: alphanumeric sender id or E.164 number.
    pub source: String,
    /// Unanswered submit_sm allowed at once (default 10).
    pub window: Option<usize>,
    /// Submits per second on this bind.
    pub tps: Option<u32>,
}

macro_rules! redacted_debug {
    ($t:ty, $($f:ident),*) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))$(.field(stringify!($f), &self.$f))*.finish_non_exhaustive()
            }
        }
    };
}
redacted_debug!(WhatsappChannelConfig, name, phone_number_id, template_name);
redacted_debug!(HttpSmsChannelConfig, name, provider, base_url);
redacted_debug!(SmppChannelConfig, name, url, system_id);
redacted_debug!(SipChannelConfig, name, proxy, from_domain);

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteConfig {
    /// Name.
    pub name: String,
    /// Methods (empty: all).
    #[serde(default)]
    pub methods: Vec<String>,
    /// E.164 prefixes (empty: all).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// ISO regions (empty: all).
    #[serde(default)]
    pub countries: Vec<String>,
    /// Channel name.
    pub channel: String,
    /// Sender identity.
    pub sender: Option<String>,
}

/// A validated route, before its channel is resolved.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Name.
    pub name: String,
    /// Methods (empty: all).
    pub methods: Vec<Method>,
    /// E.164 prefixes.
    pub prefixes: Vec<String>,
    /// ISO regions.
    pub countries: Vec<String>,
    /// Channel name.
    pub channel: String,
    /// Sender identity.
    pub sender: Option<String>,
}

/// `[seamless]`.
#[derive(Debug, Clone, Deserialize)]
pub struct SeamlessConfig {
    /// Providers in order.
    #[serde(default)]
    pub providers: Vec<SeamlessProviderConfig>,
}

/// `[[seamless.providers]]`.
#[derive(Debug, Clone, Deserialize)]
pub struct SeamlessProviderConfig {
    /// `dev` or `header_enrichment`.
    pub kind: String,
    /// Regions served (empty: all).
    #[serde(default)]
    pub countries: Vec<String>,
    /// Header carrying the MSISDN.
    pub msisdn_header: Option<String>,
    /// CIDRs of the operator's proxies.
    #[serde(default)]
    pub operator_proxies: Vec<String>,
    /// `camara`: the operator's OpenID Connect issuer (discovery at
    /// `{issuer}/.well-known/openid-configuration`).
    pub issuer: Option<String>,
    /// `camara`: verifyd's client id at the operator.
    pub client_id: Option<String>,
    /// `camara`: PEM file with the client's private key (RSA for RS256, or a P-256 PKCS#8
    /// key for ES256) that signs the `private_key_jwt` client assertion.
    pub private_key_file: Option<String>,
    /// `camara`: the `kid` header of the client assertion (the key's id in the JWKS the
    /// operator holds for verifyd).
    pub key_id: Option<String>,
    /// `camara`: base URL of the Number Verification API; verifyd calls `POST {api_url}/verify`.
    pub api_url: Option<String>,
    /// `camara`: scopes requested at the authorization endpoint.
    pub scope: Option<String>,
    /// `camara`: timeout of each call to the operator (discovery, token, verify), seconds.
    pub timeout_seconds: Option<u64>,
}

/// How a seamless verification is completed.
#[derive(Debug, Clone)]
pub enum SeamlessKind {
    /// Opening targetUri completes it.
    Dev,
    /// A trusted operator proxy asserts the number in a header.
    HeaderEnrichment {
        /// The header name.
        header: String,
        /// Where it is trusted from.
        proxies: Vec<ipnet::IpNet>,
    },
    /// CAMARA Number Verification: the device runs the operator's OpenID Connect
    /// authorization-code flow, verifyd asks the operator's API whether the number matches.
    Camara(std::sync::Arc<crate::camara::CamaraProvider>),
}

/// A validated seamless provider.
#[derive(Debug, Clone)]
pub struct SeamlessProvider {
    /// What it does.
    pub kind: SeamlessKind,
    /// Regions served (empty: all).
    pub countries: Vec<String>,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    /// CIDRs of proxies whose `X-Forwarded-For` is trusted.
    pub trusted_proxies: Vec<String>,
}

/// `[callbacks]`.
#[derive(Debug, Clone, Deserialize)]
pub struct CallbacksConfig {
    /// Request-event timeout.
    pub request_timeout_ms: u64,
    /// Per-attempt delivery timeout.
    pub delivery_timeout_ms: u64,
    /// Back-off base.
    pub retry_base_ms: u64,
    /// Back-off cap.
    pub retry_max_seconds: u64,
    /// Dead-letter age.
    pub max_age_seconds: u64,
    /// Deliveries in flight.
    pub concurrency: usize,
    /// Deliveries in flight per application.
    pub per_application: usize,
    /// Worker poll period.
    pub poll_interval_ms: u64,
    /// Loopback callback URLs allowed.
    pub allow_loopback: bool,
    /// Run the worker.
    pub worker: bool,
}

/// Validated callback settings.
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// Request-event timeout.
    pub request_timeout: std::time::Duration,
    /// Per-attempt delivery timeout.
    pub delivery_timeout: std::time::Duration,
    /// Back-off base.
    pub retry_base: Duration,
    /// Back-off cap.
    pub retry_max: Duration,
    /// Dead-letter age.
    pub max_age: Duration,
    /// Deliveries in flight.
    pub concurrency: usize,
    /// Deliveries in flight per application.
    pub per_application: usize,
    /// Worker poll period.
    pub poll_interval: std::time::Duration,
    /// Loopback callback URLs allowed.
    pub allow_loopback: bool,
    /// Run the worker.
    pub worker: bool,
}

/// `[verification]`.
#[derive(Debug, Clone, Deserialize)]
pub struct VerificationConfig {
    /// Code length (4..=10).
    pub code_length: usize,
    /// Default expiry, seconds.
    pub expiry_seconds: u32,
    /// Wrong reports allowed.
    pub max_attempts: u32,
    /// Expiry sweep period, seconds.
    pub sweep_interval_seconds: u32,
    /// Days a final verification stays queryable before it is purged.
    pub retention_days: u32,
}

/// `[flashcall]`.
#[derive(Debug, Clone, Deserialize)]
pub struct FlashcallConfig {
    /// interceptionTimeout.
    pub interception_timeout: u32,
    /// reportTimeout.
    pub report_timeout: u32,
    /// denyCallAfter.
    pub deny_call_after: u32,
    /// dialTimeout.
    pub dial_timeout: u32,
    /// Owned CLI ranges.
    pub cli_ranges: Vec<CliRangeConfig>,
}

/// One CLI range.
#[derive(Debug, Clone, Deserialize)]
pub struct CliRangeConfig {
    /// E.164 prefix.
    pub prefix: String,
    /// Random digits after it.
    pub digits: usize,
}

/// `[dev_inbox]`.
#[derive(Debug, Clone, Deserialize)]
pub struct DevInboxConfig {
    /// Sender id.
    pub sender: String,
    /// Ring size.
    pub capacity: usize,
}

/// `[templates]`.
#[derive(Debug, Clone, Deserialize)]
pub struct TemplatesConfig {
    /// SMS texts.
    pub sms: TemplateSet,
    /// WhatsApp texts.
    pub whatsapp: TemplateSet,
    /// Callout scripts.
    pub callout: TemplateSet,
}

/// Templates of one channel.
#[derive(Debug, Clone, Deserialize)]
pub struct TemplateSet {
    /// Fallback locale.
    pub default_locale: String,
    /// Locale → template.
    pub locales: BTreeMap<String, String>,
}

/// `[pricing]`.
#[derive(Debug, Clone, Deserialize)]
pub struct PricingConfig {
    /// ISO 4217.
    pub currency: String,
    /// Per started minute of a call.
    pub termination_per_minute: f64,
    /// Method → price.
    pub default: BTreeMap<String, f64>,
    /// Region → method → price.
    #[serde(default)]
    pub countries: BTreeMap<String, BTreeMap<String, f64>>,
}

/// `[[applications]]`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApplicationConfig {
    /// Name.
    pub name: String,
    /// Key.
    pub key: String,
    /// Base64 secret.
    pub secret: String,
    /// Callback URL.
    pub callback_url: Option<String>,
    /// `signed` | `basic` | `public`.
    pub min_auth: Option<String>,
    /// Override of `[verification].code_length`.
    pub code_length: Option<usize>,
    /// Override of `[verification].expiry_seconds`.
    pub expiry_seconds: Option<u32>,
    /// Override of `[verification].max_attempts`.
    pub max_attempts: Option<u32>,
    /// Callback URL may resolve to private addresses.
    #[serde(default)]
    pub allow_private_callbacks: bool,
    /// Allow when the request event fails.
    #[serde(default)]
    pub callback_fail_open: bool,
    /// Overrides of `[fraud]`.
    #[serde(default)]
    pub fraud: Option<FraudConfig>,
    /// Test numbers.
    #[serde(default)]
    pub test_numbers: Vec<TestNumberConfig>,
}

/// The validated runtime settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Public base URL, no trailing slash.
    pub public_url: String,
    /// Database URL.
    pub database_url: String,
    /// SQLite durability.
    pub sqlite_synchronous: Synchronous,
    /// Run PostgreSQL migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// PostgreSQL connections per node.
    pub pg_max_connections: usize,
    /// JSON logs.
    pub json_logs: bool,
    /// Signed-request timestamp tolerance.
    pub timestamp_skew: Duration,
    /// Admin API bearer token, if enabled.
    pub admin_token: Option<String>,
    /// Callback delivery.
    pub callbacks: CallbackSettings,
    /// Expiry sweep period.
    pub sweep_interval: std::time::Duration,
    /// How long final verifications stay before they are purged.
    pub retention: Duration,
    /// Proxies whose `X-Forwarded-For` is trusted.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Fraud rules for applications without their own.
    pub default_fraud: FraudPolicy,
    /// Per-application fraud rules (by key).
    pub app_fraud: HashMap<String, FraudPolicy>,
    /// Policy for applications without overrides.
    pub default_policy: Policy,
    /// Per-application policies (by key).
    pub app_policies: HashMap<String, Policy>,
    /// Owned CLI ranges.
    pub cli_ranges: Vec<CliRange>,
    /// Delivery settings.
    pub delivery: crate::delivery::DeliverySettings,
    /// Routes (empty: everything to the dev inbox).
    pub routes: Vec<RouteSpec>,
    /// Real channels to build.
    pub channels: ChannelsConfig,
    /// Seamless providers in order.
    pub seamless: Vec<SeamlessProvider>,
    /// Dev inbox sender id.
    pub inbox_sender: String,
    /// Dev inbox ring size.
    pub inbox_capacity: usize,
    /// SMS templates.
    pub sms_templates: Templates,
    /// WhatsApp templates.
    pub whatsapp_templates: Templates,
    /// Callout scripts.
    pub callout_templates: Templates,
    /// Prices.
    pub prices: PriceTable,
    /// Applications declared in the file.
    pub applications: Vec<DeclaredApp>,
}

/// A validated `[[applications]]` entry.
#[derive(Debug, Clone)]
pub struct DeclaredApp {
    /// Name.
    pub name: String,
    /// Key.
    pub key: String,
    /// Base64 secret (validated).
    pub secret: String,
    /// Callback URL.
    pub callback_url: Option<String>,
    /// Minimum auth.
    pub min_auth: MinAuth,
    /// Callback URL may resolve to private addresses.
    pub allow_private_callbacks: bool,
    /// Allow when the request event fails.
    pub callback_fail_open: bool,
}

impl Config {
    /// Loads defaults, then `file` if given, then `VERIFYD_*` variables.
    ///
    /// # Errors
    /// If the file is missing or any value has the wrong type.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new().merge(Toml::string(DEFAULT_CONFIG));
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("VERIFYD_").split("__"));
        figment
            .extract()
            .context("Failed to read the configuration")
    }

    /// Parses a TOML string over the defaults (no environment); for tests.
    ///
    /// # Errors
    /// If any value has the wrong type.
    pub fn from_toml(toml: &str) -> anyhow::Result<Self> {
        Figment::new()
            .merge(Toml::string(DEFAULT_CONFIG))
            .merge(Toml::string(toml))
            .extract()
            .context("Failed to read the configuration")
    }

    /// Validates everything into [`Settings`].
    ///
    /// # Errors
    /// A message naming the offending key.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        if self.delivery.lease_seconds.saturating_mul(1000) <= self.delivery.timeout_ms {
            bail!(
                "[delivery] lease_seconds = {} must be longer than timeout_ms = {} (a job's lease covers one send)",
                self.delivery.lease_seconds,
                self.delivery.timeout_ms
            );
        }
        let listen: SocketAddr = self.listen.parse().with_context(|| {
            format!(
                "listen = {:?} is not an address like 127.0.0.1:8080",
                self.listen
            )
        })?;
        let public_url = if self.public_url.trim().is_empty() {
            format!("http://{listen}")
        } else {
            self.public_url.trim().trim_end_matches('/').to_string()
        };
        let sqlite_synchronous = match self.sqlite_synchronous.to_ascii_lowercase().as_str() {
            "full" => Synchronous::Full,
            "normal" => Synchronous::Normal,
            other => bail!("sqlite_synchronous = {other:?}: expected \"full\" or \"normal\""),
        };
        let json_logs = match self.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => bail!("log_format = {other:?}: expected \"text\" or \"json\""),
        };
        let v = &self.verification;
        let default_policy = policy(
            &self.flashcall,
            v.code_length,
            v.expiry_seconds,
            v.max_attempts,
            "[verification]",
        )?;
        let mut app_policies = HashMap::new();
        let mut app_fraud = HashMap::new();
        let default_fraud = self.fraud.policy(&[], "[fraud]")?;
        let mut applications = Vec::new();
        for app in &self.applications {
            let label = format!("[[applications]] {:?}", app.name);
            if app.key.trim().is_empty() {
                bail!("{label}: key is empty");
            }
            verifyd_api::signing::decode_secret(&app.secret)
                .map_err(|_| anyhow::anyhow!("{label}: secret is not valid base64"))?;
            let min_auth = match &app.min_auth {
                None => MinAuth::default(),
                Some(m) => MinAuth::parse(m).ok_or_else(|| {
                    anyhow::anyhow!("{label}: min_auth = {m:?}: expected signed, basic or public")
                })?,
            };
            app_policies.insert(
                app.key.clone(),
                policy(
                    &self.flashcall,
                    app.code_length.unwrap_or(v.code_length),
                    app.expiry_seconds.unwrap_or(v.expiry_seconds),
                    app.max_attempts.unwrap_or(v.max_attempts),
                    &label,
                )?,
            );
            if app.fraud.is_some() || !app.test_numbers.is_empty() {
                let merged = self.fraud.merged(&app.fraud.clone().unwrap_or_default());
                app_fraud.insert(
                    app.key.clone(),
                    merged.policy(&app.test_numbers, &format!("{label} fraud"))?,
                );
            }
            let callback_url = app.callback_url.clone().filter(|u| !u.trim().is_empty());
            if let Some(url) = &callback_url {
                check_callback_url(url)
                    .map_err(|e| anyhow::anyhow!("{label}: callback_url: {e}"))?;
            }
            if min_auth == MinAuth::Public && callback_url.is_none() {
                bail!(
                    "{label}: min_auth = \"public\" needs a callback_url (the backend must approve every device-initiated start)"
                );
            }
            applications.push(DeclaredApp {
                name: app.name.clone(),
                key: app.key.clone(),
                secret: app.secret.clone(),
                callback_url,
                min_auth,
                allow_private_callbacks: app.allow_private_callbacks,
                callback_fail_open: app.callback_fail_open,
            });
        }
        let cli_ranges = self
            .flashcall
            .cli_ranges
            .iter()
            .map(|r| CliRange::new(&r.prefix, r.digits))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("[flashcall] cli_ranges: {e}"))?;
        if cli_ranges.is_empty() {
            bail!("[flashcall] cli_ranges: at least one range is needed");
        }
        Ok(Settings {
            listen,
            public_url,
            database_url: self.database_url.clone(),
            sqlite_synchronous,
            migrate_on_start: self.migrate_on_start,
            pg_max_connections: self.pg_max_connections.max(1),
            json_logs,
            timestamp_skew: Duration::seconds(i64::from(self.auth.timestamp_skew_seconds)),
            admin_token: Some(self.admin_token.trim().to_string()).filter(|t| !t.is_empty()),
            callbacks: callbacks(&self.callbacks)?,
            sweep_interval: std::time::Duration::from_secs(u64::from(
                v.sweep_interval_seconds.max(1),
            )),
            retention: Duration::days(i64::from(v.retention_days.max(1))),
            trusted_proxies: self
                .http
                .trusted_proxies
                .iter()
                .map(|c| {
                    c.parse::<ipnet::IpNet>()
                        .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| anyhow::anyhow!("[http] trusted_proxies: {c:?} is not a CIDR"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            default_fraud,
            app_fraud,
            default_policy,
            app_policies,
            cli_ranges,
            delivery: crate::delivery::DeliverySettings {
                timeout: std::time::Duration::from_millis(self.delivery.timeout_ms.max(1)),
                max_retries: self.delivery.max_retries,
                retry_base: Duration::milliseconds(
                    i64::try_from(self.delivery.retry_base_ms.max(1)).unwrap_or(1000),
                ),
                lease: Duration::seconds(
                    i64::try_from(self.delivery.lease_seconds.max(1)).unwrap_or(60),
                ),
                inline_wait: std::time::Duration::from_millis(self.delivery.inline_wait_ms),
                whatsapp_fallback_to_sms: self.delivery.whatsapp_fallback_to_sms,
                worker: self.delivery.worker,
                poll_interval: std::time::Duration::from_millis(
                    self.delivery.poll_interval_ms.max(10),
                ),
            },
            routes: self
                .routes
                .iter()
                .map(route_spec)
                .collect::<anyhow::Result<Vec<_>>>()?,
            channels: self.channels.clone(),
            seamless: self
                .seamless
                .providers
                .iter()
                .map(seamless_provider)
                .collect::<anyhow::Result<Vec<_>>>()?,
            inbox_sender: self.dev_inbox.sender.clone(),
            inbox_capacity: self.dev_inbox.capacity,
            sms_templates: templates(&self.templates.sms, "[templates.sms]")?,
            whatsapp_templates: templates(&self.templates.whatsapp, "[templates.whatsapp]")?,
            callout_templates: templates(&self.templates.callout, "[templates.callout]")?,
            prices: prices(&self.pricing)?,
            applications,
        })
    }
}

fn policy(
    flash: &FlashcallConfig,
    code_length: usize,
    expiry_seconds: u32,
    max_attempts: u32,
    label: &str,
) -> anyhow::Result<Policy> {
    if !verifyd_core::policy::CODE_LENGTH_RANGE.contains(&code_length) {
        bail!("{label}: code_length = {code_length}: must be 4..=10");
    }
    if expiry_seconds == 0
        || i64::from(expiry_seconds) > verifyd_core::policy::MAX_EXPIRY.whole_seconds()
    {
        bail!("{label}: expiry_seconds = {expiry_seconds}: must be 1..=86400");
    }
    if max_attempts == 0 {
        bail!("{label}: max_attempts must be at least 1");
    }
    for (name, value) in [
        ("interception_timeout", flash.interception_timeout),
        ("dial_timeout", flash.dial_timeout),
    ] {
        if !verifyd_core::policy::FLASHCALL_TIMEOUT_RANGE.contains(&value) {
            bail!("[flashcall] {name} = {value}: must be 5..=120");
        }
    }
    Ok(Policy {
        code_length,
        expiry: Duration::seconds(i64::from(expiry_seconds)),
        max_attempts,
        flashcall_interception_timeout: flash.interception_timeout,
        flashcall_report_timeout: flash.report_timeout.max(flash.interception_timeout),
        flashcall_deny_call_after: flash.deny_call_after,
        flashcall_dial_timeout: flash.dial_timeout,
    })
}

fn cidr(value: &str, label: &str) -> anyhow::Result<ipnet::IpNet> {
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| anyhow::anyhow!("{label}: {value:?} is not a CIDR"))
}

fn seamless_provider(p: &SeamlessProviderConfig) -> anyhow::Result<SeamlessProvider> {
    let label = "[[seamless.providers]]";
    let kind = match p.kind.as_str() {
        "dev" => SeamlessKind::Dev,
        "header_enrichment" => {
            let proxies = p
                .operator_proxies
                .iter()
                .map(|c| cidr(c, label))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if proxies.is_empty() {
                bail!(
                    "{label} header_enrichment: operator_proxies must list the operator's proxy addresses"
                );
            }
            SeamlessKind::HeaderEnrichment {
                header: p.msisdn_header.clone().unwrap_or_else(|| "X-MSISDN".into()),
                proxies,
            }
        }
        "camara" => {
            let required = |value: &Option<String>, key: &str| {
                value
                    .as_deref()
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("{label} camara: {key} is required"))
            };
            let key_file = required(&p.private_key_file, "private_key_file")?;
            let pem = std::fs::read(&key_file).with_context(|| {
                format!("{label} camara: cannot read private_key_file {key_file:?}")
            })?;
            let settings = crate::camara::CamaraSettings {
                issuer: required(&p.issuer, "issuer")?,
                client_id: required(&p.client_id, "client_id")?,
                key: crate::camara::ClientKey::from_pem(&pem, p.key_id.clone())
                    .with_context(|| format!("{label} camara: private_key_file {key_file:?}"))?,
                api_url: required(&p.api_url, "api_url")?,
                scope: p
                    .scope
                    .clone()
                    .unwrap_or_else(|| crate::camara::DEFAULT_SCOPE.to_string()),
                timeout: std::time::Duration::from_secs(p.timeout_seconds.unwrap_or(10).max(1)),
            };
            SeamlessKind::Camara(std::sync::Arc::new(
                crate::camara::CamaraProvider::new(settings)
                    .with_context(|| format!("{label} camara"))?,
            ))
        }
        other => bail!("{label}: kind {other:?} (expected dev, header_enrichment or camara)"),
    };
    Ok(SeamlessProvider {
        kind,
        countries: p.countries.iter().map(|c| c.to_ascii_uppercase()).collect(),
    })
}

fn route_spec(r: &RouteConfig) -> anyhow::Result<RouteSpec> {
    let label = format!("[[routes]] {:?}", r.name);
    if r.name.trim().is_empty() {
        bail!("[[routes]]: every route needs a name");
    }
    let methods = r
        .methods
        .iter()
        .map(|m| Method::parse(m).ok_or_else(|| anyhow::anyhow!("{label}: unknown method {m:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for p in &r.prefixes {
        if !p.starts_with('+') || !p[1..].bytes().all(|b| b.is_ascii_digit()) || p.len() < 2 {
            bail!("{label}: prefix {p:?} must be + and digits");
        }
    }
    Ok(RouteSpec {
        name: r.name.clone(),
        methods,
        prefixes: r.prefixes.clone(),
        countries: r.countries.iter().map(|c| c.to_ascii_uppercase()).collect(),
        channel: r.channel.clone(),
        sender: r.sender.clone().filter(|s| !s.trim().is_empty()),
    })
}

/// Checks that a callback URL is an absolute http(s) URL with a host.
///
/// # Errors
/// What is wrong with it.
pub fn check_callback_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

fn callbacks(c: &CallbacksConfig) -> anyhow::Result<CallbackSettings> {
    if c.concurrency == 0 || c.per_application == 0 {
        bail!("[callbacks] concurrency and per_application must be at least 1");
    }
    if c.request_timeout_ms == 0 || c.delivery_timeout_ms == 0 {
        bail!("[callbacks] timeouts must be at least 1 ms");
    }
    let secs = |v: u64| Duration::seconds(i64::try_from(v).unwrap_or(i64::MAX));
    Ok(CallbackSettings {
        request_timeout: std::time::Duration::from_millis(c.request_timeout_ms),
        delivery_timeout: std::time::Duration::from_millis(c.delivery_timeout_ms),
        retry_base: Duration::milliseconds(i64::try_from(c.retry_base_ms.max(1)).unwrap_or(1000)),
        retry_max: secs(c.retry_max_seconds.max(1)),
        max_age: secs(c.max_age_seconds.max(1)),
        concurrency: c.concurrency,
        per_application: c.per_application,
        poll_interval: std::time::Duration::from_millis(c.poll_interval_ms.max(10)),
        allow_loopback: c.allow_loopback,
        worker: c.worker,
    })
}

fn templates(set: &TemplateSet, label: &str) -> anyhow::Result<Templates> {
    for (locale, t) in &set.locales {
        if !t.contains(CODE_PLACEHOLDER) {
            bail!("{label} {locale:?}: template must contain {CODE_PLACEHOLDER}");
        }
    }
    Ok(Templates {
        default_locale: set.default_locale.clone(),
        by_locale: set.locales.clone(),
    })
}

fn method_prices(map: &BTreeMap<String, f64>, label: &str) -> anyhow::Result<HashMap<Method, f64>> {
    map.iter()
        .map(|(m, p)| {
            let method =
                Method::parse(m).ok_or_else(|| anyhow::anyhow!("{label}: unknown method {m:?}"))?;
            if !p.is_finite() || *p < 0.0 {
                bail!("{label}.{m}: price must be a non-negative number");
            }
            Ok((method, *p))
        })
        .collect()
}

fn prices(p: &PricingConfig) -> anyhow::Result<PriceTable> {
    if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        bail!(
            "[pricing] currency = {:?}: expected an ISO 4217 code like EUR",
            p.currency
        );
    }
    let mut countries = HashMap::new();
    for (region, map) in &p.countries {
        countries.insert(
            region.to_ascii_uppercase(),
            method_prices(map, &format!("[pricing.countries.{region}]"))?,
        );
    }
    Ok(PriceTable {
        currency: p.currency.clone(),
        default: method_prices(&p.default, "[pricing.default]")?,
        countries,
        termination_per_minute: p.termination_per_minute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid() {
        let s = Config::from_toml("").unwrap().settings().unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.public_url, "http://127.0.0.1:8080");
        assert_eq!(
            s.default_policy,
            Policy {
                flashcall_report_timeout: 120,
                flashcall_interception_timeout: 60,
                ..Policy::default()
            }
        );
        assert!(s.applications.is_empty());
        assert_eq!(s.sms_templates.default_locale, "en-US");
    }

    #[test]
    fn applications_get_their_own_policy() {
        let s = Config::from_toml(
            r#"
            [[applications]]
            name = "a"
            key = "k"
            secret = "YXBwU2VjcmV0"
            min_auth = "signed"
            code_length = 8
            "#,
        )
        .unwrap()
        .settings()
        .unwrap();
        assert_eq!(s.app_policies["k"].code_length, 8);
        assert_eq!(s.applications[0].min_auth, MinAuth::Signed);
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |t: &str| {
            Config::from_toml(t)
                .unwrap()
                .settings()
                .unwrap_err()
                .to_string()
        };
        assert!(err("[verification]\ncode_length = 3").contains("code_length"));
        assert!(err("listen = \"nope\"").contains("listen"));
        assert!(
            err("[[applications]]\nname=\"a\"\nkey=\"k\"\nsecret=\"not base64!\"")
                .contains("base64")
        );
        assert!(err("[templates.sms.locales]\n\"xx\" = \"no code\"").contains("{{CODE}}"));
        assert!(
            err("[flashcall]\ncli_ranges = [{ prefix = \"46\", digits = 4 }]")
                .contains("cli_ranges")
        );
        assert!(
            err("[delivery]\ntimeout_ms = 10000\nlease_seconds = 10").contains("lease_seconds")
        );
    }
}
