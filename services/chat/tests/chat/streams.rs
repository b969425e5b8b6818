//! StreamConversation: exact replay and resume, live delivery across replicas, presence and
//! typing.

use crate::harness::{Chat, Client, conversation, post};
use codingagent_proto::codingagent::chat::v1 as pb;
use pb::conversation_event::Event;
use std::time::Duration;
use tonic::{Code, Streaming};

async fn open(client: &mut Client, id: &str, after_seq: i64) -> Streaming<pb::StreamConversationResponse> {
    let request = pb::StreamConversationRequest { conversation_id: id.into(), after_seq };
    client.stream_conversation(request).await.unwrap().into_inner()
}

/// The next event matching `wanted`, skipping others; panics after 10 s.
async fn next(
    stream: &mut Streaming<pb::StreamConversationResponse>,
    wanted: impl Fn(&Event) -> bool,
) -> pb::ConversationEvent {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let item = stream.message().await.unwrap().expect("the stream ended early");
            let event = item.event.unwrap();
            if event.event.as_ref().is_some_and(&wanted) {
                return event;
            }
        }
    })
    .await
    .expect("no matching event within 10 s")
}

fn is_durable(event: &Event) -> bool {
    !matches!(event, Event::Typing(_) | Event::Presence(_) | Event::Heartbeat(_))
}

/// Durable events' (seq, kind) until `count` arrived.
async fn durable(
    stream: &mut Streaming<pb::StreamConversationResponse>,
    count: usize,
) -> Vec<(i64, &'static str)> {
    let mut out = Vec::new();
    while out.len() < count {
        let event = next(stream, is_durable).await;
        let kind = match event.event.unwrap() {
            Event::MessagePosted(_) => "posted",
            Event::MessageEdited(_) => "edited",
            Event::MessageDeleted(_) => "deleted",
            Event::ConversationUpdated(_) => "updated",
            Event::ConversationDeleted(_) => "conversation deleted",
            _ => "other",
        };
        out.push((event.seq, kind));
    }
    out
}

#[tokio::test]
async fn a_resumed_stream_delivers_exactly_the_missed_events_then_live_ones() {
    let chat = Chat::start().await;
    let (mut alice, mut eve) = (chat.user("alice").await, chat.user("eve").await);
    let id = conversation(&mut alice, "stream", &[]).await.id;
    let first = post(&mut alice, &id, "one").await;
    post(&mut alice, &id, "two").await;
    post(&mut alice, &id, "three").await;

    // A client that had seen seq 1 resumes: 2 and 3 from the log, then whatever happens.
    let mut stream = open(&mut alice, &id, 1).await;
    assert_eq!(durable(&mut stream, 2).await, [(2, "posted"), (3, "posted")]);
    post(&mut alice, &id, "four").await;
    let edit = pb::EditMessageRequest {
        message_id: first.id.clone(),
        text: "one!".into(),
        request_id: String::new(),
    };
    alice.edit_message(edit).await.unwrap();
    assert_eq!(durable(&mut stream, 2).await, [(4, "posted"), (5, "edited")]);
    drop(stream);

    // Resuming from 3 replays 4 and 5 once each, nothing earlier.
    let mut resumed = open(&mut alice, &id, 3).await;
    assert_eq!(durable(&mut resumed, 2).await, [(4, "posted"), (5, "edited")]);
    // An idle stream gets heartbeats carrying the latest seq.
    let beat = next(&mut resumed, |e| matches!(e, Event::Heartbeat(_))).await;
    assert_eq!(beat.seq, 5);

    let beyond = alice
        .stream_conversation(pb::StreamConversationRequest { conversation_id: id.clone(), after_seq: 99 })
        .await;
    assert_eq!(beyond.unwrap_err().code(), Code::OutOfRange);
    let negative = alice
        .stream_conversation(pb::StreamConversationRequest { conversation_id: id.clone(), after_seq: -1 })
        .await;
    assert_eq!(crate::harness::violations(&negative.unwrap_err()), ["after_seq"]);
    let hidden = eve
        .stream_conversation(pb::StreamConversationRequest { conversation_id: id.clone(), after_seq: 0 })
        .await;
    assert_eq!(hidden.unwrap_err().code(), Code::NotFound);

    // Deleting the conversation is the last event; the stream then ends with OK.
    alice
        .delete_conversation(pb::DeleteConversationRequest { conversation_id: id, request_id: String::new() })
        .await
        .unwrap();
    assert_eq!(durable(&mut resumed, 1).await, [(6, "conversation deleted")]);
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match resumed.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    });
    assert!(end.await.unwrap().is_ok(), "the stream ends with OK");
    chat.stop().await;
}

