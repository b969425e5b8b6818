//! `codingagent dead-letters list|replay` against a real database.

use crate::codingagent;
use codingagent_testkit::TestDatabase;

#[tokio::test]
async fn an_operator_lists_and_replays_dead_letters() {
    let database = TestDatabase::create().await.unwrap();
    let env = [("CODINGAGENT__DATABASE__URL", database.url.as_str())];
    let list = |env: &[(&str, &str)]| {
        let output = codingagent(&["dead-letters", "list", "--service", "classifier"], env);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The first call migrates the schema; nothing is dead yet.
    assert!(list(&env).contains("0 dead letter(s)"));

    let pool = database.pool().await.unwrap();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO classifier.dead_letters (consumer, event_id, topic, kafka_partition, kafka_offset, \
         event_type, event_key, payload, reason) VALUES ('classifier-task-outcomes', \
         '0191d7a4-0000-7000-8000-000000000001', 'codingagent.task.v1', 0, 42, \
         'codingagent.events.v1.TaskSucceeded', 'task-1', '\\x0a01', 'payload does not decode') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let listed = list(&env);
    assert!(listed.contains("payload does not decode") && listed.contains("waiting"), "{listed}");

    let replay = codingagent(&["dead-letters", "replay", "--service", "classifier", &id.to_string()], &env);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert!(list(&env).contains("replayed"));
    // The original event is back in the outbox under its own id, for its topic.
    let (topic, event_id): (String, String) =
        sqlx::query_as("SELECT topic, event_id::text FROM classifier.outbox ORDER BY id DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (topic.as_str(), event_id.as_str()),
        ("codingagent.task.v1", "0191d7a4-0000-7000-8000-000000000001")
    );

    // A second replay is refused, and says why.
    let again = codingagent(&["dead-letters", "replay", "--service", "classifier", &id.to_string()], &env);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already replayed"));
    pool.close().await;
    database.drop_database().await.unwrap();
}
