//! The `codingagent` command as an operator runs it: production refuses to start with keys
//! anyone can know, and dead letters are listed and replayed from the shell.
// Helpers unwrap too: a panic there is the failure report.
#![allow(clippy::unwrap_used)]

mod dead_letters;
mod production;

use std::process::{Command, Output};

/// Runs the built `codingagent` with `args` and extra environment, nothing inherited that
/// could configure it.
pub(crate) fn codingagent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codingagent"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("CODINGAGENT") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}
