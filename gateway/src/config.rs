//! The gateway's settings: the shared server, telemetry, Redis and identity sections, then
//! backends, routes, authentication, CORS, rate limits, resilience and connection limits.
//!
//! Routes and traffic splits (`[services]`) are re-read while the gateway runs (see
//! `reload`); everything else applies at start-up.

use codingagent_kernel::config::{
    Common, ConfigError, Environment, IdentityConfig, RedisConfig, ServerConfig, ServiceConfig,
    TelemetryConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the gateway reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub redis: RedisConfig,
    /// Mints the internal identity tokens the services verify.
    pub identity: IdentityConfig,
    /// Backend pools by name.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Protobuf package (`codingagent.chat.v1`) → where its calls go. Reloaded while running.
    pub services: BTreeMap<String, ServiceRoute>,
    /// Plain-HTTP routes by path prefix (webhooks, attachment upload and download).
    pub http_routes: Vec<HttpRoute>,
    pub auth: AuthConfig,
    pub cors: CorsConfig,
    pub rate_limits: RateLimitConfig,
    pub resilience: ResilienceConfig,
    pub limits: LimitsConfig,
    /// The built dashboard (`web/` production build); `/` serves its `index.html`. Unset
    /// serves no dashboard.
    pub static_dir: Option<PathBuf>,
    /// How often the configuration file is checked for changed routes and splits.
    pub reload_interval_ms: u64,
    /// Add `x-codingagent-backend` to responses, naming the pool that served the call
    /// (debugging splits); production refuses it, since it tells clients the topology.
    pub debug_headers: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig {
                listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
                // Browsers and SDKs keep streams open; the gateway holds many more of them
                // than one service does.
                max_streams_per_caller: 64,
                ..ServerConfig::default()
            },
            telemetry: TelemetryConfig::default(),
            redis: RedisConfig::default(),
            identity: IdentityConfig::default(),
            backends: BTreeMap::new(),
            services: BTreeMap::new(),
            http_routes: Vec::new(),
            auth: AuthConfig::default(),
            cors: CorsConfig::default(),
            rate_limits: RateLimitConfig::default(),
            resilience: ResilienceConfig::default(),
            limits: LimitsConfig::default(),
            static_dir: None,
            reload_interval_ms: 2_000,
            debug_headers: false,
        }
    }
}

/// One pool of interchangeable backend endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// `http://host:port` of each replica (plaintext HTTP/2 inside the mesh).
    pub endpoints: Vec<String>,
    pub connect_timeout_ms: u64,
    /// Unary calls one endpoint may have in flight; beyond it the gateway sheds load with
    /// `UNAVAILABLE` instead of queueing without bound.
    pub max_in_flight: usize,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self { endpoints: Vec::new(), connect_timeout_ms: 1_000, max_in_flight: 512 }
    }
}

/// Where one protobuf package's calls go, and how a migration splits them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRoute {
    pub backend: String,
    /// Another pool serving the same contract (an older deployment during a migration).
    #[serde(default)]
    pub alternate: Option<String>,
    /// Percentage of users (0–100, sticky by user) sent to `alternate`.
    #[serde(default)]
    pub alternate_percent: f64,
    /// Send every call to `alternate` (the cut-over switch).
    #[serde(default)]
    pub use_legacy: bool,
}

/// A plain-HTTP route: requests whose path starts with `prefix` go to `backend` unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    pub prefix: String,
    pub backend: String,
    /// Served without a user token (webhooks authenticate by their own signature).
    #[serde(default)]
    pub public: bool,
    /// Largest accepted body.
    #[serde(default = "default_http_body_bytes")]
    pub max_body_bytes: u64,
}

fn default_http_body_bytes() -> u64 {
    25 * 1024 * 1024
}

