//! The prompts, as versioned template files under `prompts/` (`name.vN.txt`): a change of
//! wording is a new version, and the golden tests below show exactly what a model receives.
//! Placeholders are `{{name}}`; a missing value is a bug, caught by the tests.

/// The version recorded with every model call in the task log.
pub(crate) const VERSION: &str = "v1";

pub(crate) const CODER: &str = include_str!("../../prompts/coder.v1.txt");
const TASK: &str = include_str!("../../prompts/task.v1.txt");
const TEST_FAILED: &str = include_str!("../../prompts/test_failed.v1.txt");
const APPLY_FAILED: &str = include_str!("../../prompts/apply_failed.v1.txt");
const NO_EDITS: &str = include_str!("../../prompts/no_edits.v1.txt");
const TOOL_RESULTS: &str = include_str!("../../prompts/tool_results.v1.txt");
const PLANNER: &str = include_str!("../../prompts/planner.v1.txt");
const PLAN_ITEM: &str = include_str!("../../prompts/plan_item.v1.txt");
const REVIEWER: &str = include_str!("../../prompts/reviewer.v1.txt");

fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    debug_assert!(!out.contains("{{"), "unfilled placeholder in a prompt");
    out
}

pub(crate) fn task(request: &str, map: &str, test_command: &str) -> String {
    render(TASK, &[("request", request.trim()), ("map", map), ("test_command", test_command)])
}

pub(crate) fn test_failed(
    iteration: i32,
    max_iterations: i32,
    exit_code: Option<i32>,
    output: &str,
) -> String {
    let code = exit_code.map_or_else(|| "none (killed)".to_owned(), |c| c.to_string());
    render(
        TEST_FAILED,
        &[
            ("iteration", &iteration.to_string()),
            ("max_iterations", &max_iterations.to_string()),
            ("exit_code", &code),
            ("output", output.trim_end()),
        ],
    )
}

pub(crate) fn apply_failed(error: &str) -> String {
    render(APPLY_FAILED, &[("error", error)])
}

pub(crate) fn no_edits(problems: &[String]) -> String {
    let problems = if problems.is_empty() { String::new() } else { format!(" ({})", problems.join("; ")) };
    render(NO_EDITS, &[("problems", &problems)])
}

pub(crate) fn tool_results(results: &[(String, String)], turns_left: u32) -> String {
    let results: Vec<String> = results.iter().map(|(call, out)| format!("[{call}]\n{out}")).collect();
    let reminder = if turns_left == 0 {
        "You have used your tool turns for this iteration: reply with SEARCH/REPLACE blocks now.".to_owned()
    } else {
        format!("({turns_left} tool turns left before an edit is due.)")
    };
    render(TOOL_RESULTS, &[("results", &results.join("\n\n")), ("reminder", &reminder)])
}

pub(crate) fn planner(request: &str, map: &str, max_items: usize) -> String {
    render(PLANNER, &[("request", request.trim()), ("map", map), ("max_items", &max_items.to_string())])
}

pub(crate) fn plan_item(
    index: usize,
    count: usize,
    title: &str,
    description: &str,
    files: &[String],
) -> String {
    let files = if files.is_empty() { "(not stated)".to_owned() } else { files.join(", ") };
    render(
        PLAN_ITEM,
        &[
            ("index", &index.to_string()),
            ("count", &count.to_string()),
            ("title", title),
            ("description", description),
            ("files", &files),
        ],
    )
}

pub(crate) fn reviewer(title: &str, description: &str, diff: &str) -> String {
    render(REVIEWER, &[("title", title), ("description", description), ("diff", diff)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares with `prompts/golden/NAME`; `UPDATE_GOLDEN=1` rewrites the file instead.
    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/golden").join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(actual, expected, "prompt {name} changed; review it and rerun with UPDATE_GOLDEN=1");
    }

    #[test]
    fn prompts_match_their_golden_files() {
        golden("task.txt", &task("Fix paginate()\n", "src/paging.py\n  paginate\n", "python3 -m unittest"));
        golden(
            "test_failed.txt",
            &test_failed(1, 3, Some(1), "FAIL: test_last_page\nAssertionError: 3 != 2\n"),
        );
        golden("apply_failed.txt", &apply_failed("app.py: the SEARCH text was not found."));
        golden("no_edits.txt", &no_edits(&["unknown action `explode`".into()]));
        golden(
            "tool_results.txt",
            &tool_results(&[("open app.py".into(), "app.py (lines 1-1 of 1):\n    1 | x".into())], 0),
        );
        golden("planner.txt", &planner("Add a CLI", "cli.py\n", 5));
        golden("plan_item.txt", &plan_item(1, 2, "add parse()", "parse argv", &["cli.py".into()]));
        golden("reviewer.txt", &reviewer("add parse()", "parse argv", "--- a/cli.py\n+++ b/cli.py\n"));
        assert!(CODER.contains("<<<<<<< SEARCH") && CODER.contains("ACTION: open"));
    }
}
