//! The cascade's first stage: keyword rules that take microseconds and are sure about the
//! obvious cases ("bump serde to 1.0.200", "CVE-2024-1234 in the parser"). When no rule clearly
//! wins, its confidence is low and the ONNX model decides.

/// Task types in the contract's order (`codingagent.common.v1.TaskType`, 1-based there).
pub const TASK_TYPES: [&str; 9] = [
    "bug_fix",
    "feature",
    "refactor",
    "test",
    "documentation",
    "dependency",
    "performance",
    "security",
    "other",
];
/// Complexities in the contract's order.
pub const COMPLEXITIES: [&str; 3] = ["simple", "medium", "complex"];

/// (task type index, cue, weight). Multi-word cues are matched as phrases.
const CUES: &[(usize, &str, f32)] = &[
    (0, "fix", 1.0),
    (0, "bug", 1.5),
    (0, "crash", 1.5),
    (0, "error", 1.0),
    (0, "exception", 1.0),
    (0, "broken", 1.2),
    (0, "fails", 1.0),
    (0, "failing", 1.0),
    (0, "regression", 1.5),
    (0, "panic", 1.2),
    (0, "panicked", 1.2),
    (0, "wrong", 0.8),
    (0, "incorrect", 1.0),
    (0, "null pointer", 1.5),
    (1, "add", 1.0),
    (1, "implement", 1.5),
    (1, "support", 0.8),
    (1, "new", 0.6),
    (1, "feature", 1.5),
    (1, "allow", 0.8),
    (1, "introduce", 1.0),
    (1, "create", 0.8),
    (1, "enable", 0.6),
    (2, "refactor", 2.5),
    (2, "clean up", 1.5),
    (2, "cleanup", 1.5),
    (2, "restructure", 2.0),
    (2, "simplify", 1.5),
    (2, "rename", 1.5),
    (2, "extract", 1.0),
    (2, "deduplicate", 1.5),
    (3, "test", 1.2),
    (3, "tests", 1.2),
    (3, "unit test", 2.0),
    (3, "coverage", 2.0),
    (3, "integration test", 2.0),
    (3, "flaky", 1.0),
    (4, "docs", 2.0),
    (4, "documentation", 2.5),
    (4, "readme", 2.5),
    (4, "typo", 1.5),
    (4, "docstring", 2.0),
    (4, "comment", 1.0),
    (4, "guide", 1.2),
    (4, "document", 1.5),
    (5, "upgrade", 1.5),
    (5, "bump", 2.5),
    (5, "dependency", 2.0),
    (5, "dependencies", 2.0),
    (5, "update to version", 2.0),
    (5, "dockerfile", 2.0),
    (5, "ci", 1.2),
    (5, "pipeline", 1.0),
    (5, "deploy", 1.5),
    (5, "deployment", 1.5),
    (5, "lockfile", 2.0),
    (5, "package.json", 1.5),
    (5, "cargo.toml", 1.5),
    (5, "requirements.txt", 1.5),
    (6, "performance", 2.5),
    (6, "slow", 1.5),
    (6, "faster", 1.5),
    (6, "optimize", 2.0),
    (6, "optimise", 2.0),
    (6, "latency", 2.0),
    (6, "memory usage", 2.0),
    (6, "speed up", 2.0),
    (6, "cache", 0.8),
    (7, "security", 2.5),
    (7, "vulnerability", 3.0),
    (7, "cve", 3.0),
    (7, "xss", 3.0),
    (7, "injection", 2.5),
    (7, "csrf", 3.0),
    (7, "sanitize", 1.5),
    (7, "exploit", 2.5),
    (7, "secret", 1.0),
    (7, "leak", 0.8),
];

/// Words that make a change bigger or smaller than its length suggests.
const COMPLEX_CUES: &[&str] = &[
    "architecture",
    "migrate",
    "migration",
    "rewrite",
    "redesign",
    "across",
    "every",
    "entire",
    "multiple services",
    "distributed",
    "end to end",
];
const SIMPLE_CUES: &[&str] = &["typo", "bump", "rename", "one line", "small", "minor", "trivial", "wording"];

/// The heuristic's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guess {
    pub task_type: usize,
    pub type_confidence: f32,
    pub complexity: usize,
    pub complexity_confidence: f32,
}

fn contains_phrase(words: &[&str], phrase: &str) -> bool {
    let parts: Vec<&str> = phrase.split(' ').collect();
    words.windows(parts.len()).any(|w| w == parts.as_slice())
}

/// Classifies `text` by its cues.
pub fn classify(text: &str) -> Guess {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut scores = [0.0_f32; TASK_TYPES.len()];
    for &(class, cue, weight) in CUES {
        if contains_phrase(&words, cue) {
            scores[class] += weight;
        }
    }
    // Confidence: the winner's share of the evidence, shrunk when there is little of it.
    let total: f32 = scores.iter().sum();
    let (task_type, top) =
        scores.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((8, 0.0));
    let (task_type, type_confidence) = if top == 0.0 {
        (TASK_TYPES.len() - 1, 0.2)
    } else {
        (task_type, (top / total) * (total / (total + 1.0)))
    };

    let complex = COMPLEX_CUES.iter().filter(|c| contains_phrase(&words, c)).count();
    let simple = SIMPLE_CUES.iter().filter(|c| contains_phrase(&words, c)).count();
    let length = words.len();
    let (complexity, complexity_confidence) = match (simple, complex, length) {
        (s, 0, l) if s > 0 && l < 40 => (0, 0.8),
        (0, c, _) if c >= 2 => (2, 0.8),
        (_, c, l) if c >= 1 && l > 60 => (2, 0.6),
        (0, 0, l) if l < 12 => (0, 0.5),
        (0, 0, l) if l > 150 => (2, 0.5),
        _ => (1, 0.4),
    };
    Guess { task_type, type_confidence, complexity, complexity_confidence }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> &'static str {
        TASK_TYPES[classify(text).task_type]
    }

    #[test]
    fn obvious_requests_are_recognised() {
        assert_eq!(kind("Fix the crash when the config file is missing"), "bug_fix");
        assert_eq!(kind("Implement CSV export for the reports page"), "feature");
        assert_eq!(kind("Refactor the session module and simplify its error handling"), "refactor");
        assert_eq!(kind("Increase unit test coverage of the billing module"), "test");
        assert_eq!(kind("Fix typos in the README and document the deploy flags"), "documentation");
        assert_eq!(kind("Bump serde to 1.0.200 in Cargo.toml"), "dependency");
        assert_eq!(kind("The search endpoint is slow; optimize the query latency"), "performance");
        assert_eq!(kind("CVE-2024-1234: XSS vulnerability in the comment renderer"), "security");
        assert_eq!(kind("Hello there"), "other");
    }

    #[test]
    fn confidence_reflects_how_clear_the_evidence_is() {
        let clear = classify("Security: fix the XSS vulnerability (CVE-2024-1234)");
        let mixed = classify("add a test");
        assert!(clear.type_confidence > 0.6, "{clear:?}");
        assert!(mixed.type_confidence < clear.type_confidence);
        assert!(classify("Hello there").type_confidence < 0.3);
    }

    #[test]
    fn complexity_follows_cues_and_length() {
        assert_eq!(COMPLEXITIES[classify("Fix a typo in the footer").complexity], "simple");
        assert_eq!(
            COMPLEXITIES[classify("Migrate the entire data layer to the new architecture across services")
                .complexity],
            "complex"
        );
        assert_eq!(
            COMPLEXITIES[classify(
                "Add an endpoint that lists the invoices of a customer with paging and a date filter"
            )
            .complexity],
            "medium"
        );
    }
}
