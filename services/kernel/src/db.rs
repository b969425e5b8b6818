//! PostgreSQL: one pool per service, pinned to the service's own schema, migrated at start.

use crate::config::DatabaseConfig;
use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// Migrations the kernel applies to every service schema (outbox and inbox).
static KERNEL_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/kernel");

/// Service migration versions must be at least this (timestamps), so they sort after and
/// never collide with the kernel's.
const FIRST_SERVICE_VERSION: i64 = 1_000_000;

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("schema name `{0}` must be lowercase letters, digits and underscores")]
    SchemaName(String),
    #[error(
        "migration {0} of the service uses a version below {FIRST_SERVICE_VERSION}, reserved for the kernel"
    )]
    ReservedVersion(i64),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Connects to PostgreSQL with every connection's `search_path` set to `schema`, creates the
/// schema when missing and applies the kernel's and then the service's migrations.
pub async fn connect(
    config: &DatabaseConfig,
    schema: &str,
    service: &Migrator,
) -> Result<PgPool, DbSetupError> {
    if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(DbSetupError::SchemaName(schema.to_owned()));
    }
    if let Some(migration) = service.iter().find(|m| m.version < FIRST_SERVICE_VERSION) {
        return Err(DbSetupError::ReservedVersion(migration.version));
    }
    let options = PgConnectOptions::from_str(config.url.expose())?;
    let mut conn = PgConnection::connect_with(&options).await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&mut conn).await?;
    conn.close().await?;

    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
        .connect_with(options.options([("search_path", schema)]))
        .await?;
    let migrations: Vec<Migration> = KERNEL_MIGRATIONS.iter().chain(service.iter()).cloned().collect();
    Migrator::new(Listed(migrations)).await?.run(&pool).await?;
    Ok(pool)
}

/// A fixed list of migrations as a sqlx migration source.
#[derive(Debug)]
struct Listed(Vec<Migration>);

impl<'s> MigrationSource<'s> for Listed {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

/// Health check: the pool can run a query.
pub fn check(pool: PgPool) -> crate::server::DependencyCheck {
    crate::server::DependencyCheck::new("postgres", move || {
        let pool = pool.clone();
        async move { sqlx::query("SELECT 1").execute(&pool).await.map(drop).map_err(|e| e.to_string()) }
    })
}
