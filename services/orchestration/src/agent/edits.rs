//! Applying SEARCH/REPLACE blocks. Matching tries the exact text first, then ignores
//! trailing whitespace, then ignores indentation (re-indenting the replacement by the
//! difference) — the mistakes models make most. A block that still does not match, or
//! matches more than once, is an error that quotes the closest lines of the file, so the
//! model can correct itself on its next turn.

use super::answer::Replace;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EditError {
    #[error("{0}: the path must be relative, inside the repository and outside .git")]
    BadPath(String),
    #[error("{path}: the SEARCH text was not found.{hint}")]
    NoMatch { path: String, hint: String },
    #[error("{path}: the SEARCH text matches {count} places; include more lines to make it unique")]
    Ambiguous { path: String, count: usize },
    #[error("{path}: cannot read or write the file: {reason}")]
    Io { path: String, reason: String },
}

/// The file `path` names inside `root`, refusing escapes (absolute paths, `..`, `.git`).
pub(crate) fn resolve(root: &Path, path: &str) -> Result<PathBuf, EditError> {
    let relative = Path::new(path);
    let bad = path.is_empty()
        || relative.is_absolute()
        || relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        || relative.components().next().is_some_and(|c| c.as_os_str() == ".git");
    if bad {
        return Err(EditError::BadPath(path.to_owned()));
    }
    let full = root.join(relative);
    // A symlink inside the repository must not lead outside it either.
    if let Ok(real) = full.canonicalize()
        && let Ok(real_root) = root.canonicalize()
        && !real.starts_with(real_root)
    {
        return Err(EditError::BadPath(path.to_owned()));
    }
    Ok(full)
}

/// Applies the blocks in order; each sees the previous ones' result. Stops at the first
/// error (the working tree may hold the blocks before it; callers reset to the checkpoint).
/// Returns the paths changed.
pub(crate) fn apply_all(root: &Path, blocks: &[Replace]) -> Result<Vec<String>, EditError> {
    let mut changed = Vec::new();
    for block in blocks {
        let file = resolve(root, &block.path)?;
        let io = |e: std::io::Error| EditError::Io { path: block.path.clone(), reason: e.to_string() };
        let exists = file.exists();
        let content = if exists { std::fs::read_to_string(&file).map_err(io)? } else { String::new() };
        let updated = if block.search.trim().is_empty() {
            if exists && !content.trim().is_empty() {
                // An empty SEARCH on an existing file appends, as Aider does.
                format!("{content}{}{}", if content.ends_with('\n') { "" } else { "\n" }, block.replace)
            } else {
                block.replace.clone()
            }
        } else {
            replace_once(&content, &block.search, &block.replace).map_err(|e| match e {
                Miss::None => EditError::NoMatch {
                    path: block.path.clone(),
                    hint: hint(&content, &block.search, exists),
                },
                Miss::Many(count) => EditError::Ambiguous { path: block.path.clone(), count },
            })?
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&file, updated).map_err(io)?;
        if !changed.contains(&block.path) {
            changed.push(block.path.clone());
        }
    }
    Ok(changed)
}

#[derive(Debug, PartialEq, Eq)]
enum Miss {
    None,
    Many(usize),
}

/// Replaces the one occurrence of `search` in `content`, trying ever looser matches.
fn replace_once(content: &str, search: &str, replace: &str) -> Result<String, Miss> {
    match content.matches(search).count() {
        1 => return Ok(content.replacen(search, replace, 1)),
        n if n > 1 => return Err(Miss::Many(n)),
        _ => {}
    }
    let lines: Vec<&str> = content.split_inclusive('\n').collect();
    let wanted: Vec<&str> = search.lines().collect();
    if wanted.is_empty() {
        return Err(Miss::None);
    }
    for loose in [Loose::TrailingSpace, Loose::Indentation] {
        let key = |l: &str| match loose {
            Loose::TrailingSpace => l.trim_end().to_owned(),
            Loose::Indentation => l.trim().to_owned(),
        };
        let wanted_keys: Vec<String> = wanted.iter().map(|l| key(l)).collect();
        let starts: Vec<usize> = (0..=lines.len().saturating_sub(wanted.len()))
            .filter(|&s| {
                lines.len() >= wanted.len() && (0..wanted.len()).all(|k| key(lines[s + k]) == wanted_keys[k])
            })
            .collect();
        match starts.as_slice() {
            [] => continue,
            [start] => {
                let replacement = match loose {
                    Loose::TrailingSpace => replace.to_owned(),
                    Loose::Indentation => reindent(replace, indent(wanted[0]), indent(lines[*start])),
                };
                let mut out: String = lines[..*start].concat();
                out.push_str(&replacement);
                if !replacement.is_empty() && !replacement.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&lines[start + wanted.len()..].concat());
                return Ok(out);
            }
            many => return Err(Miss::Many(many.len())),
        }
    }
    Err(Miss::None)
}

