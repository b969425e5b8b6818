//! The tools the agent uses to look at the repository: open a window of a file with line
//! numbers, search for a string, and the full repository map. Output is bounded so a tool
//! call cannot flood the prompt.

use super::answer::Tool;
use super::{edits, repomap};
use crate::workspace::Workspace;

/// Lines shown per `open` when the model names no end.
const WINDOW: usize = 100;
const MAX_OUTPUT: usize = 12_000;

/// Runs one tool call; errors are answers too (the model reads them and tries again).
pub(crate) async fn run(workspace: &Workspace, tool: &Tool, task_text: &str, map_tokens: usize) -> String {
    let output = match tool {
        Tool::Open { path, start, end } => open(workspace, path, *start, *end),
        Tool::Search(needle) => match workspace.grep(needle, 50).await {
            Ok(hits) if hits.is_empty() => format!("no match for `{needle}`"),
            Ok(hits) => format!("{} matches for `{needle}`:\n{}", hits.len(), hits.join("\n")),
            Err(error) => format!("search failed: {error}"),
        },
        Tool::Map => match workspace.files().await {
            Ok(files) => repomap::render(&repomap::scan(&workspace.dir, &files), task_text, map_tokens * 4),
            Err(error) => format!("cannot list files: {error}"),
        },
    };
    let kept = crate::text::prefix(&output, MAX_OUTPUT);
    if kept.len() == output.len() { output } else { format!("{kept}\n[output cut at {MAX_OUTPUT} bytes]") }
}

fn open(workspace: &Workspace, path: &str, start: usize, end: Option<usize>) -> String {
    let file = match edits::resolve(&workspace.dir, path) {
        Ok(file) => file,
        Err(error) => return error.to_string(),
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(error) => return format!("{path}: cannot open: {error}"),
    };
    let lines: Vec<&str> = text.lines().collect();
    let end = end.unwrap_or(start + WINDOW - 1).min(lines.len()).min(start + 4 * WINDOW);
    if start > lines.len().max(1) {
        return format!("{path} has {} lines", lines.len());
    }
    let shown: Vec<String> = (start..=end).map(|n| format!("{n:>5} | {}", lines[n - 1])).collect();
    format!("{path} (lines {start}-{end} of {}):\n{}", lines.len(), shown.join("\n"))
}
