//! The shipped configuration files load, and production refuses what is only safe on a
//! developer's machine.

use codingagent_gateway::Config;
use codingagent_kernel::config::{ConfigArgs, load_with_env};

fn load(relative: &str, env: Vec<(String, String)>) -> Result<Config, String> {
    let args = ConfigArgs { file: Some(codingagent_testkit::repo_path(relative)), ..ConfigArgs::default() };
    load_with_env(&args, env).map_err(|e| e.to_string())
}

#[test]
fn the_shipped_files_load() {
    // The dev file names paths relative to the repository root, where ./dev runs it.
    std::env::set_current_dir(codingagent_testkit::repo_path("")).unwrap();
    let dev = load("deploy/config/dev/gateway.toml", Vec::new()).unwrap();
    assert_eq!(dev.services.len(), 4);
    assert!(dev.auth.dev_sign_in.enabled);
    // The example is production: it loads once its placeholder key is replaced.
    let key = (
        "CODINGAGENT_GATEWAY__IDENTITY__SIGNING_KEY".to_owned(),
        "a-real-production-key-of-sufficient-length-42".to_owned(),
    );
    let example = load("deploy/config/gateway.example.toml", vec![key]).unwrap();
    assert_eq!(example.services["codingagent.chat.v1"].alternate_percent, 10.0);
    let refused = load("deploy/config/gateway.example.toml", Vec::new()).unwrap_err();
    assert!(refused.contains("identity.signing_key"), "{refused}");
}

#[test]
fn production_refuses_dev_sign_in_the_dev_key_and_unsafe_algorithms() {
    std::env::set_current_dir(codingagent_testkit::repo_path("")).unwrap();
    let production = |extra: &[(&str, &str)]| {
        let mut env = vec![
            ("CODINGAGENT_GATEWAY__IDENTITY__ENVIRONMENT".to_owned(), "production".to_owned()),
            (
                "CODINGAGENT_GATEWAY__IDENTITY__SIGNING_KEY".to_owned(),
                "a-real-production-key-of-sufficient-length-42".to_owned(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        load("deploy/config/dev/gateway.toml", env)
    };
    let error = production(&[]).unwrap_err();
    assert!(error.contains("auth.dev_sign_in.enabled"), "{error}");
    let error = production(&[
        ("CODINGAGENT_GATEWAY__AUTH__DEV_SIGN_IN__ENABLED", "false"),
        ("CODINGAGENT_GATEWAY__DEBUG_HEADERS", "true"),
    ])
    .unwrap_err();
    assert!(error.contains("debug_headers"), "{error}");
    let ok = production(&[("CODINGAGENT_GATEWAY__AUTH__DEV_SIGN_IN__ENABLED", "false")]);
    assert!(ok.is_ok(), "{ok:?}");
    let error = load(
        "deploy/config/dev/gateway.toml",
        vec![("CODINGAGENT_GATEWAY__AUTH__ALGORITHMS".to_owned(), "[\"HS256\"]".to_owned())],
    )
    .unwrap_err();
    assert!(error.contains("auth.algorithms"), "{error}");
}
