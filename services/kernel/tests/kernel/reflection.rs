//! grpcurl (from PyPI, installed by `./dev tools`) discovers and calls services through
//! reflection alone: the check that v1alpha reflection, which grpcurl 1.8 speaks, works.

use crate::harness::{TestServer, server_config};
use std::process::Command;

/// Runs grpcurl off the runtime threads (the server under test keeps running meanwhile);
/// returns whether it succeeded and everything it printed.
async fn grpcurl(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output =
            Command::new("grpcurl").args(&args).output().expect("grpcurl is installed by ./dev tools");
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_through_reflection() {
    let server = TestServer::start(server_config(), vec![]).await;
    let addr = server.addr.to_string();
    let header = format!("x-codingagent-identity: {}", server.token_for("alice"));

    // Reflection needs no token.
    let (ok, listed) = grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(ok, "{listed}");
    for service in ["codingagent.testkit.v1.ProbeService", "grpc.health.v1.Health"] {
        assert!(listed.contains(service), "{listed}");
    }

    let (ok, described) =
        grpcurl(&["-plaintext", &addr, "describe", "codingagent.testkit.v1.SleepRequest"]).await;
    assert!(ok && described.contains("millis"), "{described}");

    let sleep = "codingagent.testkit.v1.ProbeService/Sleep";
    let (ok, answer) =
        grpcurl(&["-plaintext", "-H", &header, "-d", r#"{"payload":"aGk="}"#, &addr, sleep]).await;
    assert!(ok && answer.contains("aGk="), "{answer}");

    let who = "codingagent.testkit.v1.ProbeService/WhoAmI";
    let (ok, refused) = grpcurl(&["-plaintext", "-d", "{}", &addr, who]).await;
    assert!(!ok && refused.contains("Unauthenticated"), "{refused}");

    // Error details decode too: reflection also describes google.rpc's detail messages.
    let fail = "codingagent.testkit.v1.ProbeService/Fail";
    let (ok, failed) =
        grpcurl(&["-plaintext", "-H", &header, "-d", r#"{"kind":"invalid"}"#, &addr, fail]).await;
    assert!(!ok && failed.contains("page_size") && failed.contains("must not be negative"), "{failed}");
    assert!(!failed.contains("is not recognized"), "{failed}");
}
