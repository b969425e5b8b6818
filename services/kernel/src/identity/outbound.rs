//! The client side of identity: every call a service makes to another carries a fresh service
//! token (acting for a user when the call is made on a user's behalf) and the W3C trace
//! context of the current span.

use super::{Caller, IDENTITY_HEADER, TokenMinter};
use crate::telemetry::propagation;
use std::sync::Arc;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::{Request, Status};

/// Put into a request's extensions to make the call on behalf of a user, with the user's
/// roles: `request.extensions_mut().insert(OnBehalfOf::user("alice"))`, or
/// `OnBehalfOf::of(caller)` to pass on the caller a handler is serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnBehalfOf {
    pub user: String,
    pub roles: Vec<String>,
}

impl OnBehalfOf {
    pub fn user(user: impl Into<String>) -> Self {
        Self { user: user.into(), roles: Vec::new() }
    }

    /// The user behind `caller`; `None` when the caller is a service acting for itself.
    pub fn of(caller: &Caller) -> Option<Self> {
        Some(Self { user: caller.user_id()?.to_owned(), roles: caller.roles.clone() })
    }
}

/// A tonic interceptor for service-to-service clients:
/// `ChatServiceClient::with_interceptor(channel, OutboundIdentity::new(minter, "orchestration"))`.
#[derive(Debug, Clone)]
pub struct OutboundIdentity {
    minter: Arc<TokenMinter>,
    service: Arc<str>,
}

impl OutboundIdentity {
    pub fn new(minter: TokenMinter, service: &str) -> Self {
        Self { minter: Arc::new(minter), service: service.into() }
    }
}

impl tonic::service::Interceptor for OutboundIdentity {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match request.extensions().get::<OnBehalfOf>() {
            Some(user) => Caller::service_for(self.service.as_ref(), user.user.clone(), user.roles.clone()),
            None => Caller::service(self.service.as_ref()),
        };
        // Minting costs about 1.6 µs, less than keeping a cache of tokens per user would.
        let token = self.minter.mint(&caller).map_err(|error| crate::error::internal(&error))?;
        let value = MetadataValue::try_from(token).map_err(|error| crate::error::internal(&error))?;
        request.metadata_mut().insert(IDENTITY_HEADER, value);
        for (key, value) in propagation::current_context_fields() {
            if let (Ok(key), Ok(value)) =
                (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value))
            {
                request.metadata_mut().insert(key, value);
            }
        }
        Ok(request)
    }
}

/// A tonic interceptor for clients that hold a token minted elsewhere (the `codingagent`
/// command, tests): every call carries it; `None` sends calls without one.
#[derive(Debug, Clone)]
pub struct StaticToken(Option<Arc<str>>);

impl StaticToken {
    pub fn new(token: Option<String>) -> Self {
        Self(token.map(Into::into))
    }
}

impl tonic::service::Interceptor for StaticToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            let value = MetadataValue::try_from(token.as_ref())
                .map_err(|_| Status::invalid_argument("the identity token is not a valid header value"))?;
            request.metadata_mut().insert(IDENTITY_HEADER, value);
        }
        Ok(request)
    }
}
