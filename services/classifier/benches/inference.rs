//! The classifier's hot path: feature extraction and tract inference for one request, and
//! model loading. `cargo bench -p codingagent-classifier`.
#![allow(clippy::unwrap_used)]

use codingagent_classifier::features::{DIMENSIONS, extract};
use codingagent_classifier::linear::LinearModel;
use codingagent_classifier::onnx::{Heads, ServingModel, write};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

/// A 2,000-character request with prose, a path and a stack trace.
fn request() -> String {
    let base = "The login test in src/auth/login_test.rs fails about one run in five on CI. \
                thread 'auth::login' panicked at 'assertion failed: session.is_valid()', \
                src/auth/session.rs:88:9. It started after we moved token refresh into a \
                background task; maybe a race between refresh and validation? ";
    base.repeat(2000 / base.len() + 1).chars().take(2000).collect()
}

/// A head of realistic size over every feature, weights not all zero.
fn head(classes: usize) -> (LinearModel, Vec<String>) {
    let weights = (0..DIMENSIONS * classes).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let model = LinearModel { dimensions: DIMENSIONS, classes, weights, bias: vec![0.1; classes] };
    (model, (0..classes).map(|c| format!("class{c}")).collect())
}

/// The serving model's shape: nine task types and three complexities.
fn model() -> Heads {
    let ((task_type, task_types), (complexity, complexities)) = (head(9), head(3));
    Heads { task_type, task_types, complexity, complexities }
}

fn inference(c: &mut Criterion) {
    let text = request();
    let bytes = write(&model(), "bench");
    let serving = ServingModel::load(&bytes).unwrap();
    c.bench_function("classifier/features_2000_chars", |b| b.iter(|| extract(black_box(&text))));
    c.bench_function("classifier/tract_inference", |b| {
        let features = extract(&text);
        b.iter(|| serving.probabilities(black_box(&features)).unwrap())
    });
    c.bench_function("classifier/features_and_inference", |b| {
        b.iter(|| serving.probabilities(&extract(black_box(&text))).unwrap())
    });
    c.bench_function("classifier/model_load", |b| b.iter(|| ServingModel::load(black_box(&bytes)).unwrap()));
}

criterion_group!(benches, inference);
criterion_main!(benches);
