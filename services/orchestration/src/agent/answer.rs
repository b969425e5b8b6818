//! Reading a model's answer: tool calls, SEARCH/REPLACE blocks and unified diffs. Anything
//! else is prose. An answer with none of them is "malformed" and goes back to the model
//! with the format reminder, as a failed attempt, never a crash.

/// One SEARCH/REPLACE block.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Replace {
    pub path: String,
    pub search: String,
    pub replace: String,
}

/// A tool the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Tool {
    /// `open PATH [START[-END]]`
    Open { path: String, start: usize, end: Option<usize> },
    /// `search TEXT`
    Search(String),
    /// `map`
    Map,
}

/// What an answer asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Answer {
    pub tools: Vec<Tool>,
    pub replaces: Vec<Replace>,
    pub diffs: Vec<String>,
    /// Blocks that started but never closed, for the error message.
    pub broken: Vec<String>,
}

impl Answer {
    pub(crate) fn has_edits(&self) -> bool {
        !self.replaces.is_empty() || !self.diffs.is_empty()
    }
}

const SEARCH: &str = "<<<<<<< SEARCH";
const DIVIDER: &str = "=======";
const REPLACE: &str = ">>>>>>> REPLACE";

/// Parses an answer. Tool calls are lines `ACTION: open src/lib.rs 10-40`, `ACTION: search
/// paginate`, `ACTION: map`; edits are SEARCH/REPLACE blocks preceded by the file's path on
/// its own line (optionally in a code fence), or ```diff fences.
pub(crate) fn parse(text: &str) -> Answer {
    let mut answer = Answer::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if let Some(action) = line.trim_start().strip_prefix("ACTION:") {
            if let Some(tool) = tool(action.trim()) {
                answer.tools.push(tool);
            } else {
                answer.broken.push(format!("unknown action `{}`", action.trim()));
            }
            i += 1;
            continue;
        }
        if line.trim() == SEARCH {
            let path = path_before(&lines, i);
            let (block, next) = block(&lines, i + 1);
            match (path, block) {
                (Some(path), Some((search, replace))) => {
                    answer.replaces.push(Replace { path, search, replace })
                }
                (None, _) => {
                    answer.broken.push(format!("a SEARCH block at line {} has no file path before it", i + 1))
                }
                (_, None) => answer
                    .broken
                    .push(format!("the SEARCH block at line {} is not closed with {REPLACE}", i + 1)),
            }
            i = next;
            continue;
        }
        if line.trim_start().starts_with("```diff") || line.trim_start().starts_with("```patch") {
            let end = (i + 1..lines.len()).find(|&j| lines[j].trim_start().starts_with("```"));
            match end {
                Some(end) => {
                    let mut diff = lines[i + 1..end].join("\n");
                    diff.push('\n');
                    answer.diffs.push(diff);
                    i = end + 1;
                }
                None => {
                    answer.broken.push(format!("the diff at line {} is not closed with ```", i + 1));
                    i = lines.len();
                }
            }
            continue;
        }
        i += 1;
    }
    answer
}

fn tool(action: &str) -> Option<Tool> {
    let mut words = action.splitn(2, char::is_whitespace);
    let name = words.next()?.to_ascii_lowercase();
    let rest = words.next().unwrap_or_default().trim();
    match name.as_str() {
        "map" => Some(Tool::Map),
        "search" if !rest.is_empty() => Some(Tool::Search(rest.trim_matches('`').to_owned())),
        "open" if !rest.is_empty() => {
            let mut parts = rest.split_whitespace();
            let path = parts.next()?.trim_matches('`').to_owned();
            let (start, end) = match parts.next() {
                None => (1, None),
                Some(range) => {
                    let (a, b) = range.split_once('-').unwrap_or((range, ""));
                    (a.parse().ok()?, b.parse().ok())
                }
            };
            Some(Tool::Open { path, start: start.max(1), end })
        }
        _ => None,
    }
}

/// The path on the closest non-empty line above a SEARCH marker, skipping a code fence.
fn path_before(lines: &[&str], at: usize) -> Option<String> {
    let mut j = at;
    while j > 0 {
        j -= 1;
        let candidate = lines[j].trim();
        if candidate.is_empty() || candidate.starts_with("```") {
            continue;
        }
        let candidate = candidate.trim_matches(['`', '*', ':']).trim();
        let looks_like_path = !candidate.contains(' ') && candidate.len() <= 1_024 && !candidate.is_empty();
        return looks_like_path.then(|| candidate.to_owned());
    }
    None
}

/// The SEARCH and REPLACE texts of a block starting at `from` (after the marker).
fn block(lines: &[&str], from: usize) -> (Option<(String, String)>, usize) {
    let Some(divider) = (from..lines.len()).find(|&j| lines[j].trim() == DIVIDER) else {
        return (None, lines.len());
    };
    let Some(end) = (divider + 1..lines.len()).find(|&j| lines[j].trim() == REPLACE) else {
        return (None, lines.len());
    };
    let join = |part: &[&str]| if part.is_empty() { String::new() } else { format!("{}\n", part.join("\n")) };
    (Some((join(&lines[from..divider]), join(&lines[divider + 1..end]))), end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_replace_blocks_tools_and_diffs_are_found() {
        let text = "I will fix it.\nACTION: open src/app.py 10-40\nACTION: search def paginate\n\n\
                    src/app.py\n```python\n<<<<<<< SEARCH\n    return items[start:end + 1]\n=======\n    return items[start:end]\n>>>>>>> REPLACE\n```\n\
                    ```diff\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-old\n+new\n```\n";
        let answer = parse(text);
        assert_eq!(
            answer.tools,
            [
                Tool::Open { path: "src/app.py".into(), start: 10, end: Some(40) },
                Tool::Search("def paginate".into())
            ]
        );
        assert_eq!(
            answer.replaces,
            [Replace {
                path: "src/app.py".into(),
                search: "    return items[start:end + 1]\n".into(),
                replace: "    return items[start:end]\n".into()
            }]
        );
        assert_eq!(answer.diffs.len(), 1);
        assert!(answer.diffs[0].starts_with("--- a/README.md"));
        assert!(answer.broken.is_empty());
    }

    #[test]
    fn prose_and_broken_blocks_are_not_edits() {
        assert!(!parse("The bug is in paginate(); change the slice.").has_edits());
        let broken = parse("a.py\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n");
        assert!(!broken.has_edits());
        assert_eq!(broken.broken.len(), 1);
        let no_path = parse("<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n");
        assert!(no_path.broken[0].contains("no file path"));
        assert_eq!(parse("ACTION: explode").broken, ["unknown action `explode`"]);
    }

    #[test]
    fn an_empty_search_creates_a_file() {
        let answer = parse("tests/new_test.py\n<<<<<<< SEARCH\n=======\nimport app\n>>>>>>> REPLACE\n");
        assert_eq!(answer.replaces[0].search, "");
        assert_eq!(answer.replaces[0].replace, "import app\n");
    }
}
