//! Training samples from user corrections and from task outcomes, each exactly once.

use crate::harness::{Classifier, violations};
use codingagent_kernel::kafka::topics;
use codingagent_proto::codingagent::classifier::v1 as pb;
use codingagent_proto::codingagent::events::v1::{TaskExecutionSummary, TaskFailed, TaskSucceeded};
use codingagent_proto::codingagent::orchestration::v1::TaskClassification;
use prost::{Message, Name};
use tonic::Code;

const FEEDBACK: i16 = 2;
const OUTCOME: i16 = 3;

#[tokio::test]
async fn feedback_becomes_one_sample_and_the_latest_correction_wins() {
    let classifier = Classifier::plain().await;
    let mut alice = classifier.user("alice").await;
    let text = "make the invoices page load faster for large customers";
    let made = alice
        .classify(pb::ClassifyRequest { text: text.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .classification
        .unwrap();
    let correct = |task_type: i32, request_id: &str| pb::SubmitFeedbackRequest {
        classification_id: made.id.clone(),
        corrected_task_type: task_type,
        comment: "it is about speed".into(),
        request_id: request_id.into(),
        ..Default::default()
    };
    let first = alice.submit_feedback(correct(7, "fb-1")).await.unwrap().into_inner().feedback.unwrap();
    let retried = alice.submit_feedback(correct(7, "fb-1")).await.unwrap().into_inner().feedback.unwrap();
    assert_eq!(first, retried, "a retry records nothing new");
    assert_eq!(classifier.samples(FEEDBACK).await, [(text.to_owned(), 7, made.complexity as i16)]);

    alice.submit_feedback(correct(2, "fb-2")).await.unwrap();
    assert_eq!(classifier.samples(FEEDBACK).await, [(text.to_owned(), 2, made.complexity as i16)]);
    let shown = alice
        .get_classification(pb::GetClassificationRequest { classification_id: made.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .classification
        .unwrap();
    assert_eq!(shown.feedback.unwrap().corrected_task_type, 2, "the latest correction is shown");

    let mut bob = classifier.user("bob").await;
    assert_eq!(bob.submit_feedback(correct(3, "")).await.unwrap_err().code(), Code::NotFound);
    let empty = alice.submit_feedback(correct(0, "")).await.unwrap_err();
    assert_eq!(violations(&empty), ["corrected_task_type"]);
    let unknown = alice.submit_feedback(correct(42, "")).await.unwrap_err();
    assert_eq!(violations(&unknown), ["corrected_task_type"]);

    let stats = alice.get_training_stats(pb::GetTrainingStatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.total_samples, 1);
    assert_eq!(stats.source_counts.iter().find(|s| s.source == 2).unwrap().count, 1);
    assert!(!stats.ready_to_train);
    assert_eq!(stats.task_type_counts.len(), 9, "every task type is listed");
    classifier.stop().await;
}

fn summary(
    text: &str,
    task_type: i32,
    complexity: i32,
    iterations: i32,
    files: i32,
) -> Option<TaskExecutionSummary> {
    Some(TaskExecutionSummary {
        owner: "alice".into(),
        text: text.into(),
        classification: Some(TaskClassification { task_type, complexity, ..Default::default() }),
        iterations,
        files_changed: files,
        lines_added: 20,
        ..Default::default()
    })
}

async fn publish<M: Message + Name>(key: &str, event: &M) {
    codingagent_testkit::publish_event(
        &codingagent_testkit::topic(topics::TASK),
        key,
        &M::full_name(),
        event.encode_to_vec(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn task_outcomes_from_kafka_become_samples_exactly_once() {
    let classifier = Classifier::plain().await;
    let quick = uuid::Uuid::new_v4().to_string();
    let hard = uuid::Uuid::new_v4().to_string();
    let marker = uuid::Uuid::new_v4().to_string();
    // The topic holds other runs' outcomes too; these texts are this run's.
    let rename = format!("rename the misleading helper in the billing module ({quick})");
    let sso = format!("add single sign-on with SAML to every service ({hard})");
    let marked = format!("tidy up the changelog wording for the release ({marker})");
    let succeeded =
        TaskSucceeded { task_id: quick.clone(), summary: summary(&rename, 3, 2, 1, 1), ..Default::default() };
    publish(&quick, &succeeded).await;
    publish(&quick, &succeeded).await; // redelivered by an at-least-once producer
    let failed =
        TaskFailed { task_id: hard.clone(), summary: summary(&sso, 2, 2, 9, 14), ..Default::default() };
    publish(&hard, &failed).await;
    // The sentinel: another task's outcome under the duplicate's key, so on its partition and
    // after it. Once the sentinel's sample exists the duplicate has been handled.
    let sentinel = TaskSucceeded {
        task_id: marker.clone(),
        summary: summary(&marked, 5, 1, 1, 1),
        ..Default::default()
    };
    publish(&quick, &sentinel).await;
    outcome_samples(&classifier, &[&marked, &sso]).await;

    let mut ours: Vec<_> =
        classifier.samples(OUTCOME).await.into_iter().filter(|s| s.0 == rename || s.0 == sso).collect();
    ours.sort(); // the two tasks' events travel on different partitions
    assert_eq!(
        ours,
        [(sso.clone(), 2, 3), (rename.clone(), 3, 1)],
        "one sample per task: a quick one-file change was simple, a failed task at least as hard"
    );
    classifier.stop().await;
}

/// Waits until the outcome samples of every text in `texts` exist; returns them in `texts`' order.
async fn outcome_samples(classifier: &Classifier, texts: &[&str]) -> Vec<(String, i16, i16)> {
    for _ in 0..300 {
        let all = classifier.samples(OUTCOME).await;
        let found: Vec<_> =
            texts.iter().filter_map(|text| all.iter().find(|s| s.0 == *text).cloned()).collect();
        if found.len() == texts.len() {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the outcome samples of {texts:?} never appeared");
}

#[tokio::test]
async fn only_the_task_owners_correction_labels_its_outcome() {
    let classifier = Classifier::plain().await;
    let mut alice = classifier.user("alice").await;
    let mut bob = classifier.user("bob").await;
    let classify = |text: &str, task_id: &str| pb::ClassifyRequest {
        text: text.into(),
        task_id: task_id.into(),
        ..Default::default()
    };
    let correct = |classification: pb::Classification, task_type: i32| pb::SubmitFeedbackRequest {
        classification_id: classification.id,
        corrected_task_type: task_type,
        ..Default::default()
    };
    // Alice's task; bob classifies under its id (task_id is whatever a caller sends) and
    // "corrects" his own classification, trying to label her task.
    let theirs = uuid::Uuid::new_v4().to_string();
    let theirs_text = format!("make the invoices page load faster for large customers ({theirs})");
    alice.classify(classify(&theirs_text, &theirs)).await.unwrap();
    let planted = bob.classify(classify(&theirs_text, &theirs)).await.unwrap().into_inner();
    bob.submit_feedback(correct(planted.classification.unwrap(), 5)).await.unwrap();
    // Alice's own correction of another task still counts.
    let mine = uuid::Uuid::new_v4().to_string();
    let mine_text = format!("bump the serde dependency to the latest release ({mine})");
    let own = alice.classify(classify(&mine_text, &mine)).await.unwrap().into_inner();
    alice.submit_feedback(correct(own.classification.unwrap(), 6)).await.unwrap();

    for (task, text) in [(&theirs, &theirs_text), (&mine, &mine_text)] {
        let done =
            TaskSucceeded { task_id: task.clone(), summary: summary(text, 7, 2, 3, 3), ..Default::default() };
        publish(task, &done).await;
    }
    assert_eq!(
        outcome_samples(&classifier, &[&theirs_text, &mine_text]).await,
        [(theirs_text.clone(), 7, 2), (mine_text.clone(), 6, 2)],
        "bob's label did not reach alice's task; alice's own correction did"
    );
    classifier.stop().await;
}
