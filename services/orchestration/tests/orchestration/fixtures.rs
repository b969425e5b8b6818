//! Small git repositories with a real bug and a failing test, made fresh for each test, and
//! the model answers that fix them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A committed git repository holding `files`, in a fresh temporary directory.
pub(crate) fn repository(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(codingagent_testkit::unique_name("fixture-repo"));
    for (path, content) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    git(&dir, &["init", "--quiet", "--initial-branch", "main"]);
    git(&dir, &["add", "--all"]);
    git(
        &dir,
        &[
            "-c",
            "user.name=Fixture",
            "-c",
            "user.email=fixture@example.com",
            "commit",
            "--quiet",
            "-m",
            "fixture",
        ],
    );
    dir
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git").current_dir(dir).args(args).status().unwrap();
    assert!(status.success(), "git {args:?}");
}

pub(crate) const PAGING: &str = "def paginate(items, page, size):\n    \"\"\"The items of page `page` (from 0), `size` per page.\"\"\"\n    start = page * size\n    return items[start:start + size + 1]\n";

pub(crate) const PAGING_TEST: &str = "import unittest\n\nfrom paging import paginate\n\n\nclass PaginateTest(unittest.TestCase):\n    def test_first_page(self):\n        self.assertEqual(paginate(list(range(10)), 0, 3), [0, 1, 2])\n\n    def test_last_page(self):\n        self.assertEqual(paginate(list(range(10)), 3, 3), [9])\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n";

/// A Python project whose `paginate()` returns one item too many.
pub(crate) fn paging() -> PathBuf {
    repository(&[("paging.py", PAGING), ("tests/__init__.py", ""), ("tests/test_paging.py", PAGING_TEST)])
}

/// The fix as a SEARCH/REPLACE block.
pub(crate) const PAGING_FIX: &str = "The slice ends one item too late.\n\npaging.py\n```python\n<<<<<<< SEARCH\n    return items[start:start + size + 1]\n=======\n    return items[start:start + size]\n>>>>>>> REPLACE\n```\n";

/// A plausible but wrong first attempt: the tests still fail.
pub(crate) const PAGING_WRONG: &str = "paging.py\n<<<<<<< SEARCH\n    start = page * size\n=======\n    start = page * size + 1\n>>>>>>> REPLACE\n";

/// The fix after the wrong attempt.
pub(crate) const PAGING_FIX_AFTER_WRONG: &str = "The tests show the start is now wrong too.\n\npaging.py\n<<<<<<< SEARCH\n    start = page * size + 1\n    return items[start:start + size + 1]\n=======\n    start = page * size\n    return items[start:start + size]\n>>>>>>> REPLACE\n";

/// A block whose SEARCH text is not in the file.
pub(crate) const PAGING_MISMATCH: &str = "paging.py\n<<<<<<< SEARCH\n    return items[start:end]\n=======\n    return items[start:start + size]\n>>>>>>> REPLACE\n";
