//! Who is calling: the internal identity token of ARCHITECTURE §4.
//!
//! The gateway verifies a user's external JWT, strips any identity headers the client sent and
//! forwards a short-lived internal token in [`IDENTITY_HEADER`]. Services calling each other
//! mint their own token, as a service, optionally acting for a user. Every service verifies
//! the token in a tower layer ([`AuthLayer`]) and handlers read the resulting [`Caller`].
//! Tokens are HMAC-SHA256 JWTs with a fixed issuer and audience; several keys may verify at
//! once so the signing key can be rotated without downtime.

mod layer;
mod outbound;
mod token;

pub use layer::{AuthLayer, caller, caller_and_message};
pub use outbound::{OnBehalfOf, OutboundIdentity, StaticToken};
pub use token::{Caller, IdentityError, OPERATOR_ROLE, PrincipalKind, TokenMinter, TokenVerifier};

/// Metadata key carrying the internal identity token.
pub const IDENTITY_HEADER: &str = "x-codingagent-identity";
