//! The README's grpcurl walkthrough works against the real service.

use crate::double::Role;
use crate::fixtures;
use crate::harness::Platform;
use codingagent_kernel::identity::{Caller, TokenMinter};

#[tokio::test]
async fn the_grpcurl_walkthrough_creates_a_task_and_streams_its_log_to_the_end() {
    let platform = Platform::start(|_| {}).await;
    platform.model.answer(Role::Coder, fixtures::PAGING_FIX);
    let script = codingagent_testkit::repo_path("services/orchestration/scripts/grpcurl-demo.sh");
    let addr = platform.orchestration.addr.to_string();
    let token =
        TokenMinter::new(&platform.orchestration.config.identity).mint(&Caller::user("alice")).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script).args([&addr, &token]).output()
    })
    .await
    .unwrap()
    .expect("grpcurl is installed by ./dev tools");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("created task "), "{stdout}");
    assert!(stdout.contains("step 0 started: prepare_workspace"), "{stdout}");
    assert!(stdout.contains("ended: TASK_STATE_SUCCEEDED"), "{stdout}");
    assert!(stdout.contains("diff +    return items[start:start + size]"), "{stdout}");
    platform.stop().await;
}
