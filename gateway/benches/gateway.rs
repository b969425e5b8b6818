//! The gateway's per-call work, without the network: token verification warm (cache hit)
//! and cold (signature check) for each accepted algorithm, the cache when more callers are
//! live than it holds, grpc-web frame checks from a small message to the 4 MiB limit, text
//! mode decoding, and the traffic-split choice. Recorded in docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use codingagent_gateway::auth::Authenticator;
use codingagent_gateway::config::{AuthConfig, IssuerConfig, ServiceRoute, StaticKeyConfig};
use codingagent_gateway::{grpcweb, split};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.bench";
const AUDIENCE: &str = "codingagent";
/// (test key, algorithm name) — the keys the integration tests use.
const KEYS: [(&str, &str); 3] = [("ed-a", "EdDSA"), ("rsa-a", "RS256"), ("ec-a", "ES256")];

fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/keys").join(name)
}

fn authenticator(cache_entries: usize) -> Authenticator {
    let static_keys = KEYS
        .iter()
        .map(|(kid, algorithm)| StaticKeyConfig {
            kid: (*kid).into(),
            algorithm: (*algorithm).into(),
            public_key_file: key_path(&format!("{kid}.pub.pem")),
        })
        .collect();
    let config = AuthConfig {
        issuers: vec![IssuerConfig {
            issuer: ISSUER.into(),
            audiences: vec![AUDIENCE.into()],
            jwks_url: None,
            static_keys,
        }],
        cache_entries,
        ..AuthConfig::default()
    };
    Authenticator::new(&config).unwrap()
}

/// Tokens for `users` distinct users, signed by `kid`, with a realistic role claim.
fn tokens(kid: &str, users: usize) -> Vec<String> {
    let pem = std::fs::read(key_path(&format!("{kid}.pem"))).unwrap();
    let (algorithm, key) = match kid {
        "rsa-a" => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap()),
        "ec-a" => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap()),
        _ => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem).unwrap()),
    };
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.into());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    (0..users)
        .map(|i| {
            let claims = serde_json::json!({
                "iss": ISSUER, "aud": AUDIENCE, "sub": format!("user-{i:06}"),
                "roles": ["developer"], "iat": now, "nbf": now, "exp": now + 3600,
            });
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        })
        .collect()
}

fn auth(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut group = c.benchmark_group("auth");
    for (kid, algorithm) in KEYS {
        let warm = authenticator(100_000);
        let token = tokens(kid, 1).remove(0);
        runtime.block_on(warm.verify(&token)).unwrap();
        group.bench_function(BenchmarkId::new("warm", algorithm), |b| {
            b.to_async(&runtime).iter(|| async { warm.verify(black_box(&token)).await.unwrap() });
        });
        // A one-entry cache and 256 rotating users: every call checks a signature.
        let cold = authenticator(1);
        let many = tokens(kid, 256);
        let mut next = 0;
        group.bench_function(BenchmarkId::new("cold", algorithm), |b| {
            b.to_async(&runtime).iter(|| {
                next = (next + 1) % many.len();
                let token = &many[next];
                let cold = &cold;
                async move { cold.verify(black_box(token)).await.unwrap() }
            });
        });
    }
    // The hard case for the cache: a full 100,000-entry cache (a large tenant's working
    // set), looked up by a caller deep inside it.
    let full = authenticator(100_000);
    let crowd = tokens("ed-a", 100_000);
    for token in &crowd {
        runtime.block_on(full.verify(token)).unwrap();
    }
    let mut next = 0;
    group.bench_function("warm/EdDSA-100k-live", |b| {
        b.to_async(&runtime).iter(|| {
            next = (next + 7919) % crowd.len();
            let token = &crowd[next];
            let full = &full;
            async move { full.verify(black_box(token)).await.unwrap() }
        });
    });
    group.finish();
}

fn frame(size: usize) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(size).unwrap().to_be_bytes());
    body.extend(std::iter::repeat_n(0x5a, size));
    body
}

fn grpc_web(c: &mut Criterion) {
    let mut group = c.benchmark_group("grpcweb");
    for size in [256usize, 64 * 1024, 4 * 1024 * 1024 - 5] {
        // The check reads the 5-byte header only, so its cost must not grow with the size.
        let body = frame(size);
        group.bench_with_input(BenchmarkId::new("single_message", size), &body, |b, body| {
            b.iter(|| grpcweb::single_message(black_box(body), 4 * 1024 * 1024).unwrap());
        });
    }
    for size in [256usize, 64 * 1024] {
        let text = base64::engine::general_purpose::STANDARD.encode(frame(size)).into_bytes();
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("decode_text", size), &text, |b, text| {
            b.iter(|| grpcweb::decode_text(black_box(text)).unwrap());
        });
    }
    group.finish();
}

fn splits(c: &mut Criterion) {
    let route = ServiceRoute {
        backend: "chat".into(),
        alternate: Some("chat-legacy".into()),
        alternate_percent: 12.5,
        use_legacy: false,
    };
    let users: Vec<String> = (0..10_000).map(|i| format!("user-{i:06}")).collect();
    let mut next = 0;
    c.bench_function("split/target", |b| {
        b.iter(|| {
            next = (next + 1) % users.len();
            split::target(black_box(&route), "codingagent.chat.v1", &users[next])
        });
    });
}

criterion_group!(benches, auth, grpc_web, splits);
criterion_main!(benches);
