//! Runs a repository's test command under bubblewrap: a new network namespace with nothing
//! in it (no network), the system read-only, only the workspace writable, a private /tmp,
//! new PID/IPC/UTS namespaces so nothing outlives the command, and resource limits through
//! `prlimit` (CPU seconds, address space, processes, file size). When the service runs as
//! root the command runs as an unprivileged uid, because root is exempt from the process
//! limit that stops a fork bomb. Output is drained as it comes (so a flood cannot block the
//! command or fill memory): the first and last bytes are kept, the middle is counted.

use crate::config::SandboxConfig;
use codingagent_kernel::CancellationToken;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// What a sandboxed command did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// The exit code; `None` when it was killed.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration_ms: u64,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// Both streams, for the model and the log.
    pub fn text(&self) -> String {
        let mut text = self.stdout.text();
        let err = self.stderr.text();
        if !err.is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&err);
        }
        text
    }
}

/// One stream's output: its head, its tail, and how much was cut between them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Captured {
    pub head: String,
    pub tail: String,
    pub total_bytes: u64,
    pub omitted_bytes: u64,
}

impl Captured {
    pub fn text(&self) -> String {
        if self.omitted_bytes == 0 {
            format!("{}{}", self.head, self.tail)
        } else {
            format!("{}\n[… {} bytes omitted …]\n{}", self.head, self.omitted_bytes, self.tail)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox could not start: {0}")]
    Start(std::io::Error),
    #[error("cancelled")]
    Cancelled,
}

/// The Rust toolchain of this machine (`rustc --print sysroot`), if any, for tests of
/// Rust repositories.
pub fn detect_toolchains() -> Vec<std::path::PathBuf> {
    std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.join("bin").join("cargo").exists())
        .into_iter()
        .collect()
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// The bwrap command line for `command` in `workspace`.
pub fn command_line(config: &SandboxConfig, workspace: &Path, command: &str, root: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
        // bwrap makes missing parents of mount points private (0700): /etc must be readable.
        "--perms",
        "0755",
        "--dir",
        "/etc",
        "--ro-bind-try",
        "/etc/alternatives",
        "/etc/alternatives",
        "--ro-bind-try",
        "/etc/ssl",
        "/etc/ssl",
        "--ro-bind-try",
        "/etc/passwd",
        "/etc/passwd",
        "--ro-bind-try",
        "/etc/group",
        "/etc/group",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        // A private /tmp every user may write to, as on any machine.
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
    ]
    .map(str::to_owned)
    .to_vec();
    if !root {
        // Unprivileged bwrap needs a user namespace for the others.
        args.push("--unshare-user".into());
    }
    let mut made: Vec<std::path::PathBuf> = Vec::new();
    for path in config.read_only_paths.iter().chain(&config.toolchains) {
        // Readable parents, so the unprivileged user can reach the bound path.
        let mut parents: Vec<&Path> = path.ancestors().skip(1).filter(|a| a.parent().is_some()).collect();
        parents.reverse();
        for parent in parents {
            if !made.iter().any(|m| m == parent) && !parent.starts_with("/usr") {
                made.push(parent.to_path_buf());
                args.extend([
                    "--perms".into(),
                    "0755".into(),
                    "--dir".into(),
                    parent.to_string_lossy().into_owned(),
                ]);
            }
        }
        let p = path.to_string_lossy().into_owned();
        args.extend(["--ro-bind-try".into(), p.clone(), p]);
    }
    let mut path: Vec<String> =
        config.toolchains.iter().map(|t| t.join("bin").to_string_lossy().into_owned()).collect();
    path.push("/usr/local/bin:/usr/bin:/bin".into());
    args.extend([
        "--bind".into(),
        workspace.to_string_lossy().into_owned(),
        "/workspace".into(),
        "--chdir".into(),
        "/workspace".into(),
        "--clearenv".into(),
        "--setenv".into(),
        "PATH".into(),
        path.join(":"),
        // Cargo keeps its registry cache there; the home directory is the private /tmp.
        "--setenv".into(),
        "CARGO_HOME".into(),
        "/tmp/.cargo".into(),
        "--setenv".into(),
        "HOME".into(),
        "/tmp".into(),
        "--setenv".into(),
        "LANG".into(),
        "C.UTF-8".into(),
        "--setenv".into(),
        "CI".into(),
        "true".into(),
        "--".into(),
    ]);
    if root {
        let id = config.uid.to_string();
        args.extend(
            [
                "/usr/bin/setpriv",
                "--reuid",
                &id,
                "--regid",
                &id,
                "--clear-groups",
                "--inh-caps=-all",
                "--no-new-privs",
            ]
            .map(str::to_owned),
        );
    }
    args.extend([
        "/usr/bin/prlimit".into(),
        format!("--cpu={}", config.cpu_secs),
        format!("--as={}", config.memory_mib * 1024 * 1024),
        format!("--nproc={}", config.max_processes),
        format!("--fsize={}", config.max_file_mib * 1024 * 1024),
        "--core=0".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        command.to_owned(),
    ]);
    args
}

/// Gives the sandbox user the workspace (root only): it must write there and nowhere else.
async fn hand_over(workspace: &Path, uid: u32) -> std::io::Result<()> {
    let status = Command::new("chown").args(["-R", &format!("{uid}:{uid}")]).arg(workspace).status().await?;
    if status.success() { Ok(()) } else { Err(std::io::Error::other("chown of the workspace failed")) }
}

/// Runs `command` in `workspace`; `on_line` sees output lines as they come (for the live
/// log), already limited to the kept head and tail.
pub async fn run(
    config: &SandboxConfig,
    workspace: &Path,
    command: &str,
    cancel: &CancellationToken,
    on_line: impl Fn(bool, String) + Send + Sync,
) -> Result<Outcome, SandboxError> {
    let root = running_as_root();
    if root {
        hand_over(workspace, config.uid).await.map_err(SandboxError::Start)?;
    }
    let started = Instant::now();
    let mut child = Command::new(&config.bwrap)
        .args(command_line(config, workspace, command, root))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(SandboxError::Start)?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (head, tail) = (config.output_head_bytes, config.output_tail_bytes);
    let on_line = &on_line;
    let drain = async move {
        tokio::join!(
            capture(stdout, head, tail, |l| on_line(false, l)),
            capture(stderr, head, tail, |l| on_line(true, l))
        )
    };
    let wall = Duration::from_secs(config.wall_secs);
    let waited = async {
        let (out, err) = drain.await;
        (child.wait().await, out, err)
    };
    tokio::select! {
        () = cancel.cancelled() => Err(SandboxError::Cancelled),
        done = tokio::time::timeout(wall, waited) => {
            let duration_ms = started.elapsed().as_millis() as u64;
            match done {
                Ok((status, stdout, stderr)) => {
                    let status = status.map_err(SandboxError::Start)?;
                    Ok(Outcome { exit_code: status.code(), timed_out: false, stdout, stderr, duration_ms })
                }
                // Dropping the child kills bwrap; its PID namespace takes every process with it.
                Err(_) => Ok(Outcome {
                    exit_code: None,
                    timed_out: true,
                    stdout: Captured::default(),
                    stderr: Captured { head: format!("killed after {}s (the sandbox's wall-time limit)", wall.as_secs()), ..Captured::default() },
                    duration_ms,
                }),
            }
        }
    }
}

/// Reads a stream to its end, keeping `head` bytes from the start and `tail` from the end.
async fn capture(
    stream: Option<impl AsyncRead + Unpin>,
    head: usize,
    tail: usize,
    on_line: impl Fn(String),
) -> Captured {
    let Some(mut stream) = stream else { return Captured::default() };
    let mut first: Vec<u8> = Vec::new();
    let mut last: Vec<u8> = Vec::with_capacity(tail);
    let mut total: u64 = 0;
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        let before = total;
        total += n as u64;
        // Live lines only for what is kept at the start: a flood is not streamed whole.
        if (before as usize) < head {
            let keep = &chunk[..chunk.len().min(head - before as usize)];
            first.extend_from_slice(keep);
            pending.extend_from_slice(keep);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                on_line(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
        }
        if chunk.len() >= tail {
            last.clear();
            last.extend_from_slice(&chunk[chunk.len() - tail..]);
        } else {
            last.extend_from_slice(chunk);
            if last.len() > tail {
                last.drain(..last.len() - tail);
            }
        }
    }
    if !pending.is_empty() {
        on_line(String::from_utf8_lossy(&pending).into_owned());
    }
    let kept_head = first.len() as u64;
    let tail_bytes = last;
    // The tail overlaps the head for short output: keep each byte once.
    let overlap = (kept_head + tail_bytes.len() as u64).saturating_sub(total) as usize;
    let tail_part = &tail_bytes[overlap.min(tail_bytes.len())..];
    Captured {
        head: String::from_utf8_lossy(&first).into_owned(),
        tail: String::from_utf8_lossy(tail_part).into_owned(),
        total_bytes: total,
        omitted_bytes: total - kept_head - tail_part.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn short_output_is_kept_whole_and_long_output_keeps_head_and_tail() {
        let short = capture(Some(&b"one\ntwo\n"[..]), 16, 16, |_| {}).await;
        assert_eq!((short.text().as_str(), short.omitted_bytes), ("one\ntwo\n", 0));
        let long: Vec<u8> = (0..10_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
        let lines = std::sync::Mutex::new(Vec::new());
        let kept = capture(Some(long.as_slice()), 20, 10, |l| lines.lock().unwrap().push(l)).await;
        assert_eq!(kept.total_bytes, long.len() as u64);
        assert_eq!(kept.head, "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
        assert_eq!(kept.tail, "9998\n9999\n");
        assert_eq!(kept.omitted_bytes, long.len() as u64 - 30);
        assert!(kept.text().contains("bytes omitted"));
        assert_eq!(lines.lock().unwrap().len(), 10, "only the kept head is streamed live");
    }

    #[test]
    fn the_command_line_isolates_and_limits() {
        let config = SandboxConfig::default();
        let args = command_line(&config, Path::new("/w"), "pytest -q", true).join(" ");
        for expected in [
            "--unshare-net",
            "--unshare-pid",
            "--die-with-parent",
            "--ro-bind /usr /usr",
            "--bind /w /workspace",
            "--reuid 65534",
            "--nproc=256",
            "sh -c pytest -q",
        ] {
            assert!(args.contains(expected), "{expected} missing from {args}");
        }
        assert!(!args.contains("--bind / "), "nothing else is writable");
    }
}
