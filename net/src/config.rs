//! Node configuration: built-in defaults, then a TOML file (`--config`), then `LIVEDASH_*`
//! environment variables, then command-line flags; each layer overrides the one before.
//! Unknown keys are refused by name in every layer.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

use livedash_engine::limits::{DEFAULT_HISTORY_LEN, DEFAULT_MAX_SKEW_MS};

/// Everything the node reads at start. Field docs are the user docs of the TOML keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on. Every shard binds it (SO_REUSEPORT). Port 0 picks
    /// a free port, printed at start.
    pub listen: SocketAddr,
    /// Directory for dashboards (created if missing).
    pub data_dir: PathBuf,
    /// Number of shards, one pinned executor each. 0 means one per available core.
    pub shards: usize,
    /// When set, `POST /ingest` needs `Authorization: Bearer <ingest_token>`.
    pub ingest_token: Option<String>,
    /// When set, creating, changing and deleting dashboards needs this bearer token.
    pub admin_token: Option<String>,
    /// When set, reads (`GET`) need this token (or the admin token). `/healthz` stays open.
    pub read_token: Option<String>,
    /// Largest request body, in bytes; larger requests get 413.
    pub max_body_bytes: usize,
    /// Time allowed for a request's headers to arrive, in milliseconds.
    pub header_timeout_ms: u64,
    /// Time allowed for a request's body to arrive, in milliseconds.
    pub body_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this many milliseconds.
    pub idle_timeout_ms: u64,
    /// Events stamped more than this far ahead of the node clock are rejected.
    pub max_skew_ms: i64,
    /// Recent values kept per widget, for charts drawn when a browser connects.
    pub history_len: usize,
    /// On SIGINT/SIGTERM, open requests get this long to finish, in milliseconds.
    pub drain_timeout_ms: u64,
    /// Origins (`scheme://host[:port]`) allowed to open WebSocket streams. Empty means
    /// only the node's own origin (the `Origin` host equals the `Host` header). Clients
    /// that send no `Origin` (not browsers) are always allowed.
    pub allowed_origins: Vec<String>,
    /// A stream client that cannot take data for this long is closed (1008), in ms.
    pub slow_client_timeout_ms: u64,
    /// Kernel send buffer of each stream socket (`SO_SNDBUF`), in bytes: what a client
    /// that stopped reading can hold of the node's memory before its frames queue (and
    /// are conflated) in the node. Pushes are small, so a small buffer costs nothing.
    pub stream_send_buffer_bytes: usize,
    /// Pings are sent this often on idle streams; a peer silent for two intervals is
    /// dropped. In milliseconds.
    pub ws_ping_interval_ms: u64,
    /// Generate synthetic metrics and a demo dashboard.
    pub demo: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("livedash-data"),
            shards: 0,
            ingest_token: None,
            admin_token: None,
            read_token: None,
            max_body_bytes: 16 * 1024 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
            history_len: DEFAULT_HISTORY_LEN,
            drain_timeout_ms: 10_000,
            allowed_origins: Vec::new(),
            slow_client_timeout_ms: 10_000,
            stream_send_buffer_bytes: 64 * 1024,
            ws_ping_interval_ms: 20_000,
            demo: false,
        }
    }
}

