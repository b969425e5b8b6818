//! grpcurl (from PyPI, installed by `./dev tools`) discovers and calls services through
//! reflection alone: the check that v1alpha reflection, which grpcurl 1.8 speaks, works.

use crate::harness::{TestServer, server_config};
use std::process::Command;

fn grpcurl(args: &[&str]) -> (bool, String) {
    let output = Command::new("grpcurl").args(args).output().expect("grpcurl is installed by ./dev tools");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_through_reflection() {
    let server = TestServer::start(server_config(), vec![]).await;
    let addr = server.addr.to_string();
    let header = format!("x-codingagent-identity: {}", server.token_for("alice"));

    let (ok, listed) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&["-plaintext", &addr, "list"])
    })
    .await
    .unwrap();
    assert!(ok, "{listed}");
    for service in ["codingagent.testkit.v1.ProbeService", "grpc.health.v1.Health"] {
        assert!(listed.contains(service), "{listed}");
    }

    let (ok, described) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&["-plaintext", &addr, "describe", "codingagent.testkit.v1.SleepRequest"])
    })
    .await
    .unwrap();
    assert!(ok && described.contains("millis"), "{described}");

    let (ok, answer) = tokio::task::spawn_blocking({
        let (addr, header) = (addr.clone(), header.clone());
        move || {
            grpcurl(&[
                "-plaintext",
                "-H",
                &header,
                "-d",
                r#"{"payload":"aGk="}"#,
                &addr,
                "codingagent.testkit.v1.ProbeService/Sleep",
            ])
        }
    })
    .await
    .unwrap();
    assert!(ok && answer.contains("aGk="), "{answer}");

    let (ok, refused) = tokio::task::spawn_blocking(move || {
        grpcurl(&["-plaintext", "-d", "{}", &addr, "codingagent.testkit.v1.ProbeService/WhoAmI"])
    })
    .await
    .unwrap();
    assert!(!ok && refused.contains("Unauthenticated"), "{refused}");

    // Error details decode too: reflection also describes google.rpc's detail messages.
    let (ok, failed) = tokio::task::spawn_blocking({
        let (addr, header) = (server.addr.to_string(), header.clone());
        move || {
            grpcurl(&[
                "-plaintext",
                "-H",
                &header,
                "-d",
                r#"{"kind":"invalid"}"#,
                &addr,
                "codingagent.testkit.v1.ProbeService/Fail",
            ])
        }
    })
    .await
    .unwrap();
    assert!(!ok && failed.contains("page_size") && failed.contains("must not be negative"), "{failed}");
    assert!(!failed.contains("is not recognized"), "{failed}");
}