#[derive(Clone, Copy)]
enum Loose {
    TrailingSpace,
    Indentation,
}

fn indent(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

/// Moves every line of `text` from indentation `from` to `to`.
fn reindent(text: &str, from: &str, to: &str) -> String {
    text.split_inclusive('\n')
        .map(|l| match l.strip_prefix(from) {
            Some(rest) if !l.trim().is_empty() => format!("{to}{rest}"),
            _ => l.to_owned(),
        })
        .collect()
}

/// The file's lines most like the SEARCH text's first line, to show the model.
fn hint(content: &str, search: &str, exists: bool) -> String {
    if !exists {
        return " The file does not exist; to create it, use an empty SEARCH section.".into();
    }
    let first = search.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim();
    let words: Vec<&str> =
        first.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|w| w.len() > 2).collect();
    let best = content
        .lines()
        .enumerate()
        .map(|(i, l)| (words.iter().filter(|w| l.contains(*w)).count(), i))
        .filter(|(score, _)| *score > 0)
        .max_by_key(|(score, i)| (*score, usize::MAX - i));
    match best {
        None => " No line of the file resembles it; open the file to see its current content.".into(),
        Some((_, at)) => {
            let lines: Vec<&str> = content.lines().collect();
            let from = at.saturating_sub(2);
            let to = (at + 3).min(lines.len());
            let shown: Vec<String> = (from..to).map(|i| format!("{:>5} | {}", i + 1, lines[i])).collect();
            format!(" The closest lines are:\n{}", shown.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(path: &str, search: &str, replace: &str) -> Replace {
        Replace { path: path.into(), search: search.into(), replace: replace.into() }
    }

    fn repo(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edits-{}", uuid::Uuid::new_v4()));
        for (path, content) in files {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, content).unwrap();
        }
        dir
    }

    #[test]
    fn exact_then_whitespace_tolerant_matches() {
        assert_eq!(replace_once("a\nb\nc\n", "b\n", "B\n").unwrap(), "a\nB\nc\n");
        // Trailing spaces the model dropped.
        assert_eq!(replace_once("a  \nb\n", "a\nb\n", "x\n").unwrap(), "x\n");
        // Indentation the model got wrong: the replacement takes the file's indentation.
        let file = "def f():\n    if x:\n        return 1\n";
        let fixed = replace_once(file, "if x:\n    return 1\n", "if x:\n    return 2\n").unwrap();
        assert_eq!(fixed, "def f():\n    if x:\n        return 2\n");
        assert_eq!(replace_once("x\nx\n", "x\n", "y\n"), Err(Miss::Many(2)));
        assert_eq!(replace_once("a\n", "zzz\n", "y\n"), Err(Miss::None));
    }

    #[test]
    fn a_miss_quotes_the_closest_lines() {
        let dir = repo(&[(
            "app.py",
            "def paginate(items, page):\n    start = page * 10\n    return items[start:start + 11]\n",
        )]);
        let error =
            apply_all(&dir, &[block("app.py", "    return items[start:start+11]\n", "x\n")]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("not found") && text.contains("3 |     return items[start:start + 11]"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn files_are_changed_created_and_kept_inside_the_repository() {
        let dir = repo(&[("src/a.txt", "one\ntwo\n")]);
        let changed =
            apply_all(&dir, &[block("src/a.txt", "two\n", "2\n"), block("new/b.txt", "", "hello\n")])
                .unwrap();
        assert_eq!(changed, ["src/a.txt", "new/b.txt"]);
        assert_eq!(std::fs::read_to_string(dir.join("src/a.txt")).unwrap(), "one\n2\n");
        assert_eq!(std::fs::read_to_string(dir.join("new/b.txt")).unwrap(), "hello\n");
        for escape in ["../x", "/etc/passwd", ".git/config", "a/../../x", ""] {
            assert!(
                matches!(apply_all(&dir, &[block(escape, "", "x")]), Err(EditError::BadPath(_))),
                "{escape}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
