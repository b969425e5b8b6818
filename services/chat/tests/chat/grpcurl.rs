//! The README's grpcurl walkthrough works against the real service.

use crate::harness::Chat;

#[tokio::test]
async fn the_grpcurl_walkthrough_creates_posts_searches_and_streams() {
    let chat = Chat::start().await;
    let script = codingagent_testkit::repo_path("services/chat/scripts/grpcurl-demo.sh");
    let (addr, token) = (chat.addr.to_string(), chat.token("alice"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script).args([&addr, &token]).output()
    })
    .await
    .unwrap()
    .expect("grpcurl is installed by ./dev tools");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("posted message with seq 1"), "{stdout}");
    assert!(stdout.contains("found: The login test times out on CI about one run in five"), "{stdout}");
    assert!(stdout.contains("streamed \"text\": \"The login test times out"), "{stdout}");
    chat.stop().await;
}
