//! Checks on an uploaded file that need no I/O: its content type, decided by its leading
//! bytes rather than by what the client claims, and its file name, sanitised from the raw
//! `Content-Disposition` header so that invalid UTF-8 is refused rather than guessed at.

/// Content types accepted for upload (see `Attachment.content_type` in the contract).
pub(crate) const ALLOWED: [&str; 13] = [
    "text/plain",
    "text/markdown",
    "text/csv",
    "text/x-diff",
    "application/json",
    "application/x-yaml",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
];

const TEXT: [&str; 6] =
    ["text/plain", "text/markdown", "text/csv", "text/x-diff", "application/json", "application/x-yaml"];

const MAX_FILENAME: usize = 255;

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not an allowed type (HTTP 415).
    Unsupported(String),
    /// The request itself is wrong (HTTP 400), naming the part.
    Invalid { field: &'static str, reason: String },
}

/// A binary format recognised by its signature.
fn signature(bytes: &[u8]) -> Option<&'static str> {
    let starts = |prefix: &[u8]| bytes.starts_with(prefix);
    if starts(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if starts(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if starts(b"%PDF-") {
        Some("application/pdf")
    } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        Some("application/zip")
    } else if starts(b"\x1f\x8b") {
        Some("application/gzip")
    } else {
        None
    }
}

/// Markup a browser would run scripts in; refused even when declared as text.
fn is_markup(text: &str) -> bool {
    let head: String = text.trim_start().chars().take(256).collect::<String>().to_ascii_lowercase();
    ["<!doctype html", "<html", "<svg", "<?xml", "<script"].iter().any(|m| head.starts_with(m))
}

fn by_extension(filename: &str) -> &'static str {
    let extension = filename.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "md" | "markdown" => "text/markdown",
        "csv" => "text/csv",
        "diff" | "patch" => "text/x-diff",
        "json" => "application/json",
        "yaml" | "yml" => "application/x-yaml",
        _ => "text/plain",
    }
}

/// The content type of a file: its signature decides for binary formats; text must be UTF-8
/// without NUL bytes and not markup, and takes the declared text type or its extension's.
/// `head` is the file's first bytes (at least 512 when it is that long); `whole_is_utf8`
/// says whether the complete file decoded as UTF-8.
pub(crate) fn content_type(
    head: &[u8],
    whole_is_utf8: bool,
    declared: Option<&str>,
    filename: &str,
) -> Result<&'static str, Refusal> {
    let declared = declared.map(|d| d.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    if let Some(found) = signature(head) {
        return match declared.as_deref() {
            None | Some("application/octet-stream") => Ok(found),
            Some(d) if d == found => Ok(found),
            Some(d) => Err(Refusal::Unsupported(format!("declared {d}, but the file is {found}"))),
        };
    }
    if !whole_is_utf8 || head.contains(&0) {
        return Err(Refusal::Unsupported("the file is neither text nor an allowed binary format".into()));
    }
    if is_markup(&String::from_utf8_lossy(head)) {
        return Err(Refusal::Unsupported("HTML, SVG and XML are refused: they can carry scripts".into()));
    }
    match declared.as_deref() {
        Some(d) if TEXT.contains(&d) => Ok(TEXT.iter().copied().find(|t| *t == d).unwrap_or("text/plain")),
        None | Some("application/octet-stream") => Ok(by_extension(filename)),
        Some(d) if ALLOWED.contains(&d) => {
            Err(Refusal::Unsupported(format!("declared {d}, but the file is text")))
        }
        Some(d) => Err(Refusal::Unsupported(format!("{d} is not an allowed content type"))),
    }
}

/// The sanitised file name from a part's raw `Content-Disposition` header: the last path
/// component, without control characters, at most 255 characters. `filename*=UTF-8''…`
/// (RFC 5987) wins over `filename="…"`.
pub(crate) fn filename(disposition: &[u8]) -> Result<String, Refusal> {
    let invalid = |reason: &str| Refusal::Invalid { field: "file", reason: reason.to_owned() };
    let raw = extended_filename(disposition)?
        .or_else(|| quoted_filename(disposition))
        .ok_or_else(|| invalid("the part has no file name"))?;
    let name = String::from_utf8(raw).map_err(|_| invalid("the file name is not valid UTF-8"))?;
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim().trim_start_matches('.').to_owned();
    if clean.is_empty() {
        return Err(invalid("the file name is empty after removing path and control characters"));
    }
    if clean.chars().count() > MAX_FILENAME {
        return Err(invalid("the file name is longer than 255 characters"));
    }
    // Sanitising removed every control character; the shared text rule still has the last
    // word, so a name can never carry what other free text may not.
    codingagent_kernel::validate::text("file", &clean).map_err(|v| invalid(&v.description))?;
    Ok(clean)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle))
}