/// External JWT verification (ARCHITECTURE §4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Identity providers whose tokens are accepted.
    pub issuers: Vec<IssuerConfig>,
    /// Accepted signature algorithms; only `RS256`, `ES256` and `EdDSA` may appear.
    pub algorithms: Vec<String>,
    /// Tolerated clock difference for `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Longest accepted token; longer ones are refused before any parsing.
    pub max_token_bytes: usize,
    /// The claim holding the user id.
    pub subject_claim: String,
    /// Dotted path of the claim holding the user's roles (`realm_access.roles`).
    pub roles_claim: String,
    /// External role → internal role (`admin` → `operator`); roles not listed are dropped.
    pub role_map: BTreeMap<String, String>,
    /// Path prefixes callable without a token.
    pub public_methods: Vec<String>,
    /// Verified tokens remembered (by their SHA-256), and for at most how long.
    pub cache_entries: usize,
    pub cache_ttl_secs: u64,
    /// JWKS are fetched again this often, and at most once per `jwks_min_refresh_secs` when a
    /// token names an unknown key (so garbage `kid`s cannot make the gateway hammer the
    /// identity provider).
    pub jwks_refresh_secs: u64,
    pub jwks_min_refresh_secs: u64,
    /// Development only: `POST /auth/dev/sign-in` issues a user token for a name.
    pub dev_sign_in: DevSignInConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
            leeway_secs: 30,
            max_token_bytes: 8 * 1024,
            subject_claim: "sub".into(),
            roles_claim: "roles".into(),
            role_map: BTreeMap::from([("operator".into(), "operator".into())]),
            public_methods: vec![
                "/grpc.health.v1.Health/".into(),
                "/grpc.reflection.v1.ServerReflection/".into(),
                "/grpc.reflection.v1alpha.ServerReflection/".into(),
            ],
            cache_entries: 100_000,
            cache_ttl_secs: 300,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 10,
            dev_sign_in: DevSignInConfig::default(),
        }
    }
}

/// One identity provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Accepted `aud` values; a token must name one of them.
    pub audiences: Vec<String>,
    /// Where its JSON Web Key Set is published.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Public keys configured by hand (development, or providers without JWKS).
    #[serde(default)]
    pub static_keys: Vec<StaticKeyConfig>,
}

/// A public key in a PEM file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKeyConfig {
    /// The `kid` tokens signed by it carry; empty matches tokens without one.
    #[serde(default)]
    pub kid: String,
    /// `RS256`, `ES256` or `EdDSA`.
    pub algorithm: String,
    pub public_key_file: PathBuf,
}

/// The development sign-in endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevSignInConfig {
    pub enabled: bool,
    /// Ed25519 key pair (PEM: PKCS#8 private key, SPKI public key) that signs the tokens;
    /// the public half is trusted as a static key of `issuer`.
    pub private_key_file: Option<PathBuf>,
    pub public_key_file: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
    pub token_ttl_secs: u64,
}

impl Default for DevSignInConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            private_key_file: None,
            public_key_file: None,
            issuer: "codingagent-dev".into(),
            audience: "codingagent".into(),
            token_ttl_secs: 12 * 3600,
        }
    }
}

/// Cross-origin browser access.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`) allowed to call from a browser; none allows
    /// only same-origin pages (the dashboard the gateway itself serves).
    pub allowed_origins: Vec<String>,
}

/// Rate limits (GCRA), kept in Redis so every gateway replica shares them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Method groups, first match wins; a call matching none is not limited.
    pub groups: Vec<LimitGroup>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            groups: vec![LimitGroup {
                name: "default".into(),
                methods: vec![String::new()],
                per_user: Some(Rate { requests: 50, period_secs: 1, burst: 100 }),
                per_ip: Some(Rate { requests: 200, period_secs: 1, burst: 400 }),
            }],
        }
    }
}

/// Limits for the methods whose path starts with one of `methods` (`""` matches all).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitGroup {
    pub name: String,
    pub methods: Vec<String>,
    #[serde(default)]
    pub per_user: Option<Rate>,
    #[serde(default)]
    pub per_ip: Option<Rate>,
}

/// `requests` per `period_secs`, with up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub requests: u64,
    pub period_secs: u64,
    pub burst: u64,
}

