//! The feature extractor: request text → a fixed-length vector, the same code for training
//! and serving. Versioned: a model records the version it was trained with, and serving
//! refuses a model whose version differs, because the same text would map to other numbers.
//!
//! Layout (`DIMENSIONS` = 1,024):
//! - `[0, 640)`: hashed word unigrams and bigrams (lower-cased), L2-normalised;
//! - `[640, 960)`: hashed character trigrams of the lower-cased text, L2-normalised;
//! - `[960, 1024)`: code-ish signals — lengths, file paths, stack traces, identifiers,
//!   versions, CVE ids, languages named, and so on.

/// Bump whenever the mapping from text to numbers changes in any way.
pub const FEATURE_VERSION: &str = "features-v1";
pub const DIMENSIONS: usize = 1024;

const WORD_BUCKETS: usize = 640;
const CHAR_BUCKETS: usize = 320;
const SIGNAL_OFFSET: usize = WORD_BUCKETS + CHAR_BUCKETS;
const SIGNALS: usize = DIMENSIONS - SIGNAL_OFFSET;

/// FNV-1a: fixed forever (unlike std's hasher), so features are stable across builds.
fn fnv1a(bytes: impl IntoIterator<Item = u8>, seed: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Adds `1` to a hashed bucket of `range`, with a sign from another bit so collisions cancel
/// rather than pile up (the "hashing trick").
fn add_hashed(vector: &mut [f32], offset: usize, buckets: usize, hash: u64) {
    let index = offset + (hash % buckets as u64) as usize;
    vector[index] += if hash >> 63 == 0 { 1.0 } else { -1.0 };
}

fn normalise(slice: &mut [f32]) {
    let norm = slice.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        slice.iter_mut().for_each(|v| *v /= norm);
    }
}

/// Words of the lower-cased text, as slices of it.
fn words(lower: &str) -> Vec<&str> {
    lower.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect()
}

/// Languages recognised by name; the signal is "this language is mentioned".
const LANGUAGE_WORDS: [&[&str]; 12] = [
    &["rust", "cargo", "rs"],
    &["python", "py", "pip", "django", "pytest"],
    &["typescript", "ts", "tsx", "angular"],
    &["javascript", "js", "node", "npm", "react"],
    &["go", "golang"],
    &["java", "maven", "gradle", "spring"],
    &["c#", "csharp", "dotnet", "cs"],
    &["cpp", "c++", "cmake", "hpp"],
    &["ruby", "rails", "gem", "rb"],
    &["php", "laravel", "composer"],
    &["kotlin", "kt"],
    &["swift", "xcode"],
];

/// The feature vector of `text`.
pub fn extract(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0_f32; DIMENSIONS];
    let lower = text.to_lowercase();
    let tokens = words(&lower);
    for (index, word) in tokens.iter().enumerate() {
        add_hashed(&mut vector, 0, WORD_BUCKETS, fnv1a(word.bytes(), 1));
        if let Some(next) = tokens.get(index + 1) {
            add_hashed(
                &mut vector,
                0,
                WORD_BUCKETS,
                fnv1a(word.bytes().chain([b' ']).chain(next.bytes()), 2),
            );
        }
    }
    normalise(&mut vector[..WORD_BUCKETS]);

    // Character trigrams over the UTF-8 bytes of three consecutive characters.
    let boundaries: Vec<usize> = lower.char_indices().map(|(i, _)| i).chain([lower.len()]).collect();
    for window in boundaries.windows(4) {
        let trigram = &lower.as_bytes()[window[0]..window[3]];
        add_hashed(&mut vector, WORD_BUCKETS, CHAR_BUCKETS, fnv1a(trigram.iter().copied(), 3));
    }
    normalise(&mut vector[WORD_BUCKETS..SIGNAL_OFFSET]);

    let signals = signals(text, &lower, &tokens);
    vector[SIGNAL_OFFSET..SIGNAL_OFFSET + signals.len()].copy_from_slice(&signals);
    vector
}

/// Counts over the whitespace-separated pieces of the original text, in one pass.
#[derive(Default)]
struct Pieces {
    paths: f32,
    source_files: f32,
    snake: f32,
    camel: f32,
    calls: f32,
    urls: f32,
    versions: f32,
    issue_refs: f32,
    constants: f32,
}

