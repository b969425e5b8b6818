//! Where the local infrastructure listens, and isolation helpers on top of it.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;

/// The defaults match the ports `./dev` uses; CI and other setups override them with the same
/// variables the services read.
const DEFAULT_DATABASE_URL: &str = "postgres://codingagent:codingagent@127.0.0.1:55432/codingagent";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:56379";
const DEFAULT_KAFKA_BOOTSTRAP: &str = "127.0.0.1:59092";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The Redis server the tests use.
pub fn redis_url() -> String {
    env_or("REDIS_URL", DEFAULT_REDIS_URL)
}

/// The Kafka bootstrap servers the tests use.
pub fn kafka_bootstrap() -> String {
    env_or("KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)
}

/// The `kafka.topic_prefix` of every service under test, so a platform running beside the
/// test suite on the same broker (`./dev up`) neither reads the tests' events nor feeds its
/// own into them.
pub const TOPIC_PREFIX: &str = "test.";

/// The broker's name of topic `name` for services under test.
pub fn topic(name: &str) -> String {
    format!("{TOPIC_PREFIX}{name}")
}

/// A name no other test (or earlier run) uses, for topics, consumer groups and schemas.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A database created for one test and dropped when the test ends, so tests can run in
/// parallel and leave nothing behind.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    admin: PgConnectOptions,
    /// Connection URL of the new database.
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let admin_url = env_or("DATABASE_URL", DEFAULT_DATABASE_URL);
        let admin = PgConnectOptions::from_str(&admin_url)?;
        let name = unique_name("test");
        let mut conn = PgConnection::connect_with(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
        conn.close().await?;
        let url = admin.clone().database(&name).to_url_lossy().to_string();
        Ok(Self { name, admin, url })
    }

    /// A small pool on the test database.
    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        Ok(PgPoolOptions::new().max_connections(4).connect(&self.url).await?)
    }

    /// Drops the database, disconnecting anyone still connected.
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect_with(&self.admin).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }
}

/// A path in the checkout under test. Resolved when the test runs, from the
/// `CARGO_MANIFEST_DIR` cargo sets for it: test binaries are shared by every checkout that
/// uses the same `CARGO_TARGET_DIR` (cargo hashes packages relative to their workspace), so
/// a path baked in at compile time can name another, even a deleted, checkout.
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from);
    let start = manifest.or_else(|| std::env::current_dir().ok()).unwrap_or_default();
    let root = start.ancestors().find(|dir| dir.join("Cargo.lock").exists()).unwrap_or(&start).to_path_buf();
    root.join(relative)
}

/// Runs `./dev` with `args`, e.g. `["stop", "kafka"]`, for tests that simulate outages of the
/// shared infrastructure. Such tests are `#[ignore]`d and run serially by `./dev test`.
pub fn dev(args: &[&str]) -> anyhow::Result<()> {
    let script = repo_path("dev");
    let status = std::process::Command::new(script).args(args).status()?;
    anyhow::ensure!(status.success(), "./dev {} failed with {status}", args.join(" "));
    Ok(())
}