/// Deadlines, retries, breakers and shedding.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Deadline of a unary call that sets none, and the most any call may ask for.
    pub default_deadline_ms: u64,
    pub max_deadline_ms: u64,
    /// A server stream is ended after this long; clients resume from their last sequence.
    pub max_stream_secs: u64,
    /// Attempts of a call whose method is marked idempotent (1 = no retries).
    pub retry_max_attempts: u32,
    /// First backoff; each retry doubles it, with full jitter.
    pub retry_backoff_ms: u64,
    /// Retries may add at most this percentage of calls, beyond `retry_min_per_sec`.
    pub retry_budget_percent: f64,
    pub retry_min_per_sec: f64,
    /// Consecutive failures that open an endpoint's breaker, and how long it stays open
    /// before one probe call may try it.
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            default_deadline_ms: 30_000,
            max_deadline_ms: 300_000,
            max_stream_secs: 3_600,
            retry_max_attempts: 3,
            retry_backoff_ms: 25,
            retry_budget_percent: 20.0,
            retry_min_per_sec: 10.0,
            breaker_failures: 5,
            breaker_open_ms: 5_000,
        }
    }
}

/// Limits that keep one client from holding the gateway's resources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open client connections; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Largest request head (HTTP/1.1) and header list (HTTP/2).
    pub max_header_bytes: usize,
    /// Time a client has to send a request head.
    pub header_read_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_connections: 20_000, max_header_bytes: 16 * 1024, header_read_timeout_ms: 10_000 }
    }
}

/// The algorithms the gateway can ever accept; HS* is absent on purpose (a public key
/// misused as an HMAC secret must never verify).
pub const SAFE_ALGORITHMS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

impl ServiceConfig for Config {
    const ENV_NAME: &'static str = "GATEWAY";

