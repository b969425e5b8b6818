//! The repository map (after Aider's): every file with its top-level symbols, ranked by how
//! much the task text points at it, cut to a token budget so the first prompt shows the
//! model where to look without pasting the repository.

use std::path::Path;

/// A file and the symbols it defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileSymbols {
    pub path: String,
    pub symbols: Vec<String>,
}

/// Directories whose files are never mapped (dependencies, builds, caches).
const SKIPPED: [&str; 8] =
    ["node_modules/", "target/", "vendor/", "dist/", "build/", "__pycache__/", ".venv/", ".git/"];

/// Reads `files` under `root` and extracts their symbols (files over 256 KiB, binary files
/// and unknown languages are listed without symbols).
pub(crate) fn scan(root: &Path, files: &[String]) -> Vec<FileSymbols> {
    files
        .iter()
        .filter(|f| !SKIPPED.iter().any(|s| f.starts_with(s) || f.contains(&format!("/{s}"))))
        .take(5_000)
        .map(|path| {
            let full = root.join(path);
            let symbols = match std::fs::metadata(&full) {
                Ok(m) if m.len() <= 256 * 1024 => {
                    std::fs::read_to_string(&full).map(|text| symbols(path, &text)).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            FileSymbols { path: path.clone(), symbols }
        })
        .collect()
}

/// Top-level definitions, by the file's language.
pub(crate) fn symbols(path: &str, text: &str) -> Vec<String> {
    let ext = path.rsplit('.').next().unwrap_or_default();
    let mut found = Vec::new();
    for line in text.lines() {
        let symbol = match ext {
            "py" => ["def ", "class ", "async def "]
                .iter()
                .find_map(|p| line.strip_prefix(p))
                .map(|rest| rest.split(['(', ':']).next().unwrap_or(rest)),
            "rs" => {
                let l = line.trim_start_matches("pub ").trim_start_matches("pub(crate) ");
                ["fn ", "struct ", "enum ", "trait ", "mod ", "async fn ", "const "]
                    .iter()
                    .find_map(|p| l.strip_prefix(p).filter(|_| !line.starts_with(' ')))
                    .map(|rest| rest.split(['(', '<', ' ', '{', ';', ':']).next().unwrap_or(rest))
            }
            "js" | "mjs" | "cjs" | "ts" | "tsx" | "jsx" => {
                let l = line.trim_start_matches("export ").trim_start_matches("default ");
                ["function ", "async function ", "class ", "const ", "let "]
                    .iter()
                    .find_map(|p| l.strip_prefix(p).filter(|_| !line.starts_with(' ')))
                    .map(|rest| rest.split(['(', ' ', '=', '{', ';']).next().unwrap_or(rest))
            }
            "go" => line.strip_prefix("func ").or_else(|| line.strip_prefix("type ")).map(|rest| {
                let rest =
                    rest.strip_prefix('(').and_then(|r| r.split_once(") ").map(|(_, m)| m)).unwrap_or(rest);
                rest.split(['(', ' ', '[']).next().unwrap_or(rest)
            }),
            _ => None,
        };
        if let Some(symbol) = symbol.map(str::trim).filter(|s| !s.is_empty() && s.len() <= 80) {
            found.push(symbol.to_owned());
        }
    }
    found.dedup();
    found
}

/// How strongly the task text points at a file.
fn score(file: &FileSymbols, text: &str) -> i64 {
    let lower = text.to_lowercase();
    let path = file.path.to_lowercase();
    let stem = path.rsplit('/').next().unwrap_or(&path);
    let stem = stem.split('.').next().unwrap_or(stem);
    let mut score = 0;
    if lower.contains(&path) {
        score += 20;
    } else if stem.len() > 2 && lower.contains(stem) {
        score += 8;
    }
    score +=
        4 * file.symbols.iter().filter(|s| s.len() > 2 && lower.contains(&s.to_lowercase())).count() as i64;
    if path.contains("test") && lower.contains("test") {
        score += 2;
    }
    if !file.symbols.is_empty() {
        score += 1;
    }
    score - path.matches('/').count() as i64
}

/// The ranked map as text, within about `budget_tokens` (4 characters a token).
pub(crate) fn render(files: &[FileSymbols], text: &str, budget_tokens: usize) -> String {
    let mut ranked: Vec<(i64, &FileSymbols)> = files.iter().map(|f| (score(f, text), f)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.path.cmp(&b.1.path)));
    let budget = budget_tokens * 4;
    let mut out = String::new();
    let mut left_out = 0;
    for (_, file) in ranked {
        let mut entry = format!("{}\n", file.path);
        for symbol in file.symbols.iter().take(30) {
            entry.push_str(&format!("  {symbol}\n"));
        }
        if out.len() + entry.len() > budget {
            // A file without its symbols still fits more often than not.
            let bare = format!("{}\n", file.path);
            if out.len() + bare.len() > budget {
                left_out += 1;
                continue;
            }
            entry = bare;
        }
        out.push_str(&entry);
    }
    if left_out > 0 {
        out.push_str(&format!("(… {left_out} more files; use `ACTION: search` to find them)\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_per_language() {
        assert_eq!(
            symbols("a.py", "import os\ndef paginate(items):\n    pass\nclass Cart:\n"),
            ["paginate", "Cart"]
        );
        assert_eq!(symbols("a.rs", "pub fn add(a: i32) {}\nstruct S;\n    fn inner() {}\n"), ["add", "S"]);
        assert_eq!(
            symbols("a.js", "export function slugify(s) {}\nconst MAX = 3;\nmodule.exports = {};\n"),
            ["slugify", "MAX"]
        );
        assert_eq!(symbols("a.go", "func (c *Cart) Total() int {\ntype Cart struct {\n"), ["Total", "Cart"]);
    }

    #[test]
    fn files_the_task_names_come_first_and_the_budget_holds() {
        let files = vec![
            FileSymbols { path: "docs/guide.md".into(), symbols: vec![] },
            FileSymbols { path: "src/cart.py".into(), symbols: vec!["Cart".into(), "total".into()] },
            FileSymbols { path: "src/paging.py".into(), symbols: vec!["paginate".into()] },
        ];
        let map = render(&files, "paginate() returns one item too many", 1_000);
        assert!(map.starts_with("src/paging.py\n  paginate\n"), "{map}");
        let tiny = render(&files, "paginate", 8);
        assert!(tiny.len() <= 8 * 4 + 60, "{tiny}");
        assert!(tiny.contains("more files"));
    }
}
