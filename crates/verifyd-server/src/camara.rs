//! CAMARA Number Verification as a seamless provider: the OpenID Connect client side of the
//! GSMA Open Gateway flow (CAMARA Security and Interoperability Profile, authorization-code
//! flow over the device's mobile data).
//!
//! 1. The device opens the verification's `targetUri`; verifyd answers 302 to the operator's
//!    `authorization_endpoint` (from OIDC discovery) with `prompt=none`, a PKCE S256
//!    challenge, `state` and `nonce`.
//! 2. The operator authenticates the device by its network and redirects it to
//!    `{public_url}/verification/v1/seamless/callback?code=…&state=…`.
//! 3. verifyd exchanges the code at the `token_endpoint`, authenticating with
//!    `private_key_jwt`, checks the ID token's signature and nonce, and calls
//!    `POST {api_url}/verify` with the number under verification.
//!
//! # Nothing is stored for the flow
//! `state`, `nonce` and the PKCE `code_verifier` are derived with HMAC-SHA256 under a server
//! key (shared by every node through the store) from the verification id and the keyed hash
//! of its secret, so any node can take the callback and no schema change is needed:
//! - `state` = `{id}.{MAC}`: unforgeable, and it names the verification it belongs to;
//! - the verifier never leaves verifyd (only its S256 challenge does), so a code stolen from
//!   the redirect cannot be redeemed by anyone else;
//! - single use follows from the verification: the first conclusive callback makes it final
//!   and a later one is refused before any call to the operator.
//!
//! Nothing here logs tokens, codes, assertions or whole numbers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use verifyd_core::{PhoneNumber, Verification};

/// Scopes requested when the configuration names none: OpenID, exactly one purpose, and
/// the Number Verification `verify` scope.
pub const DEFAULT_SCOPE: &str = "openid dpv:FraudPreventionAndDetection number-verification:verify";

/// Lifetime of a client assertion. The profile caps it at 300 s; a minute covers clock skew
/// and a slow token endpoint.
const ASSERTION_TTL_SECONDS: i64 = 60;

/// How long discovery metadata and the operator's signing keys are trusted before they are
/// fetched again (an unknown `kid` refetches the keys at once).
const METADATA_TTL: Duration = Duration::from_secs(3600);

/// Leeway for the ID token's `exp` and `iat` against verifyd's clock.
const ID_TOKEN_LEEWAY_SECONDS: i64 = 60;

/// Authorization errors meaning the operator could not (or would not) authenticate the
/// device by its network without user interaction: the device is not on that operator's
/// mobile data, or the subscriber refused. The verification ends so the client can fall
/// back to another method.
const NETWORK_REFUSALS: &[&str] = &[
    "login_required",
    "interaction_required",
    "consent_required",
    "account_selection_required",
    "access_denied",
];

/// The `/verify` error that means the token's user was not authenticated by the network.
const NOT_AUTHENTICATED_BY_NETWORK: &str =
    "NUMBER_VERIFICATION.USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK";

/// Whether an authorization `error` (from the callback) ends the verification.
pub fn is_network_refusal(error: &str) -> bool {
    NETWORK_REFUSALS.contains(&error)
}

/// The private key verifyd signs its client assertions with.
#[derive(Clone)]
pub struct ClientKey {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({:?}, kid {:?}, ..)", self.alg, self.kid)
    }
}

impl ClientKey {
    /// Reads a PEM private key: RSA (PKCS#1 or PKCS#8) signs with RS256, a P-256 key in
    /// PKCS#8 (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`) with ES256.
    ///
    /// # Errors
    /// If the PEM is neither, or the key cannot sign (checked by signing once).
    pub fn from_pem(pem: &[u8], kid: Option<String>) -> anyhow::Result<Self> {
        let candidates = [
            (Algorithm::RS256, EncodingKey::from_rsa_pem(pem)),
            (Algorithm::ES256, EncodingKey::from_ec_pem(pem)),
        ];
        for (alg, key) in candidates {
            let Ok(key) = key else { continue };
            // Parsing the PEM does not parse the key itself; a signature does.
            if jsonwebtoken::encode(&Header::new(alg), &serde_json::json!({}), &key).is_ok() {
                return Ok(Self { alg, key, kid });
            }
        }
        bail!(
            "not a usable private key: expected an RSA private key (RS256) or a P-256 private key in PKCS#8 PEM (ES256)"
        )
    }

