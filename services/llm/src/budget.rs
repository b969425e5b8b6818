//! Monthly token budgets enforced under concurrency: before a call reaches a provider it
//! reserves its estimated tokens against the user's budget (and the provider's, for a cloud
//! provider), and after its real usage is recorded it gives the reservation back. Checking
//! before the call and charging after it let any number of parallel calls pass a nearly spent
//! budget; a reservation admits only the calls that fit.

use crate::engine::{Engine, estimate_tokens};
use crate::error::{LlmError, Result};
use crate::request::Prompt;
use crate::store::{self, Reservation, Subject};
use chrono::Utc;
use codingagent_kernel::identity::Caller;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// How long a reservation outlives a process that died before giving it back. Far longer than
/// any call; a call that outlasts it is still charged in full when it ends.
const RESERVATION_TTL: Duration = Duration::from_secs(3600);

/// Tokens a call holds against budgets until its usage is recorded. `release` gives them back;
/// a hold dropped without it (the handler was cancelled while waiting for a provider) gives
/// them back in the background.
#[derive(Debug)]
pub(crate) struct Hold {
    pool: PgPool,
    ids: Vec<Uuid>,
}

impl Hold {
    pub(crate) fn empty(pool: &PgPool) -> Self {
        Self { pool: pool.clone(), ids: Vec::new() }
    }

    /// Takes over what `other` holds.
    pub(crate) fn merge(&mut self, mut other: Hold) {
        self.ids.append(&mut other.ids);
    }

    pub(crate) async fn release(mut self) {
        release(&self.pool, std::mem::take(&mut self.ids)).await;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let (pool, ids) = (self.pool.clone(), std::mem::take(&mut self.ids));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&pool, ids).await });
        }
    }
}

async fn release(pool: &PgPool, ids: Vec<Uuid>) {
    if ids.is_empty() {
        return;
    }
    if let Err(error) = store::release(pool, &ids).await {
        // Not fatal: the reservations expire on their own.
        tracing::warn!(%error, reservations = ids.len(), "budget reservations not released");
    }
}

/// The most tokens a generation may use: the prompt (estimated) and the output it may
/// produce, which is `max_tokens`, else `default_output`, never more than the model's context.
pub(crate) fn estimate(prompt: &Prompt, default_output: i64, context_length: i32) -> i64 {
    let input: i64 = prompt.messages.iter().map(|m| estimate_tokens(&m.content)).sum();
    let mut output = prompt.options.max_tokens.map_or(default_output, i64::from);
    if context_length > 0 {
        output = output.min(i64::from(context_length));
    }
    input.saturating_add(output.max(0))
}

impl Engine {
    /// Reserves `tokens` of the caller's user budget; a service calling for nobody has none.
    pub(crate) async fn reserve_user(&self, caller: &Caller, tokens: i64) -> Result<Hold> {
        let Some(user) = caller.user_id() else { return Ok(Hold::empty(&self.pool)) };
        let default = self.config.budgets.default_user_monthly_tokens;
        self.reserve(Subject::User(user.to_owned()), default, tokens).await
    }

    /// Reserves `tokens` of a cloud provider's budget; local providers cost nothing.
    pub(crate) async fn reserve_provider(&self, provider: &str, tokens: i64) -> Result<Hold> {
        if !self.provider(provider).is_some_and(|p| p.is_cloud()) {
            return Ok(Hold::empty(&self.pool));
        }
        let default = self.config.budgets.default_provider_monthly_tokens;
        self.reserve(Subject::Provider(provider.to_owned()), default, tokens).await
    }

    /// `default_limit` applies when no budget was set; 0 there means unlimited.
    async fn reserve(&self, subject: Subject, default_limit: i64, tokens: i64) -> Result<Hold> {
        let (start, end) = store::month(Utc::now());
        let default_limit = (default_limit != 0).then_some(default_limit);
        let id = Uuid::now_v7();
        match store::reserve(&self.pool, &subject, default_limit, start, id, tokens, RESERVATION_TTL).await? {
            Reservation::Held => Ok(Hold { pool: self.pool.clone(), ids: vec![id] }),
            Reservation::Unlimited => Ok(Hold::empty(&self.pool)),
            Reservation::Refused { limit, used } => Err(LlmError::BudgetExhausted {
                subject: subject.name().to_owned(),
                limit,
                used,
                needed: tokens,
                resets_in: (end - Utc::now()).to_std().unwrap_or_default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Message, Options, Role};

    fn prompt(text: &str, max_tokens: Option<u32>) -> Prompt {
        Prompt {
            messages: vec![Message { role: Role::User, content: text.into(), name: None }],
            options: Options { max_tokens, ..Options::default() },
        }
    }

    #[test]
    fn estimates_count_the_prompt_and_the_most_output_the_call_may_produce() {
        let text = "x".repeat(40); // 10 tokens
        assert_eq!(estimate(&prompt(&text, Some(16)), 1024, 0), 26);
        assert_eq!(estimate(&prompt(&text, None), 1024, 0), 1034, "no max_tokens: the configured default");
        assert_eq!(estimate(&prompt(&text, Some(100_000)), 1024, 4096), 4106, "never more than the context");
    }
}
