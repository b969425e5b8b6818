//! What the llm service adds on top of its provider: the same streamed generation measured
//! through the provider client directly and through the service's gRPC API, against an
//! Ollama double that answers instantly, so the difference is the service's own cost
//! (validation, selection, budget check, relaying, usage record and outbox event). Then 500
//! concurrent streams on one instance.
//!
//! `./dev infra && cargo bench -p codingagent-llm --bench overhead`
#![allow(clippy::unwrap_used, clippy::print_stdout, dead_code, unused_imports)]

#[path = "../tests/llm/harness.rs"]
mod harness;
#[path = "../tests/llm/ollama.rs"]
mod ollama;

use codingagent_llm::provider::Provider;
use codingagent_llm::provider::ollama::Ollama;
use codingagent_llm::request::{Message, Options, Prompt, Role};
use codingagent_proto::codingagent::llm::v1 as pb;
use futures::StreamExt;
use std::time::{Duration, Instant};

const REQUESTS: usize = 300;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1]
}

fn report(label: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    let (p50, p99) = (percentile(samples, 0.50), percentile(samples, 0.99));
    println!("{label:<44} p50 {:>9.3} ms   p99 {:>9.3} ms", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);
    (p50, p99)
}

async fn run(tokens: usize) -> ((Duration, Duration), (Duration, Duration)) {
    let double = ollama::ollama_with_model().await;
    let mut lines: Vec<serde_json::Value> = (0..tokens).map(|i| ollama::chunk(&format!("t{i} "))).collect();
    lines.push(ollama::done("stop", 20, tokens as i64));
    ollama::mount_chat(&double, ollama::ndjson(&lines)).await;
    let uri = double.uri();

    let provider = Ollama::new("ollama", &uri, Duration::from_secs(2), Duration::from_secs(30)).unwrap();
    let prompt = Prompt {
        messages: vec![Message { role: Role::User, content: "reverse a string".into(), name: None }],
        options: Options { temperature: Some(0.5), max_tokens: Some(tokens as u32), ..Options::default() },
    };
    let mut direct = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let started = Instant::now();
        let mut stream = provider.chat("qwen2.5-coder:7b", &prompt).await.unwrap();
        while let Some(event) = stream.next().await {
            event.unwrap();
        }
        direct.push(started.elapsed());
    }

    let llm = harness::Llm::start(harness::Setup::default(), double).await;
    let mut client = llm.user("bench").await;
    for (label, which) in [("ListModels (no database)", 0), ("GetBudget (one query)", 1)] {
        let mut samples = Vec::new();
        for _ in 0..100 {
            let started = Instant::now();
            if which == 0 {
                client.list_models(pb::ListModelsRequest::default()).await.unwrap();
            } else {
                client.get_budget(pb::GetBudgetRequest::default()).await.unwrap();
            }
            samples.push(started.elapsed());
        }
        report(label, &mut samples);
    }
    let mut served = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let request = pb::GenerateRequest {
            messages: vec![harness::user_message("reverse a string")],
            model: ollama::MODEL.into(),
            options: harness::options(0.5, tokens as i32),
            ..Default::default()
        };
        let started = Instant::now();
        let mut stream = client.generate(request).await.unwrap().into_inner();
        while stream.message().await.unwrap().is_some() {}
        served.push(started.elapsed());
    }
    let direct = report(&format!("provider directly, {tokens} tokens"), &mut direct);
    let served = report(&format!("through the service, {tokens} tokens"), &mut served);
    llm.stop().await;
    (direct, served)
}

async fn concurrent_streams(count: usize) {
    let double = ollama::ollama_with_model().await;
    let lines: Vec<serde_json::Value> =
        (0..50).map(|i| ollama::chunk(&format!("t{i} "))).chain([ollama::done("stop", 20, 50)]).collect();
    ollama::mount_chat(&double, ollama::ndjson(&lines)).await;
    let llm = harness::Llm::start(harness::Setup::default(), double).await;
    let client = llm.user("bench").await;
    let started = Instant::now();
    let calls = (0..count).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let request = pb::GenerateRequest {
                messages: vec![harness::user_message("reverse a string")],
                model: ollama::MODEL.into(),
                options: harness::options(0.5, 50),
                ..Default::default()
            };
            let mut stream = client.generate(request).await?.into_inner();
            let mut items = 0;
            while stream.message().await?.is_some() {
                items += 1;
            }
            Ok::<_, tonic::Status>(items)
        })
    });
    let results = futures::future::join_all(calls).await;
    let errors = results.iter().filter(|r| !matches!(r, Ok(Ok(51)))).count();
    println!(
        "{count} concurrent streams of 50 tokens: {errors} errors, all done in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    llm.stop().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (short_direct, short_served) = run(1).await;
        let (long_direct, long_served) = run(500).await;
        for (label, pick) in [("p50", 0), ("p99", 1)] {
            let at = |pair: (Duration, Duration)| if pick == 0 { pair.0 } else { pair.1 };
            let request = at(short_served).saturating_sub(at(short_direct));
            let long = at(long_served).saturating_sub(at(long_direct));
            // Per token: what 499 more tokens add to the service's overhead.
            let per_token = long.saturating_sub(request) / 499;
            println!(
                "{label}: overhead per request {:.3} ms, per streamed token {:.2} µs",
                request.as_secs_f64() * 1e3,
                per_token.as_secs_f64() * 1e6
            );
        }
        concurrent_streams(500).await;
    });
}
