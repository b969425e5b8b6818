//! Development sign-in: `POST /auth/dev/sign-in` with `{"user": "alice"}` returns a user
//! token signed by the development key pair, so the dashboard and grpcurl work on a fresh
//! `./dev up` without an identity provider. The configuration refuses it in production.

use super::keys::{self, Key};
use crate::config::DevSignInConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Signs development tokens.
pub struct DevSigner {
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl std::fmt::Debug for DevSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSigner").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// What a sign-in asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub user: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The token and how long it lives.
#[derive(Debug, Serialize)]
pub struct SignInResponse {
    pub token: String,
    pub expires_in: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    roles: &'a [String],
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// The public half, trusted as a static key of the development issuer.
pub(crate) fn public_key(config: &DevSignInConfig) -> anyhow::Result<Key> {
    let file =
        config.public_key_file.as_ref().ok_or_else(|| anyhow::anyhow!("dev sign-in has no public key"))?;
    let pem = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    keys::from_pem("", Algorithm::EdDSA, &pem).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

impl DevSigner {
    pub fn new(config: &DevSignInConfig) -> anyhow::Result<Self> {
        let file = config
            .private_key_file
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("dev sign-in has no private key"))?;
        let pem = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        Ok(Self {
            key: EncodingKey::from_ed_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl_secs: config.token_ttl_secs,
        })
    }

    /// A token for `request.user`, or why the name is refused.
    pub fn sign_in(&self, request: &SignInRequest) -> Result<SignInResponse, String> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        };
        if !valid(&request.user) {
            return Err("user must be 1-64 letters, digits, '.', '_', '-' or '@'".into());
        }
        if request.roles.len() > 16 || !request.roles.iter().all(|r| valid(r)) {
            return Err("roles must be at most 16 names like users".into());
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let claims = Claims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: &request.user,
            roles: &request.roles,
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok(SignInResponse { token, expires_in: self.ttl_secs })
    }
}