    /// The signing algorithm (`RS256` or `ES256`).
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// A validated `kind = "camara"` provider configuration.
#[derive(Debug, Clone)]
pub struct CamaraSettings {
    /// The operator's issuer identifier.
    pub issuer: String,
    /// verifyd's client id at the operator.
    pub client_id: String,
    /// Signs the client assertions.
    pub key: ClientKey,
    /// Base of the Number Verification API (`POST {api_url}/verify`).
    pub api_url: String,
    /// Scopes requested.
    pub scope: String,
    /// Timeout of each call to the operator.
    pub timeout: Duration,
}

/// The operator's metadata that verifyd uses (OpenID Connect Discovery 1.0).
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: Option<String>,
}

/// A value with the time it was fetched.
struct Cached<T> {
    value: Arc<T>,
    fetched: Instant,
}

/// A CAMARA provider at run time: settings, an HTTP client, and the operator's discovery
/// document and signing keys, fetched on first use and cached.
pub struct CamaraProvider {
    settings: CamaraSettings,
    http: reqwest::Client,
    /// A tokio `RwLock`: a refresh awaits the network while holding it, so concurrent
    /// callers wait for that one fetch instead of each starting their own.
    discovery: tokio::sync::RwLock<Option<Cached<Discovery>>>,
    jwks: tokio::sync::RwLock<Option<Cached<Vec<Jwk>>>>,
}

impl std::fmt::Debug for CamaraProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CamaraProvider")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How a callback failed without a verdict on the number.
#[derive(Debug, thiserror::Error)]
pub enum CamaraError {
    /// The operator says the token's user was not authenticated by the mobile network
    /// (`403 NUMBER_VERIFICATION.USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK`): the verification
    /// ends.
    #[error("the operator did not authenticate the device by its mobile network")]
    NotAuthenticatedByNetwork,
    /// The token endpoint refused the authorization code (`invalid_grant`: used, expired or
    /// issued for another redirect): this callback cannot succeed, a new flow can.
    #[error("the operator refused the authorization code: {0}")]
    CodeRejected(String),
    /// The operator is unreachable, failing or misconfigured; nothing was decided.
    #[error(transparent)]
    Operator(#[from] anyhow::Error),
}

/// The per-verification flow values, derived (never stored).
pub struct FlowSecrets {
    /// `{verification id}.{MAC}`.
    pub state: String,
    /// Bound into the ID token.
    pub nonce: String,
    /// PKCE verifier (43 characters of base64url).
    pub code_verifier: String,
}

impl FlowSecrets {
    /// Derives the values for `v` under `key`. They depend on the verification's id and
    /// its secret's keyed hash, so they are fixed for its lifetime and useless for any
    /// other verification.
    pub fn derive(key: &[u8; 32], v: &Verification) -> Self {
        let mac = |label: &str| {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            mac.update(b"verifyd/camara/");
            mac.update(label.as_bytes());
            mac.update(&[0]);
            mac.update(v.id.as_bytes());
            mac.update(&v.secret_hash.0);
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        };
        Self {
            state: format!("{}.{}", v.id, mac("state")),
            nonce: mac("nonce"),
            code_verifier: mac("pkce"),
        }
    }

    /// The PKCE S256 challenge of the verifier.
    pub fn code_challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.code_verifier.as_bytes()))
    }

    /// Whether `state` is the one derived for `v` (constant-time).
    pub fn state_matches(&self, state: &str) -> bool {
        self.state.as_bytes().ct_eq(state.as_bytes()).into()
    }
}

