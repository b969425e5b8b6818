//! The public keys of one identity provider: static PEM keys from the configuration and the
//! provider's JSON Web Key Set, fetched at start-up, refreshed periodically, and fetched
//! again when a token names a key the gateway does not know (at most once per
//! `jwks_min_refresh_secs`, so made-up `kid`s cannot turn the gateway against the provider).
//!
//! Only RSA (RS256), P-256 (ES256) and Ed25519 (EdDSA) keys are ever loaded. Symmetric
//! (`oct`) entries in a JWKS are skipped: a key anyone can read must never verify an HMAC.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// One verification key.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) kid: String,
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("algorithm", &self.algorithm).finish()
    }
}

/// Parses `RS256`, `ES256` or `EdDSA`; anything else is refused.
pub(crate) fn safe_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// A static key from a PEM file.
pub(crate) fn from_pem(kid: &str, algorithm: Algorithm, pem: &[u8]) -> Result<Key, String> {
    let key = match algorithm {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        other => return Err(format!("{other:?} keys are not accepted")),
    }
    .map_err(|e| e.to_string())?;
    Ok(Key { kid: kid.to_owned(), algorithm, key })
}

/// The keys of a JWKS the gateway may use; unusable entries are skipped with a log line.
pub(crate) fn from_jwks(set: &JwkSet) -> Vec<Key> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            from_jwk(jwk).map_err(|why| tracing::debug!(kid = ?jwk.common.key_id, why, "jwk skipped")).ok()
        })
        .collect()
}

fn from_jwk(jwk: &Jwk) -> Result<Key, &'static str> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key");
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric key"),
        _ => return Err("an unsupported curve"),
    };
    let declared = jwk.common.key_algorithm;
    let matches = match declared {
        None => true,
        Some(KeyAlgorithm::RS256) => algorithm == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => algorithm == Algorithm::EdDSA,
        Some(_) => false,
    };
    if !matches {
        return Err("declared for another algorithm");
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "malformed")?;
    Ok(Key { kid: jwk.common.key_id.clone().unwrap_or_default(), algorithm, key })
}

/// Static keys plus the current JWKS of one issuer.
#[derive(Debug)]
pub(crate) struct KeyRing {
    static_keys: Vec<Key>,
    jwks: RwLock<Arc<Vec<Key>>>,
    jwks_url: Option<String>,
    http: reqwest::Client,
    /// When the last fetch was attempted, successful or not.
    last_fetch: Mutex<Option<Instant>>,
    min_refresh: Duration,
    /// One fetch at a time; callers arriving meanwhile wait for its result.
    fetching: tokio::sync::Mutex<()>,
}

impl KeyRing {
    pub(crate) fn new(static_keys: Vec<Key>, jwks_url: Option<String>, min_refresh: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Self {
            static_keys,
            jwks: RwLock::new(Arc::new(Vec::new())),
            jwks_url,
            http,
            last_fetch: Mutex::new(None),
            min_refresh,
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key named `kid` for `algorithm`, if known now.
    pub(crate) fn find(&self, kid: &str, algorithm: Algorithm) -> Option<Key> {
        let pick = |key: &&Key| key.kid == kid && key.algorithm == algorithm;
        if let Some(key) = self.static_keys.iter().find(pick) {
            return Some(key.clone());
        }
        self.jwks.read().unwrap_or_else(|e| e.into_inner()).iter().find(pick).cloned()
    }

    pub(crate) fn has_jwks(&self) -> bool {
        self.jwks_url.is_some()
    }

    /// Fetches the JWKS unless one was fetched within `min_refresh` (or `force`).
    pub(crate) async fn refresh(&self, force: bool) {
        let Some(url) = &self.jwks_url else { return };
        let _one = self.fetching.lock().await;
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
            if !force && last.is_some_and(|at| at.elapsed() < self.min_refresh) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.fetch(url).await {
            Ok(keys) => {
                tracing::debug!(url, keys = keys.len(), "jwks refreshed");
                *self.jwks.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
            }
            // The keys already known stay in use; an outage of the provider must not log
            // everyone out.
            Err(error) => tracing::warn!(url, %error, "cannot fetch jwks"),
        }
    }

    async fn fetch(&self, url: &str) -> Result<Vec<Key>, String> {
        let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > 1024 * 1024 {
            return Err("a jwks larger than 1 MiB".into());
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(from_jwks(&set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_mismatched_jwks_entries_are_skipped() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "wrong-alg", "alg": "RS256", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}))
        .unwrap();
        let keys = from_jwks(&set);
        assert_eq!(keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["e"]);
        assert_eq!(keys[0].algorithm, Algorithm::EdDSA);
    }

    #[test]
    fn only_the_three_safe_algorithms_parse() {
        assert_eq!(safe_algorithm("RS256"), Some(Algorithm::RS256));
        for name in ["HS256", "none", "RS384", "rs256", ""] {
            assert_eq!(safe_algorithm(name), None, "{name}");
        }
    }
}