#[tokio::test]
async fn a_message_posted_on_one_replica_reaches_a_stream_on_another() {
    let first = Chat::start().await;
    let second = first.replica().await;
    let (mut alice, mut bob) = (first.user("alice").await, second.user("bob").await);
    let id = conversation(&mut alice, "replicas", &["bob"]).await.id;
    let mut on_second = open(&mut bob, &id, 0).await;
    let mut on_first = open(&mut alice, &id, 0).await;
    for n in 1..=20 {
        post(&mut alice, &id, &format!("message {n}")).await;
    }
    let seqs: Vec<i64> = durable(&mut on_second, 20).await.into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "every message, once, in order");
    let seqs: Vec<i64> = durable(&mut on_first, 20).await.into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    // Bob is removed from the conversation: his stream ends with NOT_FOUND within a heartbeat.
    let remove = pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation { id: id.clone(), member_ids: vec![], ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["member_ids".into()] }),
        request_id: String::new(),
    };
    alice.update_conversation(remove).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match on_second.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error"),
                Err(status) => return status,
            }
        }
    });
    assert_eq!(ended.await.unwrap().code(), Code::NotFound);
    drop((on_first, on_second));
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn presence_follows_open_streams_and_typing_signals_lapse() {
    let chat = Chat::start().await;
    let (mut alice, mut bob) = (chat.user("alice").await, chat.user("bob").await);
    let id = conversation(&mut alice, "presence", &["bob"]).await.id;
    let mut bobs = open(&mut bob, &id, 0).await;
    let list = |client: &mut Client| {
        let request = pb::ListPresenceRequest { conversation_id: id.clone(), ..Default::default() };
        let mut client = client.clone();
        async move { client.list_presence(request).await.unwrap().into_inner().presences }
    };

    let alices = open(&mut alice, &id, 0).await;
    let online = next(&mut bobs, |e| matches!(e, Event::Presence(p) if p.presence.as_ref().unwrap().actor.as_ref().unwrap().id == "alice")).await;
    let Some(Event::Presence(pb::PresenceEvent { presence: Some(presence) })) = online.event else {
        unreachable!()
    };
    assert_eq!((presence.state, presence.connection_count), (pb::PresenceState::Online as i32, 1));
    let listed = list(&mut bob).await;
    let states: Vec<(String, i32)> =
        listed.iter().map(|p| (p.actor.as_ref().unwrap().id.clone(), p.state)).collect();
    assert!(states.contains(&("alice".into(), pb::PresenceState::Online as i32)), "{states:?}");
    assert!(states.contains(&("bob".into(), pb::PresenceState::Online as i32)), "{states:?}");

    let mut eve = chat.user("eve").await;
    let peek = pb::ListPresenceRequest { conversation_id: id.clone(), ..Default::default() };
    assert_eq!(eve.list_presence(peek).await.unwrap_err().code(), Code::NotFound);
    let intrude = pb::SetTypingRequest { conversation_id: id.clone(), typing: true };
    assert_eq!(eve.set_typing(intrude).await.unwrap_err().code(), Code::NotFound);

    // Typing: delivered, limited to one per second, and lapsing into "stopped".
    let typing = pb::SetTypingRequest { conversation_id: id.clone(), typing: true };
    let expiry = alice.set_typing(typing.clone()).await.unwrap().into_inner().expire_time;
    assert!(expiry.is_some());
    assert_eq!(alice.set_typing(typing).await.unwrap_err().code(), Code::ResourceExhausted);
    let started = next(&mut bobs, |e| matches!(e, Event::Typing(t) if t.typing)).await;
    assert!(matches!(started.event, Some(Event::Typing(ref t)) if t.actor.as_ref().unwrap().id == "alice"));
    next(&mut bobs, |e| matches!(e, Event::Typing(t) if !t.typing)).await;

    // Alice closes her stream: she goes offline for bob at once and is listed as away.
    drop(alices);
    let offline = next(&mut bobs, |e| matches!(e, Event::Presence(p) if p.presence.as_ref().unwrap().state == pb::PresenceState::Offline as i32)).await;
    let Some(Event::Presence(pb::PresenceEvent { presence: Some(gone) })) = offline.event else {
        unreachable!()
    };
    assert_eq!(gone.actor.unwrap().id, "alice");
    let listed = list(&mut bob).await;
    let alice_now = listed.iter().find(|p| p.actor.as_ref().unwrap().id == "alice").unwrap();
    assert_eq!((alice_now.state, alice_now.connection_count), (pb::PresenceState::Away as i32, 0));
    chat.stop().await;
}

