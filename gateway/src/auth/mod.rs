//! External identity: the `authorization: Bearer <jwt>` a client sends is verified here and
//! mapped to the internal [`Caller`] the services trust (ARCHITECTURE §4).
//!
//! Every check that can be made without cryptography comes first (size, shape, algorithm
//! allowlist, issuer, key id), so garbage costs microseconds. A token is accepted only with
//! a signature by a known key of its issuer, in the algorithm that key is for, with `exp`,
//! `iss` and `aud` present and right and `nbf` (when present) passed, within a small leeway.

mod cache;
mod keys;
pub mod signin;

use crate::config::AuthConfig;
use base64::Engine as _;
use cache::TokenCache;
use codingagent_kernel::identity::Caller;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use keys::KeyRing;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// File name of the development key pair's public half (`deploy/config/dev/`); production
/// refuses a static key read from a file of this name.
pub const DEV_PUBLIC_KEY_FILE: &str = "gateway-dev-signing.pub.pem";

/// Why a request carries no acceptable identity. Every variant is `UNAUTHENTICATED` to the
/// client with the same message; the variants exist for logs, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("the authorization header is not `Bearer <token>`")]
    WrongScheme,
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("unknown issuer")]
    Issuer,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("signature does not verify")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("wrong audience")]
    Audience,
    #[error("a required claim is missing")]
    MissingClaim,
    #[error("the subject claim is not a usable user id")]
    Subject,
}

impl AuthError {
    /// A stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::WrongScheme => "wrong_scheme",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::Issuer => "issuer",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Audience => "audience",
            Self::MissingClaim => "missing_claim",
            Self::Subject => "subject",
        }
    }
}

#[derive(Debug)]
struct Issuer {
    audiences: Vec<String>,
    keys: KeyRing,
}

/// Verifies external tokens.
#[derive(Debug)]
pub struct Authenticator {
    issuers: HashMap<String, Arc<Issuer>>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    max_token_bytes: usize,
    subject_claim: String,
    roles_path: Vec<String>,
    role_map: BTreeMap<String, String>,
    cache: TokenCache,
    jwks_refresh: Duration,
}

impl Authenticator {
    /// Loads the static keys (and the development key when sign-in is on); JWKS are fetched
    /// by [`Self::refresh_all`].
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        let mut issuers = HashMap::new();
        let min_refresh = Duration::from_secs(config.jwks_min_refresh_secs);
        for issuer in &config.issuers {
            let mut static_keys = Vec::new();
            for key in &issuer.static_keys {
                let algorithm = keys::safe_algorithm(&key.algorithm).ok_or_else(|| {
                    anyhow::anyhow!("static key algorithm {} is not accepted", key.algorithm)
                })?;
                let pem = std::fs::read(&key.public_key_file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", key.public_key_file.display()))?;
                static_keys.push(
                    keys::from_pem(&key.kid, algorithm, &pem)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", key.public_key_file.display()))?,
                );
            }
            let ring = KeyRing::new(static_keys, issuer.jwks_url.clone(), min_refresh);
            issuers.insert(
                issuer.issuer.clone(),
                Arc::new(Issuer { audiences: issuer.audiences.clone(), keys: ring }),
            );
        }
        if config.dev_sign_in.enabled {
            let dev = &config.dev_sign_in;
            let key = signin::public_key(dev)?;
            issuers.insert(
                dev.issuer.clone(),
                Arc::new(Issuer {
                    audiences: vec![dev.audience.clone()],
                    keys: KeyRing::new(vec![key], None, min_refresh),
                }),
            );
        }
        Ok(Self {
            issuers,
            algorithms: config.algorithms.iter().filter_map(|a| keys::safe_algorithm(a)).collect(),
            leeway: config.leeway_secs,
            max_token_bytes: config.max_token_bytes,
            subject_claim: config.subject_claim.clone(),
            roles_path: config.roles_claim.split('.').map(str::to_owned).collect(),
            role_map: config.role_map.clone(),
            cache: TokenCache::new(config.cache_entries, Duration::from_secs(config.cache_ttl_secs)),
            jwks_refresh: Duration::from_secs(config.jwks_refresh_secs.max(1)),
        })
    }

    /// Fetches every issuer's JWKS now (start-up) and then every `jwks_refresh_secs`, until
    /// `stop`.
    pub async fn refresh_all(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            for issuer in self.issuers.values() {
                issuer.keys.refresh(true).await;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.jwks_refresh) => {}
            }
        }
    }

    /// The caller behind an `authorization` header value.
    pub async fn authenticate(&self, header: Option<&http::HeaderValue>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        if header.len() > self.max_token_bytes + 16 {
            return Err(AuthError::TooLarge);
        }
        let header = header.to_str().map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::WrongScheme)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::WrongScheme);
        }
        self.verify(token.trim()).await
    }

    /// Verifies one compact JWT.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let hash = cache::hash(token);
        let now = Instant::now();
        if let Some(caller) = self.cache.get(&hash, now) {
            return Ok(caller);
        }
        let (caller, exp) = self.verify_uncached(token).await?;
        let remaining = exp.saturating_sub(unix_now());
        self.cache.put(hash, caller.clone(), now, now + Duration::from_secs(remaining));
        Ok(caller)
    }

    async fn verify_uncached(&self, token: &str) -> Result<(Caller, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::Algorithm);
        }
        let iss = unverified_issuer(token)?;
        let issuer = self.issuers.get(&iss).ok_or(AuthError::Issuer)?;
        let kid = header.kid.unwrap_or_default();
        let key = match issuer.keys.find(&kid, header.alg) {
            Some(key) => key,
            None if issuer.keys.has_jwks() => {
                // A key the provider rotated in since the last fetch.
                issuer.keys.refresh(false).await;
                issuer.keys.find(&kid, header.alg).ok_or(AuthError::UnknownKey)?
            }
            None => return Err(AuthError::UnknownKey),
        };
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[iss.as_str()]);
        validation.set_audience(&issuer.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let data =
            jsonwebtoken::decode::<Value>(token, &key.key, &validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::Signature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::InvalidIssuer => AuthError::Issuer,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
                ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaim,
                _ => AuthError::Malformed,
            })?;
        let claims = data.claims;
        let exp = claims.get("exp").and_then(Value::as_u64).ok_or(AuthError::MissingClaim)?;
        let subject =
            claims.get(&self.subject_claim).and_then(Value::as_str).ok_or(AuthError::MissingClaim)?;
        if subject.is_empty() || subject.len() > 256 || subject.chars().any(char::is_control) {
            return Err(AuthError::Subject);
        }
        let roles = self.roles(&claims);
        Ok((Caller::user(subject).with_roles(roles), exp))
    }

    /// The internal roles of the token's external ones, through `role_map`.
    fn roles(&self, claims: &Value) -> Vec<String> {
        let mut value = Some(claims);
        for part in &self.roles_path {
            value = value.and_then(|v| v.get(part));
        }
        let external: Vec<&str> = match value {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(text)) => text.split_whitespace().collect(),
            _ => Vec::new(),
        };
        let mut roles: Vec<String> =
            external.into_iter().filter_map(|role| self.role_map.get(role).cloned()).collect();
        roles.sort();
        roles.dedup();
        roles
    }
}

/// The `iss` of a token before its signature is checked, only to pick the keys to check it
/// with; nothing else is read from an unverified payload.
fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    let payload = token.split('.').nth(1).ok_or(AuthError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    #[derive(serde::Deserialize)]
    struct Peek {
        iss: Option<String>,
    }
    let peek: Peek = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    peek.iss.ok_or(AuthError::MissingClaim)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}