fn pieces(text: &str) -> Pieces {
    let mut p = Pieces::default();
    for w in text.split_whitespace() {
        let url = w.starts_with("http://") || w.starts_with("https://");
        p.urls += f32::from(u8::from(url));
        p.paths += f32::from(u8::from(!url && w.contains('/') && w.contains('.')));
        p.source_files += f32::from(u8::from(
            [".rs", ".py", ".ts", ".js", ".go", ".java"]
                .iter()
                .any(|ext| w.trim_end_matches([':', ',', '.', ')']).ends_with(ext)),
        ));
        p.snake += f32::from(u8::from(w.contains('_') && w.chars().any(char::is_alphabetic)));
        p.camel += f32::from(u8::from(
            w.chars().next().is_some_and(char::is_lowercase) && w.chars().skip(1).any(char::is_uppercase),
        ));
        p.calls += f32::from(u8::from(w.contains("()") || w.contains("::")));
        p.versions += f32::from(u8::from(
            w.matches('.').count() >= 2 && w.chars().all(|c| c.is_ascii_digit() || c == '.' || c == 'v'),
        ));
        p.issue_refs += f32::from(u8::from(
            w.len() > 1 && w.starts_with('#') && w[1..].chars().all(|c| c.is_ascii_digit()),
        ));
        p.constants +=
            f32::from(u8::from(w.len() > 2 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')));
    }
    p
}

fn signals(text: &str, lower: &str, tokens: &[&str]) -> Vec<f32> {
    let squash = |n: f32| (1.0 + n).ln(); // counts grow slowly: 0, 0.69, 1.1, 1.39, …
    let p = pieces(text);
    let lines = text.lines().count() as f32;
    let stack_trace = text.contains("Traceback")
        || text.contains("panicked at")
        || text.contains("Exception")
        || text.contains("    at ");
    let mut signals = vec![
        squash(text.chars().count() as f32) / 10.0,
        squash(tokens.len() as f32) / 8.0,
        squash(lines) / 5.0,
        squash(p.paths),
        squash(p.source_files),
        f32::from(u8::from(stack_trace)),
        squash(p.snake),
        squash(p.camel),
        squash(p.calls),
        f32::from(u8::from(text.contains("```"))),
        squash(p.urls),
        squash(p.versions),
        f32::from(u8::from(lower.contains("cve-"))),
        squash(text.matches('?').count() as f32),
        squash(lines / 10.0),
        squash(p.issue_refs),
        squash(p.constants),
    ];
    for names in LANGUAGE_WORDS {
        signals.push(f32::from(u8::from(tokens.iter().any(|t| names.contains(t)))));
    }
    signals.truncate(SIGNALS);
    signals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_have_the_fixed_length_and_are_deterministic() {
        let text = "Fix the flaky login test in src/auth/login.rs: it panicked at 'assertion failed'";
        let a = extract(text);
        assert_eq!(a.len(), DIMENSIONS);
        assert_eq!(a, extract(text));
        assert!(a.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn hashed_blocks_are_unit_length() {
        let v = extract("Add pagination to the users endpoint");
        let norm = |s: &[f32]| s.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm(&v[..WORD_BUCKETS]) - 1.0).abs() < 1e-5);
        assert!((norm(&v[WORD_BUCKETS..SIGNAL_OFFSET]) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn signals_notice_code_and_security() {
        let plain = extract("Please write better documentation for the README");
        let code = extract(
            "Traceback (most recent call last):\n  File \"app/main.py\", line 3\nCVE-2024-1234 in parse_header()",
        );
        let signal = |v: &[f32], i: usize| v[SIGNAL_OFFSET + i];
        assert_eq!(signal(&plain, 5), 0.0);
        assert_eq!(signal(&code, 5), 1.0, "stack trace");
        assert_eq!(signal(&code, 12), 1.0, "CVE id");
        assert!(signal(&code, 3) > 0.0, "file path");
        assert_eq!(signal(&extract("the python script"), 17 + 1), 1.0, "python named");
    }

    #[test]
    fn similar_requests_are_closer_than_unrelated_ones() {
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let a = extract("fix null pointer crash in the parser");
        let b = extract("fix crash in parser on null input");
        let c = extract("upgrade react to version 18");
        assert!(dot(&a, &b) > dot(&a, &c));
    }
}
