//! The storage seam of verifyd.
//!
//! The server talks to storage only through [`Store`]; each backend (SQLite today,
//! PostgreSQL next) is its own crate and keeps its SQL, migrations and row types private.
//! Every backend must pass the same [`conformance`] suite (feature `conformance`), which
//! pins the semantics that matter for correctness: one PENDING verification per number and
//! method, unique references per application, optimistic concurrency on updates, and
//! application isolation.
//!
//! Methods are named by intention (`insert_verification`, `expire_due`), not CRUD.

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use time::OffsetDateTime;
use verifyd_core::{Method, Verification, VerificationId};

/// Which authentication schemes an application accepts at minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinAuth {
    /// Only application-signed requests.
    Signed,
    /// Signed and Basic (the default).
    #[default]
    Basic,
    /// Signed, Basic and Public (key only; requires a callback URL).
    Public,
}

impl MinAuth {
    /// The config/database value.
    pub fn as_str(self) -> &'static str {
        match self {
            MinAuth::Signed => "signed",
            MinAuth::Basic => "basic",
            MinAuth::Public => "public",
        }
    }

    /// Parses the config/database value.
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "signed" => Some(MinAuth::Signed),
            "basic" => Some(MinAuth::Basic),
            "public" => Some(MinAuth::Public),
            _ => None,
        }
    }
}

/// A tenant: its credentials and callback settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Application {
    /// The application key (public identifier, used in `Authorization`).
    pub key: String,
    /// A human name.
    pub name: String,
    /// The secret, canonical base64 (it is the HMAC key once decoded).
    pub secret: String,
    /// Where callbacks go.
    pub callback_url: Option<String>,
    /// Weakest accepted auth scheme.
    pub min_auth: MinAuth,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for Application {
    /// Redacts the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("callback_url", &self.callback_url)
            .field("min_auth", &self.min_auth)
            .finish()
    }
}

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated. `constraint` names it: `reference` (the reference is
    /// taken), `version` (the row changed since it was read), `application` (key exists).
    #[error("conflict on {constraint}")]
    Conflict {
        /// Which rule.
        constraint: &'static str,
    },
    /// Anything else: I/O, corruption, a closed pool.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Shorthand.
pub type StoreResult<T> = Result<T, StoreError>;

/// The storage seam.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new application.
    ///
    /// # Errors
    /// `Conflict { constraint: "application" }` if the key exists.
    async fn insert_application(&self, app: &Application) -> StoreResult<()>;

    /// Inserts or replaces the application with this key (applications from the config file).
    async fn upsert_application(&self, app: &Application) -> StoreResult<()>;

    /// The application with this key.
    async fn application(&self, key: &str) -> StoreResult<Option<Application>>;

    /// Every application, oldest first.
    async fn list_applications(&self) -> StoreResult<Vec<Application>>;

    /// The server-wide secret named `name`; stores `fresh` first if there is none yet, so
    /// every node sharing the store uses the same key.
    async fn server_key(&self, name: &str, fresh: [u8; 32]) -> StoreResult<[u8; 32]>;

    /// Inserts a PENDING verification. In the same transaction, every other PENDING
    /// verification of the same application, method and number is ABORTED (supersession);
    /// those are returned as they are after the change.
    ///
    /// # Errors
    /// `Conflict { constraint: "reference" }` if the application already has a verification
    /// with this reference (nothing is changed then).
    async fn insert_verification(&self, v: &Verification) -> StoreResult<Vec<Verification>>;

    /// Writes back a verification read earlier, if nobody changed it since: compares
    /// `v.version` and bumps it on success.
    ///
    /// # Errors
    /// `Conflict { constraint: "version" }` if the stored version differs (re-read, re-apply).
    async fn update_verification(&self, v: &mut Verification) -> StoreResult<()>;

    /// A verification of `app` by id; another application's verification is `None`.
    async fn verification(
        &self,
        app: &str,
        id: VerificationId,
    ) -> StoreResult<Option<Verification>>;

    /// A verification by id, whatever its application (for unauthenticated device-facing
    /// endpoints that carry their own secret, like the seamless `targetUri`).
    async fn verification_by_id(&self, id: VerificationId) -> StoreResult<Option<Verification>>;

    /// A verification of `app` by its reference.
    async fn verification_by_reference(
        &self,
        app: &str,
        reference: &str,
    ) -> StoreResult<Option<Verification>>;

    /// The verification a report or status by identity applies to: the PENDING one for this
    /// application, method and number if there is one, else the newest.
    async fn verification_by_identity(
        &self,
        app: &str,
        method: Method,
        endpoint: &str,
    ) -> StoreResult<Option<Verification>>;

    /// Marks up to `limit` PENDING verifications whose expiry is at or before `now` as
    /// FAIL / Expired, and returns them as changed.
    async fn expire_due(&self, now: OffsetDateTime, limit: usize)
    -> StoreResult<Vec<Verification>>;

    /// Whether the store answers (for readiness checks).
    async fn ping(&self) -> StoreResult<()>;
}
