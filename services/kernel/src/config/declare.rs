//! [`service_config!`](crate::service_config): how a service declares its `Config`, so the
//! shared sections, their defaults and the [`ServiceConfig`](super::ServiceConfig) plumbing
//! are written once instead of in every service.

/// Declares a service's `Config`: the shared sections (`server` on the given default port,
/// `telemetry`, `database`, `redis`, `kafka`, `identity`) followed by the service's own
/// fields, each with its default, as one `#[serde(default, deny_unknown_fields)]` struct;
/// implements `Default` and [`ServiceConfig`](crate::config::ServiceConfig), whose `validate`
/// calls the service's own `fn check(&self) -> Result<(), ConfigError>`.
///
/// ```ignore
/// codingagent_kernel::service_config! {
///     /// The chat service's settings.
///     pub struct Config("CHAT", port 50_055) {
///         /// Days a deleted conversation is kept.
///         pub retention_days: u32 = 30,
///     }
/// }
/// impl Config {
///     fn check(&self) -> Result<(), ConfigError> { Ok(()) }
/// }
/// ```
#[macro_export]
macro_rules! service_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident ($env:literal, port $port:literal) {
            $( $(#[$field_meta:meta])* pub $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            pub server: $crate::config::ServerConfig,
            pub telemetry: $crate::config::TelemetryConfig,
            pub database: $crate::config::DatabaseConfig,
            pub redis: $crate::config::RedisConfig,
            pub kafka: $crate::config::KafkaConfig,
            pub identity: $crate::config::IdentityConfig,
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                Self {
                    server: $crate::config::ServerConfig {
                        listen_addr: ::std::net::SocketAddr::from(([127, 0, 0, 1], $port)),
                        ..::std::default::Default::default()
                    },
                    telemetry: ::std::default::Default::default(),
                    database: ::std::default::Default::default(),
                    redis: ::std::default::Default::default(),
                    kafka: ::std::default::Default::default(),
                    identity: ::std::default::Default::default(),
                    $( $field: $default, )*
                }
            }
        }

        impl $crate::config::ServiceConfig for $name {
            const ENV_NAME: &'static str = $env;

            fn common(&self) -> $crate::config::Common<'_> {
                $crate::config::Common::service(&self.server, &self.telemetry, &self.identity)
                    .database(&self.database)
                    .redis(&self.redis)
                    .kafka(&self.kafka)
            }

            fn validate(&self) -> ::std::result::Result<(), $crate::config::ConfigError> {
                self.check()
            }
        }
    };
}
