//! The evaluation harness end to end: every shipped fixture (Python, JavaScript, Rust) as a
//! task, answered by the scripted model with the fixture's known solution, checked with the
//! hidden tests in the sandbox.

use crate::double::Role;
use crate::harness::Platform;
use codingagent_orchestration::config::SandboxConfig;
use codingagent_orchestration::eval::{self, Options};
use codingagent_proto::codingagent::common::v1::Strategy;
use std::time::Duration;

#[tokio::test]
async fn every_fixture_is_solved_with_its_known_solution_and_the_report_says_so() {
    let platform = Platform::start(|c| c.quotas.executions_per_hour = 0).await;
    let fixtures = eval::load(&codingagent_testkit::repo_path("services/orchestration/eval")).unwrap();
    assert!(fixtures.len() >= 20);
    for fixture in &fixtures {
        platform.model.answer(Role::Coder, fixture.solution.clone());
    }
    // One wrong answer at the end: the harness must not count a failed task as solved.
    let first = fixtures[0].clone();
    platform.model.answer(Role::Coder, "I cannot find the bug.");
    let mut client = platform.orchestration.user("eval").await;
    let options = Options {
        strategies: vec![Strategy::SingleShot],
        model: String::new(),
        timeout: Duration::from_secs(120),
        work_dir: std::env::temp_dir().join(codingagent_testkit::unique_name("eval")),
        sandbox: SandboxConfig {
            toolchains: codingagent_orchestration::sandbox::detect_toolchains(),
            ..SandboxConfig::default()
        },
        budget: None,
    };
    let mut seen = 0;
    let mut outcomes = eval::run(&mut client, &fixtures, &options, |done, total, _| {
        seen = done;
        assert_eq!(total, fixtures.len());
    })
    .await
    .unwrap();
    assert_eq!(seen, fixtures.len());
    let unsolved: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.solved)
        .map(|o| format!("{}: {:?} {}", o.fixture, o.state, o.note))
        .collect();
    assert!(unsolved.is_empty(), "{unsolved:#?}");
    let wrong = eval::run(
        &mut client,
        &[first],
        &Options { budget: Some(Default::default()), ..options.clone() },
        |_, _, _| {},
    )
    .await
    .unwrap();
    assert!(!wrong[0].solved);
    outcomes.extend(wrong);
    let report = eval::report(&outcomes, "scripted/gemma-3-270m");
    assert!(
        report.contains(&format!("| single-shot | {}/{} |", fixtures.len(), fixtures.len() + 1)),
        "{report}"
    );
    assert!(report.contains("| rs-gcd | rust | single-shot | solved |"), "{report}");
    let _ = std::fs::remove_dir_all(&options.work_dir);
    platform.stop().await;
}
