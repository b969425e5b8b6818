//! Limits that keep one caller from holding a server's resources: open server streams per
//! caller, and a deadline for receiving a request body.
//!
//! The global concurrency permit is released as soon as response headers go out, so on its
//! own it bounds nothing a stream holds for hours. The stream limit instead holds its slot in
//! the response body, released when the stream ends or the client goes away. The body
//! deadline covers the opposite abuse: a client that sends its request one byte a second
//! (slow-loris) would otherwise hold a handler, a concurrency permit and a connection for as
//! long as it likes. HTTP/1 request heads are bounded by hyper's own 30 s header timeout,
//! HTTP/2 streams per connection by `max_concurrent_streams`.

use super::MethodTable;
use crate::identity::Caller;
use futures::future::{Either, Ready, ready};
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready as ready_poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tower::{Layer, Service};

/// How long a refused caller is told to wait before opening another stream.
const STREAM_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Open server streams per caller (the effective user, or the service on its own account).
#[derive(Debug, Clone)]
pub struct StreamLimitLayer {
    methods: Arc<MethodTable>,
    slots: StreamSlots,
}

impl StreamLimitLayer {
    pub fn new(methods: Arc<MethodTable>, per_caller: usize) -> Self {
        Self { methods, slots: StreamSlots::new(per_caller) }
    }
}

/// Counts open streams per principal key; the gateway holds its own, since its streams are
/// proxied rather than served.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    open: Arc<Mutex<HashMap<String, usize>>>,
    per_caller: usize,
}

impl StreamSlots {
    pub fn new(per_caller: usize) -> Self {
        Self { open: Arc::default(), per_caller }
    }

    pub fn per_caller(&self) -> usize {
        self.per_caller
    }

    /// A slot for `key`, or `None` when it already holds `per_caller` of them.
    pub fn acquire(&self, key: String) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.per_caller {
            return None;
        }
        *count += 1;
        Some(StreamSlot { open: self.open.clone(), caller: key })
    }
}

impl<S> Layer<S> for StreamLimitLayer {
    type Service = StreamLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamLimit { inner, limit: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct StreamLimit<S> {
    inner: S,
    limit: StreamLimitLayer,
}

/// One open stream's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    caller: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.caller) {
            *count -= 1;
            // Callers with no stream leave no entry, so the map is bounded by open streams.
            if *count == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

impl StreamLimitLayer {
    fn acquire(&self, caller: &Caller) -> Option<StreamSlot> {
        self.slots.acquire(caller.principal_key())
    }
}

type Limited<F, E> = Either<Ready<Result<Response<Body>, E>>, HoldSlot<F>>;

impl<S> Service<Request<Body>> for StreamLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Limited<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let streaming = self.limit.methods.get(request.uri().path()).is_some_and(|m| m.server_streaming);
        // Public streams (health watch, reflection) carry no caller and stay unlimited here;
        // the per-connection stream cap still bounds them.
        let caller = request.extensions().get::<Caller>();
        let (true, Some(caller)) = (streaming, caller) else {
            return Either::Right(HoldSlot { inner: self.inner.call(request), slot: None });
        };
        match self.limit.acquire(caller) {
            Some(slot) => Either::Right(HoldSlot { inner: self.inner.call(request), slot: Some(slot) }),
            None => {
                tracing::debug!(caller = %caller.subject, path = request.uri().path(), "stream limit reached");
                let status = crate::error::resource_exhausted(
                    "TOO_MANY_STREAMS",
                    format!(
                        "at most {} streams may be open at once per caller",
                        self.limit.slots.per_caller()
                    ),
                    Some(STREAM_RETRY_AFTER),
                );
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

pin_project! {
    /// Moves the stream's slot into the response body, which lives as long as the stream.
    #[derive(Debug)]
    pub struct HoldSlot<F> {
        #[pin]
        inner: F,
        slot: Option<StreamSlot>,
    }
}

impl<F, E> Future for HoldSlot<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready_poll!(this.inner.poll(cx));
        Poll::Ready(match this.slot.take() {
            None => result,
            Some(slot) => result
                .map(|response| response.map(|body| Body::new(SlotBody { inner: body, slot: Some(slot) }))),
        })
    }
}

pin_project! {
    #[derive(Debug)]
    struct SlotBody {
        #[pin]
        inner: Body,
        slot: Option<StreamSlot>,
    }
}

impl http_body::Body for SlotBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready_poll!(this.inner.poll_frame(cx));
        if frame.is_none() {
            // The stream is over even if the connection keeps the body around.
            this.slot.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Fails a request whose body has not fully arrived within `timeout` of the request head.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeoutLayer {
    timeout: Duration,
}

impl BodyTimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for BodyTimeoutLayer {
    type Service = BodyTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyTimeout { inner, timeout: self.timeout }
    }
}

#[derive(Debug, Clone)]
pub struct BodyTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Request<Body>> for BodyTimeout<S>
where
    S: Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let deadline = Instant::now() + self.timeout;
        let timeout = self.timeout;
        self.inner.call(request.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                sleep: tokio::time::sleep_until(deadline),
                timeout,
                done: false,
                expired: false,
            })
        }))
    }
}

pin_project! {
    #[derive(Debug)]
    struct DeadlineBody {
        #[pin]
        inner: Body,
        #[pin]
        sleep: Sleep,
        timeout: Duration,
        done: bool,
        expired: bool,
    }
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        if *this.done {
            return this.inner.poll_frame(cx);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if frame.is_none() {
                *this.done = true;
            }
            return Poll::Ready(frame);
        }
        ready_poll!(this.sleep.poll(cx));
        *this.expired = true;
        tracing::debug!(timeout_ms = this.timeout.as_millis() as u64, "request body too slow; cut off");
        Poll::Ready(Some(Err(crate::error::StatusBuilder::new(
            tonic::Code::DeadlineExceeded,
            "REQUEST_BODY_TIMEOUT",
            format!("the request body did not arrive within {} ms", this.timeout.as_millis()),
        )
        .build())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
