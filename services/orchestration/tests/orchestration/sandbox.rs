//! The sandbox under real bubblewrap: what a hostile or broken test command cannot do.

use codingagent_kernel::CancellationToken;
use codingagent_orchestration::config::SandboxConfig;
use codingagent_orchestration::sandbox::{self, Outcome};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    let dir = std::env::temp_dir().join(codingagent_testkit::unique_name("sandbox"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn run(config: &SandboxConfig, dir: &std::path::Path, command: &str) -> Outcome {
    sandbox::run(config, dir, command, &CancellationToken::new(), |_, _| {}).await.unwrap()
}

#[tokio::test]
async fn the_workspace_is_writable_and_nothing_else_is() {
    let dir = workspace();
    let config = SandboxConfig::default();
    let outside = std::env::temp_dir().join(codingagent_testkit::unique_name("outside"));
    let command = format!(
        "echo ok > result.txt && (touch /usr/pwned || echo usr-refused) && touch {} \
         && (echo x > /etc/pwned || echo etc-refused) && (touch /escape || echo root-refused) && touch /tmp/private && echo done",
        outside.display()
    );
    let outcome = run(&config, &dir, &command).await;
    let text = outcome.text();
    assert!(outcome.passed(), "{text}");
    // The host's /tmp is not the sandbox's: writing "there" lands in a private tmpfs.
    for refused in ["usr-refused", "etc-refused", "root-refused", "done"] {
        assert!(text.contains(refused), "{refused} missing from {text}");
    }
    assert_eq!(std::fs::read_to_string(dir.join("result.txt")).unwrap(), "ok\n");
    assert!(!outside.exists(), "a file outside the workspace was written");
    assert!(!std::path::Path::new("/usr/pwned").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn there_is_no_network_not_even_loopback() {
    // A server on the host's loopback that the sandbox must not reach.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let dir = workspace();
    let script = format!(
        "import socket\n\
         for host in ['127.0.0.1', '1.1.1.1']:\n\
         \x20   try:\n\
         \x20       socket.create_connection((host, {port} if host == '127.0.0.1' else 443), timeout=2)\n\
         \x20       print('reached', host)\n\
         \x20   except OSError as e:\n\
         \x20       print('blocked', host, type(e).__name__)\n"
    );
    std::fs::write(dir.join("net.py"), script).unwrap();
    let outcome = run(&SandboxConfig::default(), &dir, "python3 net.py").await;
    let text = outcome.text();
    assert!(text.contains("blocked 127.0.0.1") && text.contains("blocked 1.1.1.1"), "{text}");
    assert!(!text.contains("reached"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_command_that_hangs_is_killed_at_the_wall_time_limit_with_its_children() {
    let dir = workspace();
    let config = SandboxConfig { wall_secs: 2, ..SandboxConfig::default() };
    let started = Instant::now();
    // A child that ignores SIGTERM and outlives its parent would survive a naive kill.
    let outcome = run(&config, &dir, "(trap '' TERM; sleep 60; touch late) & sleep 60").await;
    assert!(outcome.timed_out && !outcome.passed());
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let survivors = std::process::Command::new("pgrep").args(["-f", "sleep 60"]).output().unwrap();
    assert!(String::from_utf8_lossy(&survivors.stdout).trim().is_empty(), "processes outlived the sandbox");
    assert!(!dir.join("late").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_fork_bomb_is_contained_by_the_process_limit() {
    let dir = workspace();
    // A uid of its own: the process limit counts per uid, and other tests' sandboxes must
    // not be starved while the bomb goes off.
    let config = SandboxConfig { wall_secs: 20, max_processes: 64, uid: 61_000, ..SandboxConfig::default() };
    let started = Instant::now();
    let outcome = run(&config, &dir, "bomb() { bomb | bomb & }; bomb; sleep 2").await;
    assert!(started.elapsed() < Duration::from_secs(25));
    // The limit stopped it: forks were refused inside the sandbox...
    assert!(outcome.text().contains("Cannot fork"), "{}", outcome.text());
    // ...nothing of it is left once the sandbox ended, and the host still forks normally.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = std::process::Command::new("pgrep").args(["-u", "61000"]).output().unwrap();
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "bomb processes outlived the sandbox");
    assert!(std::process::Command::new("true").status().unwrap().success());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_gigabyte_of_output_is_drained_and_kept_as_head_and_tail() {
    let dir = workspace();
    let config = SandboxConfig::default();
    let lines = std::sync::atomic::AtomicUsize::new(0);
    let outcome = sandbox::run(
        &config,
        &dir,
        "echo first; head -c 1073741824 /dev/zero | tr '\\0' 'x'; echo; echo last",
        &CancellationToken::new(),
        |_, _| {
            lines.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .await
    .unwrap();
    assert!(outcome.passed());
    assert!(outcome.stdout.total_bytes > 1_073_741_824);
    assert!(outcome.stdout.head.starts_with("first\n") && outcome.stdout.tail.ends_with("last\n"));
    assert!(
        outcome.stdout.head.len() <= config.output_head_bytes
            && outcome.stdout.tail.len() <= config.output_tail_bytes
    );
    assert!(outcome.text().contains("bytes omitted"));
    assert!(lines.load(std::sync::atomic::Ordering::Relaxed) < 10, "the flood was not streamed line by line");
    let _ = std::fs::remove_dir_all(dir);
}