/// livedash: a real-time dashboard engine. Producers POST metric events; the node keeps
/// sliding-window aggregates per widget and serves them over HTTP.
///
/// Settings come from built-in defaults, then the TOML file given with --config, then
/// LIVEDASH_* environment variables, then these flags. Every flag has an environment
/// variable named after it (for example --max-body-bytes and LIVEDASH_MAX_BODY_BYTES) and a
/// TOML key with underscores (max_body_bytes). LIVEDASH_LOG sets the log filter
/// (default "info"; for example "warn" or "livedash_net=debug").
#[derive(Debug, Parser)]
#[command(name = "livedash", version)]
pub struct Cli {
    /// TOML file with settings (keys as the long flags, with underscores)
    #[arg(long, env = "LIVEDASH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "LIVEDASH_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Directory for dashboards [default: ./livedash-data]
    #[arg(long, env = "LIVEDASH_DATA_DIR", value_name = "PATH")]
    pub data_dir: Option<PathBuf>,
    /// Shards (pinned executors); 0 = one per available core [default: 0]
    #[arg(long, env = "LIVEDASH_SHARDS", value_name = "N")]
    pub shards: Option<usize>,
    /// Bearer token required by POST /ingest [default: none]
    #[arg(long, env = "LIVEDASH_INGEST_TOKEN", value_name = "TOKEN")]
    pub ingest_token: Option<String>,
    /// Bearer token required to create, change or delete dashboards [default: none]
    #[arg(long, env = "LIVEDASH_ADMIN_TOKEN", value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// Bearer token required for reads [default: none]
    #[arg(long, env = "LIVEDASH_READ_TOKEN", value_name = "TOKEN")]
    pub read_token: Option<String>,
    /// Largest request body in bytes; larger requests get 413 [default: 16777216]
    #[arg(long, env = "LIVEDASH_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Time for a request's headers to arrive, ms [default: 10000]
    #[arg(long, env = "LIVEDASH_HEADER_TIMEOUT_MS", value_name = "MS")]
    pub header_timeout_ms: Option<u64>,
    /// Time for a request's body to arrive, ms [default: 30000]
    #[arg(long, env = "LIVEDASH_BODY_TIMEOUT_MS", value_name = "MS")]
    pub body_timeout_ms: Option<u64>,
    /// Idle keep-alive connections are closed after this, ms [default: 60000]
    #[arg(long, env = "LIVEDASH_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Events further than this ahead of the node clock are rejected, ms [default: 5000]
    #[arg(long, env = "LIVEDASH_MAX_SKEW_MS", value_name = "MS")]
    pub max_skew_ms: Option<i64>,
    /// Recent values kept per widget for charts [default: 300]
    #[arg(long, env = "LIVEDASH_HISTORY_LEN", value_name = "N")]
    pub history_len: Option<usize>,
    /// On SIGINT/SIGTERM, open requests get this long to finish, ms [default: 10000]
    #[arg(long, env = "LIVEDASH_DRAIN_TIMEOUT_MS", value_name = "MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Origins allowed to open streams, comma-separated [default: the node's own]
    #[arg(
        long,
        env = "LIVEDASH_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// A stream client that cannot take data this long is closed, ms [default: 10000]
    #[arg(long, env = "LIVEDASH_SLOW_CLIENT_TIMEOUT_MS", value_name = "MS")]
    pub slow_client_timeout_ms: Option<u64>,
    /// Kernel send buffer of each stream socket, bytes [default: 65536]
    #[arg(long, env = "LIVEDASH_STREAM_SEND_BUFFER_BYTES", value_name = "BYTES")]
    pub stream_send_buffer_bytes: Option<usize>,
    /// Ping interval of idle streams, ms [default: 20000]
    #[arg(long, env = "LIVEDASH_WS_PING_INTERVAL_MS", value_name = "MS")]
    pub ws_ping_interval_ms: Option<u64>,
    /// Generate synthetic metrics and a "livedash demo" dashboard
    #[arg(long, env = "LIVEDASH_DEMO")]
    pub demo: bool,
}

/// Environment variables the node understands; any other `LIVEDASH_*` is an error.
const KNOWN_ENV: [&str; 20] = [
    "LIVEDASH_ALLOWED_ORIGINS",
    "LIVEDASH_SLOW_CLIENT_TIMEOUT_MS",
    "LIVEDASH_STREAM_SEND_BUFFER_BYTES",
    "LIVEDASH_WS_PING_INTERVAL_MS",
    "LIVEDASH_DEMO",
    "LIVEDASH_LOG",
    "LIVEDASH_CONFIG",
    "LIVEDASH_LISTEN",
    "LIVEDASH_DATA_DIR",
    "LIVEDASH_SHARDS",
    "LIVEDASH_INGEST_TOKEN",
    "LIVEDASH_ADMIN_TOKEN",
    "LIVEDASH_READ_TOKEN",
    "LIVEDASH_MAX_BODY_BYTES",
    "LIVEDASH_HEADER_TIMEOUT_MS",
    "LIVEDASH_BODY_TIMEOUT_MS",
    "LIVEDASH_IDLE_TIMEOUT_MS",
    "LIVEDASH_MAX_SKEW_MS",
    "LIVEDASH_HISTORY_LEN",
    "LIVEDASH_DRAIN_TIMEOUT_MS",
];