/// The verification id a `state` names, if it has the `{id}.{MAC}` shape. The MAC is
/// checked against the loaded verification with [`FlowSecrets::state_matches`].
pub fn state_verification_id(state: &str) -> Option<&str> {
    state.split_once('.').map(|(id, _)| id)
}

/// `private_key_jwt` claims (RFC 7523 §3, OIDC Core §9).
#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

/// A token endpoint answer (RFC 6749 §5.1). No refresh token is expected for Number
/// Verification and none is kept.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    id_token: Option<String>,
}

/// An OAuth error answer (RFC 6749 §5.2).
#[derive(Deserialize)]
struct OAuthError {
    error: String,
}

/// The ID token claims verifyd checks beyond what `jsonwebtoken` validates.
#[derive(Deserialize)]
struct IdTokenClaims {
    nonce: Option<String>,
    exp: i64,
    iat: Option<i64>,
}

/// `POST /verify` request (CAMARA `NumberVerificationRequestBody`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VerifyRequest<'a> {
    phone_number: &'a str,
}

/// `POST /verify` 200 answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifyResponse {
    device_phone_number_verified: bool,
}

/// A CAMARA error body (`ErrorInfo`).
#[derive(Deserialize)]
struct ErrorInfo {
    code: String,
}

impl CamaraProvider {
    /// A provider for `settings`; nothing is fetched until the first verification.
    ///
    /// # Errors
    /// If a URL is not http(s) or the HTTP client cannot be built.
    pub fn new(settings: CamaraSettings) -> anyhow::Result<Self> {
        for (key, url) in [("issuer", &settings.issuer), ("api_url", &settings.api_url)] {
            let parsed =
                reqwest::Url::parse(url).with_context(|| format!("{key} {url:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("{key} {url:?} must be an http(s) URL");
            }
        }
        if !settings.scope.split(' ').any(|s| s == "openid") {
            bail!("scope {:?} must include openid", settings.scope);
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            // Every call is to a known endpoint; a redirect would carry the code or token
            // somewhere unconfigured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("Failed to build the HTTP client")?;
        Ok(Self {
            settings,
            http,
            discovery: tokio::sync::RwLock::new(None),
            jwks: tokio::sync::RwLock::new(None),
        })
    }

    /// Whether `iss` names the configured issuer (ignoring a trailing slash).
    pub fn is_issuer(&self, iss: &str) -> bool {
        iss.trim_end_matches('/') == self.settings.issuer.trim_end_matches('/')
    }

    /// The settings in use.
    pub fn settings(&self) -> &CamaraSettings {
        &self.settings
    }

    /// The authorization request the device is redirected to (OIDC Core §3.1.2.1 with
    /// PKCE; `prompt=none` because Number Verification allows no user interaction).
    ///
    /// # Errors
    /// If discovery fails.
    pub async fn authorization_url(
        &self,
        secrets: &FlowSecrets,
        redirect_uri: &str,
        number: &PhoneNumber,
    ) -> Result<String, CamaraError> {
        let discovery = self.discovery().await?;
        let mut url = reqwest::Url::parse(&discovery.authorization_endpoint)
            .context("The operator's authorization_endpoint is not a URL")?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.settings.scope)
            .append_pair("state", &secrets.state)
            .append_pair("nonce", &secrets.nonce)
            .append_pair("code_challenge", &secrets.code_challenge())
            .append_pair("code_challenge_method", "S256")
            .append_pair("prompt", "none")
            .append_pair("login_hint", &format!("tel:{}", number.as_str()));
        Ok(url.into())
    }

    /// Exchanges `code` and asks the operator whether `number` is the device's number.
    ///
    /// # Errors
    /// [`CamaraError`]: a refusal that ends the verification, a rejected code, or an
    /// operator failure.
    pub async fn verify(
        &self,
        code: &str,
        secrets: &FlowSecrets,
        redirect_uri: &str,
        number: &PhoneNumber,
        correlator: &str,
        now: OffsetDateTime,
    ) -> Result<bool, CamaraError> {
        let discovery = self.discovery().await?;
        let access_token = self
            .exchange(&discovery, code, secrets, redirect_uri, now)
            .await?;
        self.call_verify(&access_token, number, correlator).await
    }

    /// The token request, authenticated with `private_key_jwt`; checks the ID token if one
    /// comes back. Returns the access token.
    async fn exchange(
        &self,
        discovery: &Discovery,
        code: &str,
        secrets: &FlowSecrets,
        redirect_uri: &str,
        now: OffsetDateTime,
    ) -> Result<String, CamaraError> {
        let assertion = self.client_assertion(&discovery.token_endpoint, now)?;
        let response = self
            .http
            .post(&discovery.token_endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &secrets.code_verifier),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ])
            .send()
            .await
            .context("The operator's token endpoint is unreachable")?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .context("Failed to read the token endpoint's answer")?;
        if !status.is_success() {
            let error = serde_json::from_slice::<OAuthError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("HTTP {status}"));
            if error == "invalid_grant" {
                return Err(CamaraError::CodeRejected(error));
            }
            return Err(anyhow!("The operator's token endpoint answered {status} {error}").into());
        }
        let tokens: TokenResponse = serde_json::from_slice(&body)
            .context("The operator's token endpoint answered an unexpected body")?;
        if !tokens.token_type.eq_ignore_ascii_case("bearer") {
            return Err(anyhow!(
                "The operator issued a {:?} token; only Bearer is supported",
                tokens.token_type
            )
            .into());
        }
        if let Some(id_token) = &tokens.id_token {
            self.check_id_token(discovery, id_token, &secrets.nonce, now)
                .await?;
        }
        Ok(tokens.access_token)
    }

    /// A `private_key_jwt` client assertion for the token endpoint.
    fn client_assertion(&self, audience: &str, now: OffsetDateTime) -> anyhow::Result<String> {
        let key = &self.settings.key;
        let mut header = Header::new(key.alg);
        header.kid = key.kid.clone();
        let iat = now.unix_timestamp();
        let claims = AssertionClaims {
            iss: &self.settings.client_id,
            sub: &self.settings.client_id,
            aud: audience,
            jti: uuid::Uuid::new_v4().to_string(),
            iat,
            exp: iat + ASSERTION_TTL_SECONDS,
        };
        jsonwebtoken::encode(&header, &claims, &key.key)
            .context("Failed to sign the client assertion")
    }

    /// Checks the ID token: signature by a key from the operator's `jwks_uri`, issuer,
    /// audience, expiry and our nonce (OIDC Core §3.1.3.7).
    async fn check_id_token(
        &self,
        discovery: &Discovery,
        id_token: &str,
        nonce: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let header = jsonwebtoken::decode_header(id_token).context("The ID token is malformed")?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            bail!(
                "The ID token is signed with {:?}, which is not accepted",
                header.alg
            );
        }
        let jwks_uri = discovery.jwks_uri.as_deref().ok_or_else(|| {
            anyhow!("The operator returned an ID token but publishes no jwks_uri")
        })?;
        let jwk = match self.find_jwk(jwks_uri, &header, false).await? {
            Some(jwk) => jwk,
            // A key we have not seen: the operator may have rotated its keys.
            None => self
                .find_jwk(jwks_uri, &header, true)
                .await?
                .ok_or_else(|| anyhow!("No key in the operator's JWKS verifies the ID token"))?,
        };
        let key = DecodingKey::from_jwk(&jwk).context("The operator's JWK is unusable")?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&discovery.issuer]);
        validation.set_audience(&[&self.settings.client_id]);
        // Time is checked below against verifyd's clock, not the system's.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss", "aud", "sub", "exp"]);
        let claims = jsonwebtoken::decode::<IdTokenClaims>(id_token, &key, &validation)
            .context("The ID token does not verify")?
            .claims;
        let now = now.unix_timestamp();
        if claims.exp + ID_TOKEN_LEEWAY_SECONDS < now {
            bail!("The ID token has expired");
        }
        if claims
            .iat
            .is_some_and(|iat| iat - ID_TOKEN_LEEWAY_SECONDS > now)
        {
            bail!("The ID token was issued in the future");
        }
        let matches = claims
            .nonce
            .as_deref()
            .is_some_and(|n| bool::from(n.as_bytes().ct_eq(nonce.as_bytes())));
        if !matches {
            bail!("The ID token's nonce does not match this verification");
        }
        Ok(())
    }

    /// The operator key for `header` (by `kid`, else the only key of a matching type).
    async fn find_jwk(
        &self,
        jwks_uri: &str,
        header: &Header,
        refresh: bool,
    ) -> anyhow::Result<Option<Jwk>> {
        let keys = self.jwks(jwks_uri, refresh).await?;
        let family = |jwk: &Jwk| {
            use jsonwebtoken::jwk::AlgorithmParameters as P;
            matches!(
                (&jwk.algorithm, header.alg),
                (
                    P::RSA(_),
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                ) | (P::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
                    | (P::OctetKeyPair(_), Algorithm::EdDSA)
            )
        };
        let mut candidates = keys.iter().filter(|k| family(k)).filter(|k| {
            k.common
                .public_key_use
                .as_ref()
                .is_none_or(|u| *u == jsonwebtoken::jwk::PublicKeyUse::Signature)
        });
        Ok(match &header.kid {
            Some(kid) => candidates
                .find(|k| k.common.key_id.as_deref() == Some(kid))
                .cloned(),
            None => {
                let first = candidates.next().cloned();
                // Without a kid, only an unambiguous key will do.
                if candidates.next().is_some() {
                    None
                } else {
                    first
                }
            }
        })
    }

    /// The operator's signing keys. Keys of types `jsonwebtoken` cannot read are skipped,
    /// so one exotic key does not hide the others.
    async fn jwks(&self, jwks_uri: &str, refresh: bool) -> anyhow::Result<Arc<Vec<Jwk>>> {
        if !refresh
            && let Some(hit) = self.jwks.read().await.as_ref()
            && hit.fetched.elapsed() < METADATA_TTL
        {
            return Ok(hit.value.clone());
        }
        let mut slot = self.jwks.write().await;
        let body: serde_json::Value = self
            .get_json(jwks_uri)
            .await
            .context("Failed to fetch the operator's JWKS")?;
        let keys = body
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| anyhow!("The operator's JWKS has no keys array"))?
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .collect::<Vec<_>>();
        let keys = Arc::new(keys);
        *slot = Some(Cached {
            value: keys.clone(),
            fetched: Instant::now(),
        });
        Ok(keys)
    }

    /// The operator's discovery document, fetched on first use and then cached.
    async fn discovery(&self) -> anyhow::Result<Arc<Discovery>> {
        if let Some(hit) = self.discovery.read().await.as_ref()
            && hit.fetched.elapsed() < METADATA_TTL
        {
            return Ok(hit.value.clone());
        }
        let mut slot = self.discovery.write().await;
        // Another caller may have fetched it while this one waited for the lock.
        if let Some(hit) = slot.as_ref()
            && hit.fetched.elapsed() < METADATA_TTL
        {
            return Ok(hit.value.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&url).await.with_context(|| {
            format!("OpenID Connect discovery of the CAMARA operator failed ({url})")
        })?;
        // OIDC Discovery §4.3: the document must name the issuer it was fetched for.
        if discovery.issuer.trim_end_matches('/') != self.settings.issuer.trim_end_matches('/') {
            bail!(
                "The discovery document at {url} names issuer {:?}, not the configured {:?}",
                discovery.issuer,
                self.settings.issuer
            );
        }
        let discovery = Arc::new(discovery);
        *slot = Some(Cached {
            value: discovery.clone(),
            fetched: Instant::now(),
        });
        Ok(discovery)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .context("unreachable")?;
        let status = response.status();
        if !status.is_success() {
            bail!("HTTP {status}");
        }
        response.json().await.context("not the expected JSON")
    }

    /// `POST {api_url}/verify` with the plain number.
    async fn call_verify(
        &self,
        access_token: &str,
        number: &PhoneNumber,
        correlator: &str,
    ) -> Result<bool, CamaraError> {
        let url = format!("{}/verify", self.settings.api_url.trim_end_matches('/'));
        let response = self
            .http
            .post(&url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .header("x-correlator", correlator)
            .json(&VerifyRequest {
                phone_number: number.as_str(),
            })
            .send()
            .await
            .context("The Number Verification API is unreachable")?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .context("Failed to read the Number Verification API's answer")?;
        if status.is_success() {
            let answer: VerifyResponse = serde_json::from_slice(&body)
                .context("The Number Verification API answered an unexpected body")?;
            return Ok(answer.device_phone_number_verified);
        }
        let code = serde_json::from_slice::<ErrorInfo>(&body)
            .map(|e| e.code)
            .unwrap_or_default();
        if status == reqwest::StatusCode::FORBIDDEN && code == NOT_AUTHENTICATED_BY_NETWORK {
            return Err(CamaraError::NotAuthenticatedByNetwork);
        }
        Err(anyhow!("The Number Verification API answered {status} {code}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use verifyd_core::{CodeHasher, Method, NewVerification, VerificationId};

    fn verification(id: u128, secret: &str) -> Verification {
        Verification::start(
            NewVerification {
                id: VerificationId(uuid::Uuid::from_u128(id)),
                app: "app".into(),
                method: Method::Seamless,
                identity: PhoneNumber::parse("+46700000001").unwrap(),
                reference: None,
                custom: None,
                secret: secret.into(),
                code_type: None,
                max_attempts: 1,
                ttl: time::Duration::minutes(5),
                price: None,
                locale: None,
            },
            &CodeHasher::new([1; 32]),
            datetime!(2026-11-26 12:00 UTC),
        )
    }

    #[test]
    fn flow_values_are_bound_to_the_verification_and_the_key() {
        let v = verification(1, "token");
        let a = FlowSecrets::derive(&[2; 32], &v);
        assert_eq!(a.state, FlowSecrets::derive(&[2; 32], &v).state);
        assert_eq!(
            state_verification_id(&a.state),
            Some(v.id.to_string().as_str())
        );
        assert!(a.state_matches(&a.state));
        // Another key, another secret, another verification: nothing carries over.
        for other in [
            FlowSecrets::derive(&[3; 32], &v),
            FlowSecrets::derive(&[2; 32], &verification(1, "other")),
            FlowSecrets::derive(&[2; 32], &verification(2, "token")),
        ] {
            assert!(!other.state_matches(&a.state));
            assert_ne!(other.nonce, a.nonce);
            assert_ne!(other.code_verifier, a.code_verifier);
        }
        // RFC 7636 §4.1: 43–128 unreserved characters.
        assert_eq!(a.code_verifier.len(), 43);
        assert_ne!(a.nonce, a.code_verifier);
    }

    #[test]
    fn the_pkce_challenge_is_s256_of_the_verifier() {
        // RFC 7636 Appendix B.
        let s = FlowSecrets {
            state: String::new(),
            nonce: String::new(),
            code_verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
        };
        assert_eq!(
            s.code_challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_non_key_is_refused() {
        assert!(
            ClientKey::from_pem(
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                None
            )
            .is_err()
        );
        assert!(ClientKey::from_pem(b"not pem", None).is_err());
    }
}
