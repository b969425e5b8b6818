//! Minting and verifying internal identity tokens.

use crate::config::{IdentityConfig, Secret};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "codingagent";
const AUDIENCE: &str = "codingagent-internal";

/// Whether the principal is a person or a CodingAgent service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    Service,
}

/// The role that may administer shared resources (models, budgets, experiments).
pub const OPERATOR_ROLE: &str = "operator";

/// The verified identity behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// A user id for users, a service name for services.
    pub subject: String,
    pub kind: PrincipalKind,
    /// For a service acting on a user's behalf: that user.
    pub on_behalf_of: Option<String>,
    /// Roles of the user (the caller, or the user a service acts for).
    pub roles: Vec<String>,
}

impl Caller {
    pub fn user(id: impl Into<String>) -> Self {
        Self { subject: id.into(), kind: PrincipalKind::User, on_behalf_of: None, roles: Vec::new() }
    }

    pub fn service(name: impl Into<String>) -> Self {
        Self { subject: name.into(), kind: PrincipalKind::Service, on_behalf_of: None, roles: Vec::new() }
    }

    /// A service acting for `user`, with that user's roles.
    pub fn service_for(name: impl Into<String>, user: impl Into<String>, roles: Vec<String>) -> Self {
        Self { subject: name.into(), kind: PrincipalKind::Service, on_behalf_of: Some(user.into()), roles }
    }

