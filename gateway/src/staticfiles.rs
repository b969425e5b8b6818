//! The built dashboard: files from `static_dir` with caching headers that suit a single-page
//! app — content-hashed assets are immutable for a year, `index.html` is revalidated on
//! every load (so a deployment is picked up at once), and a path without a file extension
//! that names no file is a client-side route, answered with `index.html`.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::path::{Component, Path, PathBuf};
use tonic::body::Body;

/// Answers a GET or HEAD for `path` from `dir`.
pub(crate) async fn serve<B>(dir: &Path, request: &Request<B>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served here");
    }
    let Some(relative) = safe_relative(request.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let mut file = dir.join(&relative);
    let is_file = tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_file());
    if !is_file {
        let has_extension = relative.file_name().is_some_and(|n| n.to_string_lossy().contains('.'));
        if has_extension {
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        file = dir.join("index.html");
    }
    let Ok(metadata) = tokio::fs::metadata(&file).await else {
        return plain(StatusCode::NOT_FOUND, "no dashboard is installed here");
    };
    let modified = metadata.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let etag = format!("W/\"{:x}-{:x}\"", metadata.len(), modified.map_or(0, |d| d.as_secs()));
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let cache = cache_control(&name);
    if request.headers().get(IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        insert(&mut response, ETAG, &etag);
        insert(&mut response, CACHE_CONTROL, cache);
        return response;
    }
    let Ok(contents) = tokio::fs::read(&file).await else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let body = if request.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::new(Full::new(Bytes::from(contents)))
    };
    let mut response = Response::new(body);
    insert(&mut response, CONTENT_TYPE, content_type(&name));
    insert(&mut response, CACHE_CONTROL, cache);
    insert(&mut response, ETAG, &etag);
    response.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response.headers_mut().insert("referrer-policy", HeaderValue::from_static("same-origin"));
    response
}

/// The request path as a relative path inside the directory, or `None` for anything that
/// could leave it (`..`, absolute parts, backslashes, NUL, percent-escapes).
fn safe_relative(path: &str) -> Option<PathBuf> {
    if path.contains(['\\', '\0', '%']) {
        return None;
    }
    let relative = PathBuf::from(path.trim_start_matches('/'));
    if relative.components().all(|c| matches!(c, Component::Normal(_))) { Some(relative) } else { None }
}

/// Build tools put a content hash in asset names (`main-4F3KQ2ZD.js`, `chunk.1a2b3c4d.css`):
/// such a file never changes, so browsers may keep it for a year.
fn cache_control(name: &str) -> &'static str {
    if name == "index.html" {
        return "no-cache";
    }
    let stem = name.split('.').next().unwrap_or_default();
    let hashed = name.split(['.', '-']).skip(1).any(|part| {
        part.len() >= 8
            && part.chars().all(|c| c.is_ascii_alphanumeric())
            && part.chars().any(|c| c.is_ascii_digit())
    });
    if hashed && !stem.is_empty() { "public, max-age=31536000, immutable" } else { "public, max-age=300" }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn insert(response: &mut Response<Body>, name: http::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// A short plain-text answer.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from(text.to_owned()))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_assets_are_immutable_and_index_is_revalidated() {
        assert_eq!(cache_control("index.html"), "no-cache");
        assert_eq!(cache_control("main-4F3KQ2ZD.js"), "public, max-age=31536000, immutable");
        assert_eq!(cache_control("styles.1a2b3c4d.css"), "public, max-age=31536000, immutable");
        assert_eq!(cache_control("favicon.ico"), "public, max-age=300");
        assert_eq!(cache_control("robots.txt"), "public, max-age=300");
    }

    #[test]
    fn paths_cannot_leave_the_directory() {
        assert_eq!(safe_relative("/assets/app.js"), Some(PathBuf::from("assets/app.js")));
        assert_eq!(safe_relative("/"), Some(PathBuf::new()));
        for bad in ["/../etc/passwd", "/a/../../b", "/%2e%2e/x", "/a\\b", "//etc/passwd/..", "/./x"] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }
}
