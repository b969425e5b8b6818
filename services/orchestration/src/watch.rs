//! WatchTasks: the caller's task changes, from the `task_changes` feed every transition
//! writes. A first call (after_seq 0) gets a snapshot of the unfinished tasks; a resumed call
//! replays what it missed; then changes stream live, woken by NOTIFY on any replica.

use crate::engine::Engine;
use crate::error::{OrchestrationError, Result, db_status};
use crate::notify;
use crate::store::tasks;
use codingagent_kernel::identity::Caller;
use codingagent_kernel::validate::Violations;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use codingagent_proto::codingagent::orchestration::v1::watch_tasks_response::Item;
use codingagent_proto::helpers::{now, timestamp};
use futures::Stream;
use prost::Message;
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub(crate) type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchTasksResponse, tonic::Status>> + Send>>;

pub(crate) async fn open(
    engine: Arc<Engine>,
    caller: &Caller,
    request: pb::WatchTasksRequest,
) -> Result<WatchStream> {
    let mut v = Violations::default();
    if request.after_seq < 0 {
        v.add("after_seq", "must not be negative");
    }
    if request.task_ids.len() > 100 {
        v.add("task_ids", "at most 100 ids");
    }
    let mut only = HashSet::new();
    for (i, id) in request.task_ids.iter().enumerate() {
        if let Some(id) = v.id(&format!("task_ids[{i}]"), id) {
            only.insert(id);
        }
    }
    v.finish()?;
    let owner = caller.require_user()?.to_owned();
    let (oldest, newest) = {
        let mut conn = engine.pool.acquire().await?;
        tasks::change_bounds(&mut conn).await?
    };
    if request.after_seq > newest || (request.after_seq > 0 && request.after_seq < oldest - 1) {
        return Err(OrchestrationError::OutOfRange(format!(
            "after_seq {} is not a change this server still keeps; reload with ListTasks and watch from 0",
            request.after_seq
        )));
    }
    let mut notes = engine.hub.subscribe();
    let heartbeat = Duration::from_secs(engine.config.heartbeat_secs);
    let wanted = move |id: &uuid::Uuid| only.is_empty() || only.contains(id);
    let stream = async_stream::try_stream! {
        let mut cursor = request.after_seq;
        let mut delivered = 0i64;
        if cursor == 0 {
            cursor = newest;
            let rows = {
                let mut conn = engine.pool.acquire().await.map_err(db_status)?;
                tasks::unfinished(&mut conn, Some(&owner)).await.map_err(db_status)?
            };
            for row in rows.iter().filter(|r| wanted(&r.id)) {
                delivered += 1;
                let change = pb::TaskChange { task: Some(crate::convert::task(row)), previous_state: 0, change_time: Some(timestamp(row.updated_at)) };
                yield pb::WatchTasksResponse { seq: cursor, item: Some(Item::Change(change)) };
            }
        }
        let mut caught_up = false;
        loop {
            let rows = {
                let mut conn = engine.pool.acquire().await.map_err(db_status)?;
                tasks::changes_after(&mut conn, Some(&owner), cursor, 500).await.map_err(db_status)?
            };
            let full = rows.len() == 500;
            for row in rows {
                cursor = row.seq;
                if !wanted(&row.task_id) { continue; }
                let Ok(task) = pb::Task::decode(row.task.as_slice()) else { continue };
                delivered += 1;
                let change = pb::TaskChange { task: Some(task), previous_state: i32::from(row.previous_state), change_time: Some(timestamp(row.changed_at)) };
                yield pb::WatchTasksResponse { seq: row.seq, item: Some(Item::Change(change)) };
            }
            if full { continue; }
            if !caught_up {
                caught_up = true;
                yield pb::WatchTasksResponse { seq: cursor, item: Some(Item::CaughtUp(pb::WatchCaughtUp { delivered })) };
            }
            if !notify::wait(&mut notes, notify::TASKS, "", heartbeat).await {
                yield pb::WatchTasksResponse { seq: cursor, item: Some(Item::Heartbeat(pb::Heartbeat { server_time: Some(now()) })) };
            }
        }
    };
    Ok(Box::pin(stream))
}
