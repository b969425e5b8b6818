//! The model registry: what every provider offers, refreshed periodically and on demand,
//! kept in memory for routing and in PostgreSQL for listing and history. Nothing is
//! hard-coded: a model exists here because a provider reported it.

use crate::provider::{Provider, ProviderModel};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A `models` row as read back at start-up.
#[derive(Debug, sqlx::FromRow)]
struct ModelRow {
    id: String,
    provider: String,
    name: String,
    family: String,
    parameter_count: i64,
    quantization: String,
    size_bytes: i64,
    context_length: i32,
    embedding: bool,
    loaded: bool,
    digest: String,
    synced_at: DateTime<Utc>,
}

/// One model as the service knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredModel {
    /// `<provider>/<name>`.
    pub id: String,
    pub provider: String,
    pub cloud: bool,
    pub ollama: bool,
    pub info: ProviderModel,
    pub synced_at: DateTime<Utc>,
}

/// What a sync changed, per provider.
#[derive(Debug, Clone, Default)]
pub(crate) struct SyncReport {
    pub providers: Vec<ProviderSync>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ProviderSync {
    pub provider: String,
    pub error: Option<String>,
    pub added: Vec<RegisteredModel>,
    pub updated: Vec<RegisteredModel>,
    pub removed: Vec<String>,
    pub model_count: usize,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Registry {
    models: Arc<RwLock<BTreeMap<String, RegisteredModel>>>,
}

impl Registry {
    /// Loads the last snapshot so routing works before the first sync finishes.
    pub(crate) async fn load(pool: &PgPool, providers: &[Arc<dyn Provider>]) -> Result<Self, sqlx::Error> {
        let rows: Vec<ModelRow> = sqlx::query_as(
            "SELECT id, provider, name, family, parameter_count, quantization, size_bytes, context_length, \
             embedding, loaded, digest, synced_at FROM models",
        )
        .fetch_all(pool)
        .await?;
        let registry = Self::default();
        {
            let mut models = registry.write();
            for row in rows {
                // Models of providers no longer configured are not offered.
                let Some(source) = providers.iter().find(|p| p.name() == row.provider) else { continue };
                let info = ProviderModel {
                    name: row.name,
                    family: row.family,
                    parameter_count: row.parameter_count,
                    quantization: row.quantization,
                    size_bytes: row.size_bytes,
                    context_length: row.context_length,
                    digest: row.digest,
                    embedding: row.embedding,
                    loaded: row.loaded,
                };
                let model = RegisteredModel {
                    id: row.id.clone(),
                    provider: row.provider,
                    cloud: source.is_cloud(),
                    ollama: matches!(source.kind(), crate::provider::Kind::Ollama),
                    info,
                    synced_at: row.synced_at,
                };
                models.insert(row.id, model);
            }
        }
        Ok(registry)
    }

    pub(crate) fn get(&self, id: &str) -> Option<RegisteredModel> {
        self.read().get(id).cloned()
    }

    pub(crate) fn all(&self) -> Vec<RegisteredModel> {
        self.read().values().cloned().collect()
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Refreshes every provider; a provider that fails keeps its previous models.
    pub(crate) async fn sync(
        &self,
        pool: &PgPool,
        providers: &[Arc<dyn Provider>],
    ) -> Result<SyncReport, sqlx::Error> {
        let mut report = SyncReport::default();
        for provider in providers {
            let mut sync = ProviderSync { provider: provider.name().to_owned(), ..ProviderSync::default() };
            match provider.list_models().await {
                Ok(listed) => self.apply(pool, provider.as_ref(), listed, &mut sync).await?,
                Err(error) => {
                    tracing::warn!(provider = provider.name(), %error, "registry sync failed");
                    sync.error = Some(error.to_string());
                    sync.model_count = self.read().values().filter(|m| m.provider == provider.name()).count();
                }
            }
            report.providers.push(sync);
        }
        Ok(report)
    }

    async fn apply(
        &self,
        pool: &PgPool,
        provider: &dyn Provider,
        listed: Vec<ProviderModel>,
        sync: &mut ProviderSync,
    ) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        let name = provider.name();
        let previous: BTreeMap<String, RegisteredModel> = self
            .read()
            .iter()
            .filter(|(_, m)| m.provider == name)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut tx = pool.begin().await?;
        let mut fresh = BTreeMap::new();
        for info in listed {
            let id = format!("{name}/{}", info.name);
            let model = RegisteredModel {
                id: id.clone(),
                provider: name.to_owned(),
                cloud: provider.is_cloud(),
                ollama: matches!(provider.kind(), crate::provider::Kind::Ollama),
                info,
                synced_at: now,
            };
            match previous.get(&id) {
                None => sync.added.push(model.clone()),
                Some(old) if old.info != model.info => sync.updated.push(model.clone()),
                Some(_) => {}
            }
            sqlx::query(
                "INSERT INTO models (id, provider, provider_kind, name, family, parameter_count, quantization, size_bytes, \
                 context_length, embedding, loaded, digest, synced_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) \
                 ON CONFLICT (id) DO UPDATE SET family = EXCLUDED.family, parameter_count = EXCLUDED.parameter_count, \
                 quantization = EXCLUDED.quantization, size_bytes = EXCLUDED.size_bytes, context_length = EXCLUDED.context_length, \
                 embedding = EXCLUDED.embedding, loaded = EXCLUDED.loaded, digest = EXCLUDED.digest, synced_at = EXCLUDED.synced_at, \
                 updated_at = CASE WHEN models.digest IS DISTINCT FROM EXCLUDED.digest OR models.loaded IS DISTINCT FROM EXCLUDED.loaded \
                 THEN now() ELSE models.updated_at END",
            )
            .bind(&id)
            .bind(name)
            .bind(provider_kind(provider))
            .bind(&model.info.name)
            .bind(&model.info.family)
            .bind(model.info.parameter_count)
            .bind(&model.info.quantization)
            .bind(model.info.size_bytes)
            .bind(model.info.context_length)
            .bind(model.info.embedding)
            .bind(model.info.loaded)
            .bind(&model.info.digest)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            fresh.insert(id, model);
        }
        sync.removed = previous.keys().filter(|id| !fresh.contains_key(*id)).cloned().collect();
        if !sync.removed.is_empty() {
            sqlx::query("DELETE FROM models WHERE id = ANY($1)")
                .bind(&sync.removed)
                .execute(&mut *tx)
                .await?;
        }
        if !sync.added.is_empty() || !sync.updated.is_empty() || !sync.removed.is_empty() {
            crate::events::registry_changed(&mut tx, sync).await?;
        }
        tx.commit().await?;
        sync.model_count = fresh.len();
        let mut models = self.write();
        models.retain(|_, m| m.provider != name);
        models.extend(fresh);
        Ok(())
    }

    /// Forgets one model (after a delete at its provider).
    pub(crate) async fn remove(&self, pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM models WHERE id = $1").bind(id).execute(pool).await?;
        self.write().remove(id);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, RegisteredModel>> {
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, RegisteredModel>> {
        self.models.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn provider_kind(provider: &dyn Provider) -> i16 {
    match provider.kind() {
        crate::provider::Kind::Ollama => 1,
        crate::provider::Kind::OpenAiCompatible => 2,
    }
}
