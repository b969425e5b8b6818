//! The tower layer that turns an identity header into a [`Caller`] before any handler runs.

use super::{Caller, IDENTITY_HEADER, IdentityError, TokenVerifier};
use futures::future::{Either, Ready, ready};
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tower::{Layer, Service};

/// Paths anyone may call: health probes come from orchestrators that hold no token, and
/// reflection only describes the public contracts.
const PUBLIC_PREFIXES: &[&str] =
    &["/grpc.health.v1.Health/", "/grpc.reflection.v1.", "/grpc.reflection.v1alpha.", "/metrics"];

/// Verifies [`IDENTITY_HEADER`] on every non-public request; a missing, malformed, expired or
/// foreign-signed token is answered with `UNAUTHENTICATED` without reaching the service.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
}

impl AuthLayer {
    pub fn new(verifier: TokenVerifier) -> Self {
        Self { verifier: Arc::new(verifier) }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth { inner, verifier: self.verifier.clone() }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if PUBLIC_PREFIXES.iter().any(|prefix| path.starts_with(prefix)) {
            return Either::Right(self.inner.call(request));
        }
        let verified = request
            .headers()
            .get(IDENTITY_HEADER)
            .ok_or(IdentityError::Missing)
            .and_then(|value| value.to_str().map_err(|_| IdentityError::Malformed))
            .and_then(|token| self.verifier.verify(token.trim()));
        match verified {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Right(self.inner.call(request))
            }
            Err(error) => {
                tracing::debug!(%error, path, "request refused");
                Either::Left(ready(Ok(reject(&request, &error))))
            }
        }
    }
}

fn reject(request: &Request<Body>, error: &IdentityError) -> Response<Body> {
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if is_grpc {
        crate::error::unauthenticated(error.to_string()).into_http()
    } else {
        let mut response =
            Response::new(Body::new(http_body_util::Full::new(bytes::Bytes::from(error.to_string()))));
        *response.status_mut() = http::StatusCode::UNAUTHORIZED;
        response
    }
}

/// The verified caller of a gRPC request, put there by [`AuthLayer`].
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, tonic::Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| crate::error::unauthenticated(IdentityError::Missing.to_string()))
}

/// Splits a request into its verified caller and its message, as every handler starts.
pub fn caller_and_message<T>(request: tonic::Request<T>) -> Result<(Caller, T), tonic::Status> {
    let caller = caller(&request)?.clone();
    Ok((caller, request.into_inner()))
}
