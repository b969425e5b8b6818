//! Splitting streamed HTTP bodies into protocol units: newline-delimited JSON (Ollama) and
//! server-sent events (OpenAI). Bodies arrive in arbitrary chunks, so a unit may span chunks.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// Complete lines of `body`, without their line endings; empty lines are skipped. A final
/// line without a newline is still yielded.
pub(crate) fn lines<E>(
    body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
) -> impl Stream<Item = Result<String, E>> + Send + 'static
where
    E: Send + 'static,
{
    futures::stream::unfold(
        (Box::pin(body), BytesMut::new(), false),
        |(mut body, mut buffer, mut ended)| async move {
            loop {
                if let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                    let line = buffer.split_to(end + 1);
                    let text = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_owned();
                    if !text.is_empty() {
                        return Some((Ok(text), (body, buffer, ended)));
                    }
                    continue;
                }
                if ended {
                    // A last line without a newline still counts.
                    let text = String::from_utf8_lossy(&buffer.split()).trim().to_owned();
                    return (!text.is_empty()).then(|| (Ok(text), (body, buffer, ended)));
                }
                match body.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(error)) => {
                        // What was buffered is an incomplete unit; it must not be parsed.
                        buffer.clear();
                        return Some((Err(error), (body, buffer, true)));
                    }
                    None => ended = true,
                }
            }
        },
    )
}

/// The `data:` payloads of a server-sent event stream (multi-line data joined by newlines);
/// comments and other fields are ignored.
pub(crate) fn sse_data<E>(
    body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
) -> impl Stream<Item = Result<String, E>> + Send + 'static
where
    E: Send + 'static,
{
    // Events end at a blank line; `lines` drops blank lines, so an event is flushed when the
    // next one starts or the body ends. Providers send one `data:` line per event, which
    // makes each data line its own event.
    lines(body).filter_map(|line| async move {
        match line {
            Ok(line) => line.strip_prefix("data:").map(|data| Ok(data.trim_start().to_owned())),
            Err(error) => Some(Err(error)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&str]) -> impl Stream<Item = Result<Bytes, ()>> + Send + 'static {
        let parts: Vec<Result<Bytes, ()>> = parts.iter().map(|p| Ok(Bytes::from(p.to_string()))).collect();
        futures::stream::iter(parts)
    }

    #[tokio::test]
    async fn lines_survive_arbitrary_chunking() {
        let got: Vec<_> = lines(chunks(&["{\"a\":", "1}\n{\"b\"", ":2}\r\n\n{\"c\":3}"])).collect().await;
        assert_eq!(got, [Ok("{\"a\":1}".to_owned()), Ok("{\"b\":2}".to_owned()), Ok("{\"c\":3}".to_owned())]);
    }

    #[tokio::test]
    async fn sse_yields_data_payloads_only() {
        let body = chunks(&[": keep-alive\n\ndata: {\"x\"", ":1}\n\nevent: ping\ndata: [DONE]\n\n"]);
        let got: Vec<_> = sse_data(body).collect().await;
        assert_eq!(got, [Ok("{\"x\":1}".to_owned()), Ok("[DONE]".to_owned())]);
    }

    #[tokio::test]
    async fn transport_errors_pass_through() {
        let body = futures::stream::iter(vec![Ok(Bytes::from("a\nb")), Err(())]);
        let got: Vec<_> = lines(body).collect().await;
        assert_eq!(got, [Ok("a".to_owned()), Err(())]);
    }
}