    fn common(&self) -> Common<'_> {
        Common::service(&self.server, &self.telemetry, &self.identity).redis(&self.redis)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, backend) in &self.backends {
            if backend.endpoints.is_empty() {
                return Err(ConfigError::invalid(format!("backends.{name}.endpoints"), "must not be empty"));
            }
            for endpoint in &backend.endpoints {
                if !endpoint.starts_with("http://") || endpoint.parse::<http::Uri>().is_err() {
                    return Err(ConfigError::invalid(
                        format!("backends.{name}.endpoints"),
                        format!("`{endpoint}` is not an http://host:port URL"),
                    ));
                }
            }
            positive(&format!("backends.{name}.max_in_flight"), backend.max_in_flight as u64)?;
        }
        validate_services(&self.services, &self.backends)?;
        for (i, route) in self.http_routes.iter().enumerate() {
            if !route.prefix.starts_with('/') || route.prefix.len() < 2 {
                return Err(ConfigError::invalid(
                    format!("http_routes[{i}].prefix"),
                    "must start with / and name a path",
                ));
            }
            if !self.backends.contains_key(&route.backend) {
                return Err(ConfigError::invalid(format!("http_routes[{i}].backend"), "names no backend"));
            }
        }
        self.validate_auth()?;
        for (i, group) in self.rate_limits.groups.iter().enumerate() {
            for rate in [group.per_user, group.per_ip].into_iter().flatten() {
                if rate.requests == 0 || rate.period_secs == 0 || rate.burst == 0 {
                    return Err(ConfigError::invalid(
                        format!("rate_limits.groups[{i}]"),
                        "requests, period_secs and burst must be greater than zero",
                    ));
                }
            }
        }
        let r = &self.resilience;
        positive("resilience.default_deadline_ms", r.default_deadline_ms)?;
        positive("resilience.retry_max_attempts", u64::from(r.retry_max_attempts))?;
        positive("resilience.breaker_failures", u64::from(r.breaker_failures))?;
        positive("resilience.max_stream_secs", r.max_stream_secs)?;
        if r.max_deadline_ms < r.default_deadline_ms {
            return Err(ConfigError::invalid(
                "resilience.max_deadline_ms",
                "must be at least default_deadline_ms",
            ));
        }
        positive("limits.max_connections", self.limits.max_connections as u64)?;
        if self.limits.max_header_bytes < 8 * 1024 {
            // hyper cannot read HTTP/1.1 heads into a smaller buffer.
            return Err(ConfigError::invalid("limits.max_header_bytes", "must be at least 8192"));
        }
        positive("reload_interval_ms", self.reload_interval_ms)?;
        if self.identity.environment == Environment::Production {
            if self.auth.dev_sign_in.enabled {
                return Err(ConfigError::invalid(
                    "auth.dev_sign_in.enabled",
                    "issues tokens to anyone who asks, which production refuses",
                ));
            }
            if self.debug_headers {
                return Err(ConfigError::invalid(
                    "debug_headers",
                    "exposes the topology, which production refuses",
                ));
            }
            for (i, issuer) in self.auth.issuers.iter().enumerate() {
                for (k, key) in issuer.static_keys.iter().enumerate() {
                    if key.public_key_file.ends_with(crate::auth::DEV_PUBLIC_KEY_FILE) {
                        return Err(ConfigError::invalid(
                            format!("auth.issuers[{i}].static_keys[{k}]"),
                            "is the public development key, which production refuses",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        for alg in &auth.algorithms {
            if !SAFE_ALGORITHMS.contains(&alg.as_str()) {
                return Err(ConfigError::invalid(
                    "auth.algorithms",
                    format!("`{alg}` is not one of RS256, ES256, EdDSA"),
                ));
            }
        }
        for (i, issuer) in auth.issuers.iter().enumerate() {
            if issuer.issuer.is_empty() {
                return Err(ConfigError::invalid(format!("auth.issuers[{i}].issuer"), "must not be empty"));
            }
            if issuer.audiences.is_empty() {
                return Err(ConfigError::invalid(
                    format!("auth.issuers[{i}].audiences"),
                    "must name at least one",
                ));
            }
            if issuer.jwks_url.is_none() && issuer.static_keys.is_empty() {
                return Err(ConfigError::invalid(
                    format!("auth.issuers[{i}]"),
                    "needs a jwks_url or at least one static key",
                ));
            }
            for (k, key) in issuer.static_keys.iter().enumerate() {
                if !SAFE_ALGORITHMS.contains(&key.algorithm.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("auth.issuers[{i}].static_keys[{k}].algorithm"),
                        "must be RS256, ES256 or EdDSA",
                    ));
                }
                if !key.public_key_file.is_file() {
                    return Err(ConfigError::invalid(
                        format!("auth.issuers[{i}].static_keys[{k}].public_key_file"),
                        format!("{} is not a readable file", key.public_key_file.display()),
                    ));
                }
            }
        }
        if auth.dev_sign_in.enabled {
            let files = [
                ("private_key_file", &auth.dev_sign_in.private_key_file),
                ("public_key_file", &auth.dev_sign_in.public_key_file),
            ];
            for (key, file) in files {
                if file.as_ref().is_none_or(|f| !f.is_file()) {
                    return Err(ConfigError::invalid(
                        format!("auth.dev_sign_in.{key}"),
                        "must name a readable PEM file when dev sign-in is enabled",
                    ));
                }
            }
        }
        positive("auth.max_token_bytes", auth.max_token_bytes as u64)?;
        positive("auth.cache_entries", auth.cache_entries as u64)?;
        if auth.leeway_secs > codingagent_kernel::config::MAX_LEEWAY_SECS {
            return Err(ConfigError::invalid("auth.leeway_secs", "must be at most 60 seconds"));
        }
        Ok(())
    }
}

/// The checks on `[services]`, also run on every reload so a bad edit is refused whole.
pub(crate) fn validate_services(
    services: &BTreeMap<String, ServiceRoute>,
    backends: &BTreeMap<String, BackendConfig>,
) -> Result<(), ConfigError> {
    for (package, route) in services {
        if !backends.contains_key(&route.backend) {
            return Err(ConfigError::invalid(format!("services.{package}.backend"), "names no backend"));
        }
        if let Some(alternate) = &route.alternate
            && !backends.contains_key(alternate)
        {
            return Err(ConfigError::invalid(format!("services.{package}.alternate"), "names no backend"));
        }
        if !(0.0..=100.0).contains(&route.alternate_percent) {
            return Err(ConfigError::invalid(
                format!("services.{package}.alternate_percent"),
                "must be within 0–100",
            ));
        }
        if (route.use_legacy || route.alternate_percent > 0.0) && route.alternate.is_none() {
            return Err(ConfigError::invalid(
                format!("services.{package}.alternate"),
                "is required by use_legacy and alternate_percent",
            ));
        }
    }
    Ok(())
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    Ok(())
}