/// A configuration the node refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown environment variable {0}; known: {known}", known = KNOWN_ENV.join(", "))]
    UnknownEnv(String),
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Resolves the layers for `cli` (already holding flags and environment values).
    pub fn resolve(cli: Cli) -> Result<Self, ConfigError> {
        Self::check_env(std::env::vars().map(|(k, _)| k))?;
        let mut config = match &cli.config {
            Some(path) => Self::from_toml_file(path)?,
            None => Self::default(),
        };
        macro_rules! layer {
            ($($field:ident),*) => { $( if let Some(v) = cli.$field { config.$field = v; } )* };
        }
        layer!(
            listen,
            data_dir,
            shards,
            max_body_bytes,
            header_timeout_ms,
            body_timeout_ms,
            idle_timeout_ms,
            max_skew_ms,
            history_len,
            drain_timeout_ms,
            allowed_origins,
            slow_client_timeout_ms,
            stream_send_buffer_bytes,
            ws_ping_interval_ms
        );
        config.demo |= cli.demo;
        for (slot, flag) in [
            (&mut config.ingest_token, cli.ingest_token),
            (&mut config.admin_token, cli.admin_token),
            (&mut config.read_token, cli.read_token),
        ] {
            if flag.is_some() {
                *slot = flag;
            }
        }
        config.check()?;
        Ok(config)
    }

    /// Parses a TOML document; unknown keys are named in the error.
    pub fn from_toml(text: &str, path: &std::path::Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    fn check_env(names: impl Iterator<Item = String>) -> Result<(), ConfigError> {
        for name in names {
            if name.starts_with("LIVEDASH_") && !KNOWN_ENV.contains(&name.as_str()) {
                return Err(ConfigError::UnknownEnv(name));
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if self.max_body_bytes == 0 {
            return invalid("max_body_bytes", "must be at least 1");
        }
        if self.stream_send_buffer_bytes < 4096 {
            return invalid("stream_send_buffer_bytes", "must be at least 4096");
        }
        for (key, ms) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("slow_client_timeout_ms", self.slow_client_timeout_ms),
            ("ws_ping_interval_ms", self.ws_ping_interval_ms),
        ] {
            if ms == 0 {
                return invalid(key, "must be at least 1 ms");
            }
        }
        if self.max_skew_ms < 0 {
            return invalid("max_skew_ms", "must not be negative");
        }
        for (key, token) in [
            ("ingest_token", &self.ingest_token),
            ("admin_token", &self.admin_token),
            ("read_token", &self.read_token),
        ] {
            if token
                .as_deref()
                .is_some_and(|t| t.is_empty() || t.contains(char::is_whitespace))
            {
                return invalid(key, "must be non-empty and contain no whitespace");
            }
        }
        Ok(())
    }

    /// Shards to start: the configured number, or one per available core.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_toml_key_is_named() {
        let err = Config::from_toml(
            "listen = \"127.0.0.1:1\"\nmax_bodybytes = 3\n",
            "x.toml".as_ref(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_bodybytes"), "{err}");
    }

    #[test]
    fn toml_overrides_defaults() {
        let c =
            Config::from_toml("shards = 3\nadmin_token = \"s3cret\"\n", "x.toml".as_ref()).unwrap();
        assert_eq!(c.shards, 3);
        assert_eq!(c.admin_token.as_deref(), Some("s3cret"));
        assert_eq!(c.listen, Config::default().listen);
    }

    #[test]
    fn unknown_env_is_named() {
        let err = Config::check_env(["PATH".into(), "LIVEDASH_SHARD".into()].into_iter())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown environment variable LIVEDASH_SHARD"),
            "{err}"
        );
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("livedash-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "shards = 3\nmax_body_bytes = 10\n").unwrap();
        let cli = Cli::parse_from([
            "livedash",
            "--config",
            file.to_str().unwrap(),
            "--shards",
            "2",
        ]);
        let c = Config::resolve(cli).unwrap();
        assert_eq!((c.shards, c.max_body_bytes), (2, 10));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        for (c, key) in [
            (
                Config {
                    max_body_bytes: 0,
                    ..Config::default()
                },
                "max_body_bytes",
            ),
            (
                Config {
                    admin_token: Some(String::new()),
                    ..Config::default()
                },
                "admin_token",
            ),
            (
                Config {
                    stream_send_buffer_bytes: 100,
                    ..Config::default()
                },
                "stream_send_buffer_bytes",
            ),
        ] {
            let err = c.check().unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }
}