#[tokio::test]
async fn streams_of_a_replica_that_dies_lapse_and_the_survivors_report_them_offline() {
    let database = codingagent_testkit::TestDatabase::create().await.unwrap();
    let mut config = crate::harness::config(&database).await;
    // Long enough that "not lapsed yet" can be observed right after the crash.
    config.presence_ttl_secs = 6;
    let chat = Chat::start_with(config, Some(database)).await;
    let doomed = chat.doomed_replica().await;
    let (mut alice, mut bob) = (doomed.chat.user("alice").await, chat.user("bob").await);
    let id = conversation(&mut bob, "crash", &["alice"]).await.id;
    let mut bobs = open(&mut bob, &id, 0).await;
    let is_alice = |e: &Event, state: pb::PresenceState| matches!(e, Event::Presence(p) if p.presence.as_ref().is_some_and(|p| p.state == state as i32 && p.actor.as_ref().unwrap().id == "alice"));
    let _alices = open(&mut alice, &id, 0).await;
    next(&mut bobs, |e| is_alice(e, pb::PresenceState::Online)).await;

    doomed.crash();
    let alice_listed = |mut bob: Client| {
        let request = pb::ListPresenceRequest { conversation_id: id.clone(), ..Default::default() };
        async move {
            let listed = bob.list_presence(request).await.unwrap().into_inner().presences;
            let alice = listed.into_iter().find(|p| p.actor.as_ref().unwrap().id == "alice").unwrap();
            (alice.state, alice.connection_count)
        }
    };
    // Her stream never said goodbye, so she stays online until its entry lapses...
    assert_eq!(alice_listed(bob.clone()).await, (pb::PresenceState::Online as i32, 1));
    // ...and then bob's stream, sweeping as it renews its own, reports her offline.
    let offline = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = bobs.message().await.unwrap().expect("the stream ended early").event.unwrap();
            if event.event.as_ref().is_some_and(|e| is_alice(e, pb::PresenceState::Offline)) {
                return event;
            }
        }
    })
    .await
    .expect("alice never went offline");
    let Some(Event::Presence(pb::PresenceEvent { presence: Some(gone) })) = offline.event else {
        unreachable!()
    };
    let last_seen = gone.last_seen_time.unwrap();
    let lapsed_for = std::time::SystemTime::now()
        .duration_since(
            std::time::UNIX_EPOCH + Duration::new(last_seen.seconds as u64, last_seen.nanos as u32),
        )
        .unwrap();
    assert!(
        lapsed_for >= Duration::from_secs(6),
        "last seen at her last renewal, one TTL ago: {lapsed_for:?}"
    );
    assert_eq!(alice_listed(bob.clone()).await, (pb::PresenceState::Away as i32, 0));
    chat.stop().await;
}

/// The message an event carries, if any.
fn carried(event: &pb::ConversationEvent) -> Option<&pb::Message> {
    match event.event.as_ref()? {
        Event::MessagePosted(m) | Event::MessageEdited(m) | Event::MessageDeleted(m) => Some(m),
        _ => None,
    }
}

#[tokio::test]
async fn a_replay_shows_messages_as_they_are_now_to_old_and_new_members_alike() {
    let chat = Chat::start().await;
    let (mut alice, mut carol) = (chat.user("alice").await, chat.user("carol").await);
    let id = conversation(&mut alice, "redacted", &["bob"]).await.id;
    let secret = post(&mut alice, &id, "the deploy password is hunter2").await;
    let draft = post(&mut alice, &id, "first draft of the plan").await;
    let edit = pb::EditMessageRequest {
        message_id: draft.id.clone(),
        text: "final plan".into(),
        request_id: String::new(),
    };
    alice.edit_message(edit).await.unwrap();
    let delete = pb::DeleteMessageRequest { message_id: secret.id.clone(), request_id: String::new() };
    alice.delete_message(delete).await.unwrap();
    // Carol joins after all of that.
    let add = pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation {
            id: id.clone(),
            member_ids: vec!["bob".into(), "carol".into()],
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["member_ids".into()] }),
        request_id: String::new(),
    };
    alice.update_conversation(add).await.unwrap();
    let listed = alice
        .list_messages(pb::ListMessagesRequest { conversation_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .messages;

    let mut resuming = carol.clone();
    let readers = [
        ("alice", &mut alice, 0, vec![1, 2, 3, 4, 5]),
        ("carol", &mut carol, 0, vec![1, 2, 3, 4, 5]),
        ("carol resuming", &mut resuming, 2, vec![3, 4, 5]),
    ];
    for (who, client, after_seq, seqs) in readers {
        let mut stream = open(client, &id, after_seq).await;
        let mut events = Vec::new();
        while events.len() < seqs.len() {
            events.push(next(&mut stream, is_durable).await);
        }
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs, "{who}: every seq, in order");
        for message in events.iter().filter_map(carried) {
            // Whatever event carries it, a message is replayed as ListMessages shows it now:
            // the deleted one as a tombstone, the edited one with its current text.
            let now = listed.iter().find(|m| m.id == message.id).unwrap();
            assert_eq!(message, now, "{who}");
            assert!(
                !message.text.contains("hunter2") && !message.text.contains("first draft"),
                "{who}: {message:?}"
            );
        }
        let tombstone = events.iter().filter_map(carried).find(|m| m.id == secret.id).unwrap();
        assert!(tombstone.text.is_empty() && tombstone.delete_time.is_some(), "{who}: {tombstone:?}");
        let edited = events.iter().filter_map(carried).find(|m| m.id == draft.id).unwrap();
        assert_eq!(edited.text, "final plan", "{who}");
    }
    chat.stop().await;
}