    pub fn with_roles(mut self, roles: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Operators administer shared resources. A service acting on its own account is trusted
    /// as one (registry syncs, scheduled jobs); acting for a user, it has that user's rights.
    pub fn is_operator(&self) -> bool {
        (self.kind == PrincipalKind::Service && self.on_behalf_of.is_none()) || self.has_role(OPERATOR_ROLE)
    }

    /// `PERMISSION_DENIED` unless the caller is an operator.
    pub fn require_operator(&self) -> Result<(), tonic::Status> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(crate::error::permission_denied("OPERATOR_REQUIRED", "this call requires the operator role"))
        }
    }

    /// The user whose data this call may touch: the user, or the user a service acts for.
    /// `None` for a service acting on its own account.
    pub fn user_id(&self) -> Option<&str> {
        match self.kind {
            PrincipalKind::User => Some(&self.subject),
            PrincipalKind::Service => self.on_behalf_of.as_deref(),
        }
    }

    pub fn is_service(&self) -> bool {
        self.kind == PrincipalKind::Service
    }

    /// The principal a call is accounted to: `user:<id>` for a user or a service acting for
    /// one, `service:<name>` for a service on its own account. Idempotency keys and stream
    /// limits are scoped by it, so a service acting for many users gives each their own share,
    /// and the prefixes keep a user named like a service apart from it.
    pub fn principal_key(&self) -> String {
        match self.user_id() {
            Some(user) => format!("user:{user}"),
            None => format!("service:{}", self.subject),
        }
    }

    /// Who acted, as events and records name them: the user (noting the service when a
    /// service acted for them), or the service on its own account.
    pub fn actor(&self) -> codingagent_proto::codingagent::common::v1::Actor {
        use codingagent_proto::codingagent::common::v1::Actor;
        match (self.kind, &self.on_behalf_of) {
            (PrincipalKind::User, _) => Actor::user(&self.subject),
            (PrincipalKind::Service, Some(user)) => Actor::user_via(user, &self.subject),
            (PrincipalKind::Service, None) => Actor::service(&self.subject),
        }
    }

    /// The user id, or `PERMISSION_DENIED` when the call carries no user at all.
    pub fn require_user(&self) -> Result<&str, tonic::Status> {
        self.user_id().ok_or_else(|| {
            crate::error::permission_denied(
                "USER_REQUIRED",
                "this call must be made by or on behalf of a user",
            )
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    kind: PrincipalKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    obo: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
}

/// Why a token was refused. All of them are `UNAUTHENTICATED` to the client; the variants
/// exist for logs and tests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("missing identity token")]
    Missing,
    #[error("malformed identity token")]
    Malformed,
    #[error("identity token expired")]
    Expired,
    #[error("identity token not valid yet")]
    NotYetValid,
    #[error("identity token signature does not verify")]
    BadSignature,
    #[error("identity token has the wrong issuer or audience")]
    WrongAudience,
    #[error("could not sign identity token: {0}")]
    Signing(String),
}

/// Signs internal tokens with the current key.
#[derive(Clone)]
pub struct TokenMinter {
    key: EncodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMinter").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl TokenMinter {
    pub fn new(config: &IdentityConfig) -> Self {
        Self {
            key: EncodingKey::from_secret(config.signing_key.expose().as_bytes()),
            ttl: Duration::from_secs(config.token_ttl_secs),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `caller`, valid for the configured lifetime from now.
    pub fn mint(&self, caller: &Caller) -> Result<String, IdentityError> {
        self.mint_with_lifetime(caller, self.ttl)
    }

    pub fn mint_with_lifetime(&self, caller: &Caller, lifetime: Duration) -> Result<String, IdentityError> {
        let now = unix_now();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: caller.subject.clone(),
            kind: caller.kind,
            obo: caller.on_behalf_of.clone(),
            roles: caller.roles.clone(),
            iat: now,
            nbf: now,
            exp: now + lifetime.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| IdentityError::Signing(e.to_string()))
    }
}

/// Verifies internal tokens against the current and previous keys.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Vec<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(config: &IdentityConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway_secs;
        let keys = std::iter::once(&config.signing_key)
            .chain(&config.previous_keys)
            .map(|key: &Secret| DecodingKey::from_secret(key.expose().as_bytes()))
            .collect();
        Self { keys, validation }
    }

    pub fn verify(&self, token: &str) -> Result<Caller, IdentityError> {
        use jsonwebtoken::errors::ErrorKind;
        let mut outcome = Err(IdentityError::BadSignature);
        for key in &self.keys {
            match decode::<Claims>(token, key, &self.validation) {
                Ok(data) => {
                    let claims = data.claims;
                    if claims.sub.is_empty() || (claims.kind == PrincipalKind::User && claims.obo.is_some()) {
                        return Err(IdentityError::Malformed);
                    }
                    return Ok(Caller {
                        subject: claims.sub,
                        kind: claims.kind,
                        on_behalf_of: claims.obo,
                        roles: claims.roles,
                    });
                }
                // Another key may still verify the signature; every other failure is final.
                Err(error) if matches!(error.kind(), ErrorKind::InvalidSignature) => {}
                Err(error) => {
                    outcome = Err(match error.kind() {
                        ErrorKind::ExpiredSignature => IdentityError::Expired,
                        ErrorKind::ImmatureSignature => IdentityError::NotYetValid,
                        ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => IdentityError::WrongAudience,
                        _ => IdentityError::Malformed,
                    });
                    break;
                }
            }
        }
        outcome
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: &str) -> IdentityConfig {
        IdentityConfig { signing_key: Secret::new(key), ..IdentityConfig::default() }
    }

    fn alice() -> Caller {
        Caller::user("alice")
    }

    const KEY_A: &str = "a-key-that-is-at-least-thirty-two-bytes-long";
    const KEY_B: &str = "another-key-that-is-at-least-thirty-two-bytes";

    #[test]
    fn round_trip() {
        let cfg = config(KEY_A);
        let token = TokenMinter::new(&cfg).mint(&alice()).unwrap();
        assert_eq!(TokenVerifier::new(&cfg).verify(&token).unwrap(), alice());
    }

    #[test]
    fn service_acting_for_a_user() {
        let cfg = config(KEY_A);
        let caller = Caller::service_for("orchestration", "bob", vec!["operator".into()]);
        let verified =
            TokenVerifier::new(&cfg).verify(&TokenMinter::new(&cfg).mint(&caller).unwrap()).unwrap();
        assert_eq!(verified.user_id(), Some("bob"));
        assert!(verified.is_service());
        assert!(verified.is_operator(), "roles travel with the user");
        // The user acted, through the service: events name bob, not orchestration.
        let actor = verified.actor();
        assert_eq!((actor.id.as_str(), actor.via.as_str()), ("bob", "orchestration"));
        assert_eq!(Caller::service("llm").actor().id, "llm");
        assert_eq!(Caller::user("alice").actor().via, "");
    }

    #[test]
    fn operators_are_users_with_the_role_or_services_on_their_own_account() {
        assert!(!Caller::user("alice").is_operator());
        assert!(Caller::user("alice").with_roles([OPERATOR_ROLE]).is_operator());
        assert!(Caller::service("llm").is_operator());
        assert!(!Caller::service_for("orchestration", "bob", vec![]).is_operator());
        assert_eq!(
            Caller::user("alice").require_operator().unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn another_key_is_refused() {
        let token = TokenMinter::new(&config(KEY_B)).mint(&alice()).unwrap();
        assert_eq!(TokenVerifier::new(&config(KEY_A)).verify(&token), Err(IdentityError::BadSignature));
    }

    #[test]
    fn previous_keys_verify_during_rotation() {
        let old = TokenMinter::new(&config(KEY_A)).mint(&alice()).unwrap();
        let rotated = IdentityConfig { previous_keys: vec![Secret::new(KEY_A)], ..config(KEY_B) };
        assert_eq!(TokenVerifier::new(&rotated).verify(&old).unwrap(), alice());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let cfg = IdentityConfig { leeway_secs: 0, ..config(KEY_A) };
        let minter = TokenMinter::new(&cfg);
        let token = minter.mint_with_lifetime(&alice(), Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(TokenVerifier::new(&cfg).verify(&token), Err(IdentityError::Expired));
    }

    #[test]
    fn garbage_is_malformed() {
        let verifier = TokenVerifier::new(&config(KEY_A));
        for token in ["", "abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.xx"] {
            assert!(
                matches!(verifier.verify(token), Err(IdentityError::Malformed | IdentityError::BadSignature)),
                "{token}"
            );
        }
    }

    #[test]
    fn tokens_for_other_audiences_are_refused() {
        let claims = serde_json::json!({
            "iss": "someone-else", "aud": AUDIENCE, "sub": "alice", "kind": "user",
            "iat": unix_now(), "nbf": unix_now(), "exp": unix_now() + 60, "jti": "x"
        });
        let token =
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(KEY_A.as_bytes()))
                .unwrap();
        assert_eq!(TokenVerifier::new(&config(KEY_A)).verify(&token), Err(IdentityError::WrongAudience));
    }
}
