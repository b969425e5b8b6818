//! gRPC message framing and the grpc-web translation.
//!
//! Requests: every public method takes one request message (the contracts have no client
//! streaming, ARCHITECTURE §3), so the gateway reads the whole body — bounded in size and
//! time — and checks it is exactly one well-formed frame before any backend sees it. grpc-web
//! text mode (base64, possibly in several padded chunks) is decoded first. Malformed input is
//! `INVALID_ARGUMENT` here rather than an `INTERNAL` from deep inside a backend.
//!
//! Responses stream through unbuffered. For grpc-web, the backend's HTTP/2 trailers become
//! the final frame (flag `0x80`) that browsers read, and text mode base64-encodes each chunk.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// How the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `application/grpc` over HTTP/2.
    Grpc,
    /// `application/grpc-web[+proto]`.
    Web,
    /// `application/grpc-web-text[+proto]`.
    WebText,
}

impl Protocol {
    /// The protocol of a request's `content-type`; `None` for anything that is not gRPC.
    /// `Some(Err(()))` for a gRPC flavour the gateway does not speak (`+json`).
    pub fn of(content_type: &str) -> Option<Result<Self, ()>> {
        let (base, codec) = match content_type.split_once('+') {
            Some((base, codec)) => (base, Some(codec)),
            None => (content_type.split(';').next().unwrap_or_default(), None),
        };
        let protocol = match base.trim() {
            "application/grpc" => Self::Grpc,
            "application/grpc-web" => Self::Web,
            "application/grpc-web-text" => Self::WebText,
            _ => return None,
        };
        match codec.map(|c| c.split(';').next().unwrap_or_default().trim()) {
            None | Some("proto") => Some(Ok(protocol)),
            Some(_) => Some(Err(())),
        }
    }

    pub fn is_web(self) -> bool {
        !matches!(self, Self::Grpc)
    }

    /// The `content-type` of responses.
    pub fn response_content_type(self) -> &'static str {
        match self {
            Self::Grpc => "application/grpc",
            Self::Web => "application/grpc-web+proto",
            Self::WebText => "application/grpc-web-text+proto",
        }
    }
}

/// Why a request body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the grpc-web-text body is not valid base64")]
    Base64,
    #[error("the body ends inside a frame header")]
    TruncatedHeader,
    #[error("a frame says {declared} bytes but {available} follow")]
    TruncatedMessage { declared: usize, available: usize },
    #[error("the message is {0} bytes, more than the gateway accepts")]
    TooLarge(usize),
    #[error("compressed messages need a grpc-encoding the gateway does not accept")]
    Compressed,
    #[error("a request may not carry a trailers frame")]
    Trailers,
    #[error("the method takes exactly one message, the body holds {0}")]
    MessageCount(usize),
    #[error("unknown frame flags {0:#04x}")]
    Flags(u8),
}

/// Decodes grpc-web-text: base64, where clients may send several padded chunks one after
/// another.
pub fn decode_text(body: &[u8]) -> Result<Vec<u8>, FrameError> {
    let clean: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    let mut start = 0;
    // Split after each quantum that ends with padding; each piece is standard base64.
    let mut i = 0;
    while i < clean.len() {
        let end = (i + 4).min(clean.len());
        if clean[i..end].contains(&b'=') || end == clean.len() {
            STANDARD.decode_vec(&clean[start..end], &mut out).map_err(|_| FrameError::Base64)?;
            start = end;
        }
        i = end;
    }
    Ok(out)
}

/// Checks that `body` is exactly one uncompressed message frame of at most `max_message`
/// bytes, and returns it unchanged.
pub fn single_message(body: &[u8], max_message: usize) -> Result<(), FrameError> {
    let mut rest = body;
    let mut messages = 0;
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err(FrameError::TruncatedHeader);
        }
        let flags = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        match flags {
            0 => {}
            1 => return Err(FrameError::Compressed),
            f if f & 0x80 != 0 => return Err(FrameError::Trailers),
            f => return Err(FrameError::Flags(f)),
        }
        if len > max_message {
            return Err(FrameError::TooLarge(len));
        }
        let available = rest.len() - 5;
        if len > available {
            return Err(FrameError::TruncatedMessage { declared: len, available });
        }
        rest = &rest[5 + len..];
        messages += 1;
    }
    if messages != 1 {
        return Err(FrameError::MessageCount(messages));
    }
    Ok(())
}

