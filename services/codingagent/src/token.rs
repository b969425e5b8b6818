//! `codingagent token`: mints an internal identity token with the configured signing key, so
//! grpcurl and scripts can call a service directly (the gateway mints these for real users).

use anyhow::Context;
use codingagent_kernel::config::{self, Common, ConfigArgs, ConfigError, IdentityConfig, ServiceConfig};
use codingagent_kernel::identity::{Caller, IDENTITY_HEADER, TokenMinter};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The user the token identifies.
    #[arg(long, conflicts_with = "service", required_unless_present = "service")]
    user: Option<String>,
    /// A service identity instead of a user.
    #[arg(long)]
    service: Option<String>,
    /// With --service: the user the service acts for.
    #[arg(long, requires = "service")]
    on_behalf_of: Option<String>,
    /// A role of the user (repeatable), e.g. `--role operator`.
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 12 * 3600)]
    ttl: u64,
    /// Print a ready-to-use grpcurl header argument instead of the bare token.
    #[arg(long)]
    header: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

/// The settings `token` reads: the identity section shared by every service
/// (`CODINGAGENT__IDENTITY__SIGNING_KEY`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TokenConfig {
    identity: IdentityConfig,
}

impl ServiceConfig for TokenConfig {
    const ENV_NAME: &'static str = "TOKEN";

    fn common(&self) -> Common<'_> {
        Common::identity(&self.identity)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

pub(crate) fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let config: TokenConfig = config::load(&args.config)?;
    if args.config.dump_config {
        print(&config::dump(&config)?)?;
        return Ok(());
    }
    let caller = match (&args.user, &args.service, &args.on_behalf_of) {
        (Some(user), _, _) => Caller::user(user).with_roles(&args.roles),
        (None, Some(service), Some(user)) => Caller::service_for(service, user, args.roles.clone()),
        (None, Some(service), None) => Caller::service(service),
        (None, None, _) => anyhow::bail!("--user or --service is required"),
    };
    if caller.subject.trim().is_empty() {
        anyhow::bail!("the identity name must not be empty");
    }
    let token = TokenMinter::new(&config.identity)
        .mint_with_lifetime(&caller, Duration::from_secs(args.ttl))
        .context("cannot mint token")?;
    if args.header { print(&format!("{IDENTITY_HEADER}: {token}")) } else { print(&token) }
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    Ok(())
}
