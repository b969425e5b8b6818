//! The response body of a proxied call. It carries what must live exactly as long as the
//! call: the endpoint lease (in-flight count), the caller's stream slot, and the metrics
//! record, written once with the final status — from the trailers, or `CANCELLED` when the
//! client goes away first. A server stream is ended with `UNAVAILABLE` after
//! `max_stream_secs` or when the gateway shuts down, so no stream outlives the gateway's
//! limits; clients resume from the last sequence they saw.

use crate::metrics::GatewayMetrics;
use crate::pool::Lease;
use bytes::Bytes;
use codingagent_kernel::server::StreamSlot;
use futures::future::BoxFuture;
use http::HeaderMap;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tonic::Code;
use tonic::body::Body;

/// The metrics record of one call, written once.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) metrics: GatewayMetrics,
    pub(crate) route: Arc<str>,
    pub(crate) backend: Arc<str>,
    pub(crate) started: Instant,
}

impl Record {
    pub(crate) fn finish(self, code: Code) {
        self.metrics.request(&self.route, &self.backend, code, self.started.elapsed().as_secs_f64());
    }
}

/// Why a stream is being ended by the gateway.
pub(crate) type Cut = BoxFuture<'static, &'static str>;

pin_project! {
    pub(crate) struct CallBody {
        #[pin]
        inner: Body,
        record: Option<Record>,
        // The status a trailers-only response already carried in its headers.
        head_code: Option<Code>,
        lease: Option<Lease>,
        slot: Option<StreamSlot>,
        cut: Option<Cut>,
        ended: bool,
    }

    impl PinnedDrop for CallBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                record.finish(Code::Cancelled);
            }
        }
    }
}

impl CallBody {
    pub(crate) fn new(
        inner: Body,
        record: Record,
        head_code: Option<Code>,
        lease: Option<Lease>,
        slot: Option<StreamSlot>,
        cut: Option<Cut>,
    ) -> Self {
        Self { inner, record: Some(record), head_code, lease, slot, cut, ended: false }
    }
}

/// The `grpc-status` in a header map.
pub(crate) fn status_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from(value))
}

impl http_body::Body for CallBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if let Some(cut) = this.cut.as_mut()
            && let Poll::Ready(why) = cut.as_mut().poll(cx)
        {
            *this.ended = true;
            this.cut.take();
            let status = codingagent_kernel::error::unavailable(
                "STREAM_ENDED",
                format!("{why}; resume from the last sequence received"),
                std::time::Duration::from_secs(1),
            );
            let mut trailers = HeaderMap::new();
            // Writing a status into headers cannot fail for the statuses built here.
            let _ = status.add_header(&mut trailers);
            if let Some(record) = this.record.take() {
                record.finish(Code::Unavailable);
            }
            this.lease.take();
            this.slot.take();
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            None => {
                *this.ended = true;
                if let Some(record) = this.record.take() {
                    record.finish(this.head_code.unwrap_or(Code::Unknown));
                }
                this.lease.take();
                this.slot.take();
            }
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(record) = this.record.take() {
                        record.finish(status_code(trailers).unwrap_or(Code::Unknown));
                    }
                    this.lease.take();
                    this.slot.take();
                }
            }
            Some(Err(status)) => {
                if let Some(record) = this.record.take() {
                    record.finish(status.code());
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (self.cut.is_none() && self.inner.is_end_stream())
    }
}
