//! A run's working copy: cloned (or copied from a local path) into its own directory, on the
//! branch `codingagent/<task id>`. Git runs with prompts off, hooks off and only the https and
//! ssh transports allowed (a local path is cloned with the file transport for that one
//! command), so a repository cannot make the worker run its code or reach other transports.
//! Everything a later worker needs to rebuild the tree is the base commit and the patch
//! kept in the run's checkpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    #[error("git {0} failed: {1}")]
    Failed(String, String),
    #[error("git {0} took longer than {1:?}")]
    Timeout(String, Duration),
    #[error("cannot run git: {0}")]
    Spawn(#[from] std::io::Error),
}

/// One run's working copy.
#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    pub dir: PathBuf,
    timeout: Duration,
}

/// The identity commits are made with.
const AUTHOR: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "CodingAgent"),
    ("GIT_AUTHOR_EMAIL", "codingagent@localhost"),
    ("GIT_COMMITTER_NAME", "CodingAgent"),
    ("GIT_COMMITTER_EMAIL", "codingagent@localhost"),
];

fn git(dir: Option<&Path>) -> Command {
    let mut command = Command::new("git");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new")
        .envs(AUTHOR)
        .args(["-c", "core.hooksPath=/dev/null", "-c", "safe.directory=*", "-c", "protocol.allow=never"])
        .args(["-c", "protocol.https.allow=always", "-c", "protocol.ssh.allow=always"])
        .kill_on_drop(true);
    command
}

async fn output(what: &str, mut command: Command, timeout: Duration) -> Result<String, GitError> {
    let out = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| GitError::Timeout(what.to_owned(), timeout))??;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(GitError::Failed(what.to_owned(), stderr.trim().chars().take(2_000).collect()))
    }
}

impl Workspace {
    /// Clones `source` (a URL, or a local path when `local`) at `base_branch` (empty: the
    /// default branch) into `dir`, replacing whatever a dead worker left there.
    pub(crate) async fn clone(
        source: &str,
        local: bool,
        base_branch: &str,
        dir: PathBuf,
        timeout: Duration,
    ) -> Result<Self, GitError> {
        if dir.exists() {
            tokio::fs::remove_dir_all(&dir).await?;
        }
        if let Some(parent) = dir.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let mut command = git(None);
        if local {
            command.args(["-c", "protocol.file.allow=always"]);
        }
        command.args(["clone", "--no-hardlinks", "--quiet"]);
        if !local {
            command.args(["--depth", "50"]);
        }
        if !base_branch.is_empty() {
            command.args(["--branch", base_branch]);
        }
        command.arg("--").arg(source).arg(&dir);
        output("clone", command, timeout).await?;
        Ok(Self { dir, timeout })
    }

    async fn run(&self, what: &str, args: &[&str]) -> Result<String, GitError> {
        let mut command = git(Some(&self.dir));
        command.args(args);
        output(what, command, self.timeout).await
    }

    pub(crate) async fn head(&self) -> Result<String, GitError> {
        Ok(self.run("rev-parse", &["rev-parse", "HEAD"]).await?.trim().to_owned())
    }

    /// Checks out `base` on the task branch (the start of every run, and of a resumed one).
    pub(crate) async fn branch(&self, name: &str, base: &str) -> Result<(), GitError> {
        self.run("checkout", &["checkout", "--quiet", "-B", name, base]).await.map(drop)
    }

    /// The working tree's change against `base`, new files included, as a patch `apply`
    /// can replay on another machine.
    pub(crate) async fn diff(&self, base: &str) -> Result<String, GitError> {
        self.run("add", &["add", "--all"]).await?;
        self.run("diff", &["diff", "--cached", "--binary", base]).await
    }

    /// Replays `patch` on the working tree (resumption, unified diffs from the model).
    pub(crate) async fn apply(&self, patch: &str) -> Result<(), GitError> {
        if patch.trim().is_empty() {
            return Ok(());
        }
        let file = self.dir.join(".git").join("codingagent.patch");
        tokio::fs::write(&file, patch).await?;
        let path = file.to_string_lossy().into_owned();
        let result = self.run("apply", &["apply", "--recount", "--whitespace=nowarn", &path]).await.map(drop);
        let _ = tokio::fs::remove_file(&file).await;
        result
    }

    /// Commits everything on the task branch; returns the new head.
    pub(crate) async fn commit(&self, message: &str) -> Result<String, GitError> {
        self.run("add", &["add", "--all"]).await?;
        self.run("commit", &["commit", "--quiet", "--allow-empty", "--no-verify", "-m", message]).await?;
        self.head().await
    }

    /// Files tracked or new (not ignored), for the repository map.
    pub(crate) async fn files(&self) -> Result<Vec<String>, GitError> {
        let listed =
            self.run("ls-files", &["ls-files", "--cached", "--others", "--exclude-standard"]).await?;
        Ok(listed.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
    }

    /// `git grep` for a fixed string: `path:line:text` hits, at most `limit`.
    pub(crate) async fn grep(&self, needle: &str, limit: usize) -> Result<Vec<String>, GitError> {
        let mut command = git(Some(&self.dir));
        command.args(["grep", "-n", "-I", "--untracked", "--fixed-strings", "-e", needle]);
        match output("grep", command, self.timeout).await {
            Ok(hits) => Ok(hits.lines().take(limit).map(str::to_owned).collect()),
            // Exit 1 is "no match".
            Err(GitError::Failed(_, stderr)) if stderr.is_empty() => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// `git format-patch` of the head commit (a `git am` patch with the message).
    pub(crate) async fn format_patch(&self, base: &str) -> Result<String, GitError> {
        self.run("format-patch", &["format-patch", "--stdout", &format!("{base}..HEAD")]).await
    }

    /// Per-file statistics of `base..HEAD`: (path, old path, kind letter, added, removed).
    pub(crate) async fn numstat(
        &self,
        base: &str,
    ) -> Result<Vec<(String, String, char, i32, i32)>, GitError> {
        let range = format!("{base}..HEAD");
        let status = self.run("diff", &["diff", "--name-status", "-M", &range]).await?;
        let numbers = self.run("diff", &["diff", "--numstat", "-M", &range]).await?;
        let mut files = Vec::new();
        for (status, numbers) in status.lines().zip(numbers.lines()) {
            let parts: Vec<&str> = status.split('\t').collect();
            let counts: Vec<&str> = numbers.split('\t').collect();
            let kind = parts.first().and_then(|s| s.chars().next()).unwrap_or('M');
            let (path, old) = match parts.as_slice() {
                [_, old, new] => ((*new).to_owned(), (*old).to_owned()),
                [_, path] => ((*path).to_owned(), String::new()),
                _ => continue,
            };
            let number = |i: usize| counts.get(i).and_then(|c| c.parse().ok()).unwrap_or(0);
            files.push((path, old, kind, number(0), number(1)));
        }
        Ok(files)
    }

    /// Puts the working tree back to `base` plus `patch` (after a failed apply, or to
    /// rebuild a run on another worker).
    pub(crate) async fn reset(&self, base: &str, patch: &str) -> Result<(), GitError> {
        self.run("reset", &["reset", "--quiet", "--hard", base]).await?;
        self.run("clean", &["clean", "-fdq"]).await?;
        self.apply(patch).await
    }

    /// `git diff base..HEAD`.
    pub(crate) async fn diff_range(&self, base: &str) -> Result<String, GitError> {
        self.run("diff", &["diff", "-M", &format!("{base}..HEAD")]).await
    }

    pub(crate) async fn remove(&self) {
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
    }
}
