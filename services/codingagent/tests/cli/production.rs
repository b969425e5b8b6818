//! `codingagent serve <svc>` in production exits non-zero, naming the setting, when a key is
//! the development key, the example file's key or too short, or the database password is the
//! development one. Configuration is checked before anything connects.

use crate::codingagent;

const REAL_KEY: &str = "a-production-signing-key-nobody-else-has-0123456789";
const REAL_DB: &str = "postgres://codingagent:a-real-secret@127.0.0.1:1/codingagent";

fn refused(service: &str, env: &[(&str, &str)], setting: &str, why: &str) {
    let mut all = vec![("CODINGAGENT__IDENTITY__ENVIRONMENT", "production")];
    all.extend_from_slice(env);
    let output = codingagent(&["serve", service], &all);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{service} started with {env:?}");
    assert!(stderr.contains(setting) && stderr.contains(why), "{service}: {stderr}");
}

#[test]
fn production_refuses_known_and_short_keys_and_the_development_password() {
    for service in ["chat", "classifier", "llm", "orchestration"] {
        // Nothing set: the development key is the default.
        refused(
            service,
            &[("CODINGAGENT__DATABASE__URL", REAL_DB)],
            "identity.signing_key",
            "development key",
        );
        refused(
            service,
            &[
                ("CODINGAGENT__DATABASE__URL", REAL_DB),
                ("CODINGAGENT__IDENTITY__SIGNING_KEY", "replace-with-at-least-32-random-bytes-0000"),
            ],
            "identity.signing_key",
            "example file",
        );
        refused(
            service,
            &[("CODINGAGENT__DATABASE__URL", REAL_DB), ("CODINGAGENT__IDENTITY__SIGNING_KEY", "short-key")],
            "identity.signing_key",
            "at least 32 bytes",
        );
        refused(
            service,
            &[
                ("CODINGAGENT__DATABASE__URL", REAL_DB),
                ("CODINGAGENT__IDENTITY__SIGNING_KEY", REAL_KEY),
                (
                    "CODINGAGENT__IDENTITY__PREVIOUS_KEYS",
                    "[\"codingagent-development-signing-key-do-not-use-in-production\"]",
                ),
            ],
            "identity.previous_keys[0]",
            "development key",
        );
        // The default database URL carries the development password.
        refused(
            service,
            &[("CODINGAGENT__IDENTITY__SIGNING_KEY", REAL_KEY)],
            "database.url",
            "development database password",
        );
    }
}

#[test]
fn every_example_config_key_is_known_to_production() {
    // An example file's key must be on the refused list, or copying the example ships it.
    let dir = codingagent_testkit::repo_path("deploy/config");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Commented-out keys count too: they are there to be copied.
        for line in text.lines().filter(|l| l.contains("signing_key") && l.contains('"')) {
            let key = line.split('"').nth(1).unwrap();
            assert!(
                codingagent_kernel::config::EXAMPLE_SIGNING_KEYS.contains(&key),
                "{} has key {key}, which production would accept",
                path.display()
            );
        }
    }
}