/// The grpc-web trailers frame: flag `0x80`, length, then `name:value\r\n` lines.
pub fn trailers_frame(trailers: &HeaderMap) -> Bytes {
    let mut lines = BytesMut::new();
    for (name, value) in trailers {
        lines.put_slice(name.as_str().as_bytes());
        lines.put_u8(b':');
        lines.put_slice(value.as_bytes());
        lines.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + lines.len());
    frame.put_u8(0x80);
    frame.put_u32(lines.len() as u32);
    frame.put_slice(&lines);
    frame.freeze()
}

pin_project! {
    /// A backend's response body as a grpc-web client reads it.
    pub struct WebBody<B> {
        #[pin]
        inner: B,
        text: bool,
        done: bool,
    }
}

impl<B> WebBody<B> {
    pub fn new(inner: B, text: bool) -> Self {
        Self { inner, text, done: false }
    }
}

impl<B> http_body::Body for WebBody<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.inner.poll_frame(cx)) {
            None => {
                *this.done = true;
                return Poll::Ready(None);
            }
            Some(Err(error)) => return Poll::Ready(Some(Err(error))),
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    *this.done = true;
                    trailers_frame(&trailers)
                }
                Err(_) => return Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::new())))),
            },
        };
        let data = if *this.text { Bytes::from(STANDARD.encode(&data)) } else { data };
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flags];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn content_types() {
        assert_eq!(Protocol::of("application/grpc"), Some(Ok(Protocol::Grpc)));
        assert_eq!(Protocol::of("application/grpc+proto"), Some(Ok(Protocol::Grpc)));
        assert_eq!(Protocol::of("application/grpc-web"), Some(Ok(Protocol::Web)));
        assert_eq!(Protocol::of("application/grpc-web+proto"), Some(Ok(Protocol::Web)));
        assert_eq!(Protocol::of("application/grpc-web-text+proto"), Some(Ok(Protocol::WebText)));
        assert_eq!(Protocol::of("application/grpc-web+json"), Some(Err(())));
        assert_eq!(Protocol::of("application/json"), None);
        assert_eq!(Protocol::of("text/html; charset=utf-8"), None);
    }

    #[test]
    fn exactly_one_well_formed_message() {
        assert!(single_message(&frame(0, b"hello"), 100).is_ok());
        assert!(single_message(&frame(0, b""), 100).is_ok(), "an empty message is a message");
        assert_eq!(single_message(b"", 100), Err(FrameError::MessageCount(0)));
        let two = [frame(0, b"a"), frame(0, b"b")].concat();
        assert_eq!(single_message(&two, 100), Err(FrameError::MessageCount(2)));
        assert_eq!(single_message(&[0, 0, 0], 100), Err(FrameError::TruncatedHeader));
        assert_eq!(
            single_message(&[0, 0, 0, 0, 9, 1], 100),
            Err(FrameError::TruncatedMessage { declared: 9, available: 1 })
        );
        assert_eq!(single_message(&frame(0, &[0; 101]), 100), Err(FrameError::TooLarge(101)));
        assert_eq!(
            single_message(&[0, 0xff, 0xff, 0xff, 0xff], 100),
            Err(FrameError::TooLarge(u32::MAX as usize))
        );
        assert_eq!(single_message(&frame(1, b"x"), 100), Err(FrameError::Compressed));
        assert_eq!(single_message(&frame(0x80, b"x"), 100), Err(FrameError::Trailers));
        assert_eq!(single_message(&frame(4, b"x"), 100), Err(FrameError::Flags(4)));
    }

    #[test]
    fn text_mode_decodes_one_or_several_padded_chunks() {
        let message = frame(0, b"hi there");
        let one = STANDARD.encode(&message);
        assert_eq!(decode_text(one.as_bytes()).unwrap(), message);
        let half = message.len() / 2;
        let chunked = format!("{}{}", STANDARD.encode(&message[..half]), STANDARD.encode(&message[half..]));
        assert_eq!(decode_text(chunked.as_bytes()).unwrap(), message);
        assert_eq!(decode_text(b"!!!!"), Err(FrameError::Base64));
        assert_eq!(decode_text(b"").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn trailers_become_the_final_frame() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frame = trailers_frame(&trailers);
        assert_eq!(frame[0], 0x80);
        assert_eq!(&frame[5..], b"grpc-status:0\r\n");
        assert_eq!(u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize, frame.len() - 5);
    }
}