fn quoted_filename(disposition: &[u8]) -> Option<Vec<u8>> {
    let start = find(disposition, b"filename=")? + b"filename=".len();
    let rest = &disposition[start..];
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let end = quoted.iter().position(|b| *b == b'"')?;
        Some(quoted[..end].to_vec())
    } else {
        let end = rest.iter().position(|b| *b == b';').unwrap_or(rest.len());
        Some(rest[..end].trim_ascii().to_vec())
    }
}

fn extended_filename(disposition: &[u8]) -> Result<Option<Vec<u8>>, Refusal> {
    let Some(start) = find(disposition, b"filename*=") else { return Ok(None) };
    let rest = &disposition[start + b"filename*=".len()..];
    let end = rest.iter().position(|b| *b == b';').unwrap_or(rest.len());
    let value = rest[..end].trim_ascii();
    let Some(encoded) = value.strip_prefix(b"UTF-8''").or_else(|| value.strip_prefix(b"utf-8''")) else {
        return Err(Refusal::Invalid {
            field: "file",
            reason: "only UTF-8 extended file names are accepted".into(),
        });
    };
    let mut out = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hex = [*bytes.next().unwrap_or(&b'x'), *bytes.next().unwrap_or(&b'x')];
            let decoded = std::str::from_utf8(&hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(decoded.ok_or(Refusal::Invalid {
                field: "file",
                reason: "malformed percent-encoding in the file name".into(),
            })?);
        } else {
            out.push(b);
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_types_come_from_the_bytes_not_the_claim() {
        assert_eq!(
            content_type(b"\x89PNG\r\n\x1a\n....", false, Some("image/png"), "a.png"),
            Ok("image/png")
        );
        assert_eq!(content_type(b"%PDF-1.7 ...", false, None, "x"), Ok("application/pdf"));
        assert_eq!(
            content_type(b"RIFF\0\0\0\0WEBPVP8 ", false, Some("application/octet-stream"), "x"),
            Ok("image/webp")
        );
        assert!(matches!(
            content_type(b"\x89PNG\r\n\x1a\n", false, Some("image/jpeg"), "a.jpg"),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(
            content_type(b"MZ\x90\0\x03", false, None, "setup.exe"),
            Err(Refusal::Unsupported(_))
        ));
    }

    #[test]
    fn text_must_be_utf8_and_never_markup() {
        assert_eq!(content_type(b"# Notes", true, Some("text/markdown"), "n.md"), Ok("text/markdown"));
        assert_eq!(content_type(b"a,b\n1,2", true, None, "data.CSV"), Ok("text/csv"));
        assert_eq!(content_type(b"--- a\n+++ b", true, None, "fix.patch"), Ok("text/x-diff"));
        assert_eq!(content_type(b"plain", true, Some("text/plain; charset=utf-8"), "x"), Ok("text/plain"));
        assert!(matches!(
            content_type(b"\xff\xfe bad", false, Some("text/plain"), "x"),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(
            content_type(b"  <!DOCTYPE html><script>", true, Some("text/plain"), "x"),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(
            content_type(b"<svg onload=alert(1)>", true, None, "x.svg"),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(
            content_type(b"body", true, Some("text/html"), "x.html"),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(
            content_type(b"text", true, Some("image/png"), "x.png"),
            Err(Refusal::Unsupported(_))
        ));
    }

    #[test]
    fn file_names_are_sanitised_and_invalid_utf8_is_refused() {
        assert_eq!(filename(b"form-data; name=\"file\"; filename=\"report.pdf\""), Ok("report.pdf".into()));
        assert_eq!(filename(b"form-data; name=\"file\"; filename=\"../../etc/passwd\""), Ok("passwd".into()));
        assert_eq!(
            filename(b"form-data; name=\"file\"; filename=\"C:\\\\temp\\\\a\x07b.txt\""),
            Ok("ab.txt".into())
        );
        assert_eq!(
            filename(b"form-data; name=\"file\"; filename*=UTF-8''r%C3%A9sum%C3%A9.md"),
            Ok("résumé.md".into())
        );
        let invalid = filename(b"form-data; name=\"file\"; filename=\"bad\xff\xfe.txt\"");
        assert!(matches!(invalid, Err(Refusal::Invalid { reason, .. }) if reason.contains("UTF-8")));
        assert!(matches!(filename(b"form-data; name=\"file\""), Err(Refusal::Invalid { .. })));
        assert!(matches!(filename(b"form-data; filename=\"../\""), Err(Refusal::Invalid { .. })));
        let long = format!("form-data; filename=\"{}.txt\"", "a".repeat(300));
        assert!(matches!(filename(long.as_bytes()), Err(Refusal::Invalid { .. })));
    }
}
