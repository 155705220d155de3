//! Node configuration. Every setting is declared once, as a field of `Config`: its doc
//! comment is the user doc (`--help`), its `#[arg]` names the flag, the `LIVEDASH_*`
//! variable and the default; the TOML key is the field name. Layers, each overriding the
//! one before: built-in defaults, the TOML file (`--config`), environment variables, flags.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use livedash_engine::limits::{DEFAULT_HISTORY_LEN, DEFAULT_MAX_SKEW_MS};

/// livedash: a real-time dashboard engine. Producers POST metric events; the node keeps
/// sliding-window aggregates per widget and pushes them to browsers over WebSocket.
///
/// Settings come from built-in defaults, then the TOML file given with --config, then
/// LIVEDASH_* environment variables, then these flags. Every flag has an environment
/// variable named after it (--max-body-bytes and LIVEDASH_MAX_BODY_BYTES) and a TOML key
/// with underscores (max_body_bytes). LIVEDASH_LOG sets the log filter (default "info";
/// for example "warn" or "livedash_net=debug").
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "livedash", version)]
pub struct Config {
    /// TOML file with settings (keys as the long flags, with underscores).
    #[arg(long, env = "LIVEDASH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address the HTTP API listens on. Port 0 picks a free port, printed at start.
    #[arg(
        long,
        env = "LIVEDASH_LISTEN",
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Directory for dashboards (created if missing).
    #[arg(
        long,
        env = "LIVEDASH_DATA_DIR",
        value_name = "PATH",
        default_value = "livedash-data"
    )]
    pub data_dir: PathBuf,
    /// Shards, one pinned executor each (at most 64); 0 means one per available core.
    #[arg(long, env = "LIVEDASH_SHARDS", value_name = "N", default_value_t = 0)]
    pub shards: usize,
    /// Bearer token required by POST /ingest [default: none].
    #[arg(long, env = "LIVEDASH_INGEST_TOKEN", value_name = "TOKEN")]
    pub ingest_token: Option<String>,
    /// Bearer token required to create, change or delete dashboards [default: none].
    #[arg(long, env = "LIVEDASH_ADMIN_TOKEN", value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// Bearer token required for reads (the admin token also reads; /healthz stays open)
    /// [default: none].
    #[arg(long, env = "LIVEDASH_READ_TOKEN", value_name = "TOKEN")]
    pub read_token: Option<String>,
    /// Largest request body, in bytes; larger requests get 413.
    #[arg(long, env = "LIVEDASH_MAX_BODY_BYTES", value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time allowed for a request's headers to arrive, in milliseconds.
    #[arg(
        long,
        env = "LIVEDASH_HEADER_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 10_000
    )]
    pub header_timeout_ms: u64,
    /// Time allowed for a request's body to arrive, in milliseconds.
    #[arg(
        long,
        env = "LIVEDASH_BODY_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 30_000
    )]
    pub body_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this many milliseconds.
    #[arg(
        long,
        env = "LIVEDASH_IDLE_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 60_000
    )]
    pub idle_timeout_ms: u64,
    /// Events stamped more than this far ahead of the node clock are rejected, in ms.
    #[arg(long, env = "LIVEDASH_MAX_SKEW_MS", value_name = "MS", default_value_t = DEFAULT_MAX_SKEW_MS)]
    pub max_skew_ms: i64,
    /// Recent values kept per widget, for charts drawn when a browser connects.
    #[arg(long, env = "LIVEDASH_HISTORY_LEN", value_name = "N", default_value_t = DEFAULT_HISTORY_LEN)]
    pub history_len: usize,
    /// Give each dashboard a stable tick phase within its refresh interval (from its id),
    /// so frames to different dashboards leave at different instants; `false` refreshes
    /// every widget on multiples of its interval.
    #[arg(long, env = "LIVEDASH_SPREAD_TICKS", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub spread_ticks: bool,
    /// On SIGINT/SIGTERM, open requests get this long to finish, in milliseconds.
    #[arg(
        long,
        env = "LIVEDASH_DRAIN_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 10_000
    )]
    pub drain_timeout_ms: u64,
    /// Budgets: what one client's input can make the node hold.
    #[command(flatten)]
    pub budgets: Budgets,
    /// Host names (comma-separated, without ports) the node answers for, in the `Host`
    /// header of requests and streams; others get 403, which stops DNS rebinding. `*`
    /// answers for any. Empty means the listen address, `localhost`, `127.0.0.1`, `::1`
    /// and the host of `advertise_url`. Clients that send no `Host` are allowed.
    #[arg(
        long,
        env = "LIVEDASH_ALLOWED_HOSTS",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Origins (scheme://host[:port], comma-separated) allowed to make requests and open
    /// streams from a browser. Empty means only the node's own origin (the Origin host
    /// equals the Host header). Clients that send no Origin (not browsers) are allowed.
    #[arg(
        long,
        env = "LIVEDASH_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// A stream client that cannot take data for this long is closed (1008), in ms.
    #[arg(
        long,
        env = "LIVEDASH_SLOW_CLIENT_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 10_000
    )]
    pub slow_client_timeout_ms: u64,
    /// Kernel send buffer of each stream socket (SO_SNDBUF), in bytes: what a client that
    /// stopped reading can hold of the node's memory before its frames queue (and are
    /// conflated) in the node. Pushes are small, so a small buffer costs nothing.
    #[arg(long, env = "LIVEDASH_STREAM_SEND_BUFFER_BYTES", value_name = "BYTES", default_value_t = 64 * 1024)]
    pub stream_send_buffer_bytes: usize,
    /// Pings are sent this often on idle streams; a peer silent for two intervals is
    /// dropped. In milliseconds.
    #[arg(
        long,
        env = "LIVEDASH_WS_PING_INTERVAL_MS",
        value_name = "MS",
        default_value_t = 20_000
    )]
    pub ws_ping_interval_ms: u64,
    /// Deadline of a call between shards, in milliseconds (an edit's call waits this
    /// times the calls it makes in turn): a shard that does not answer in time makes the
    /// request fail with 504 (it may have been applied) or 503 (it never arrived), or the
    /// stream close with 1011, instead of hanging.
    #[arg(
        long,
        env = "LIVEDASH_CALL_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 10_000
    )]
    pub call_timeout_ms: u64,
    /// Generate synthetic metrics and a "livedash demo" dashboard (the variable takes
    /// true/false, 1/0, yes/no or on/off).
    #[arg(long, env = "LIVEDASH_DEMO", value_parser = clap::builder::BoolishValueParser::new())]
    pub demo: bool,
    /// Log every HTTP request at info level (target `livedash::request`): method, path,
    /// status, response bytes and time taken; WebSocket upgrades too (the variable takes
    /// true/false, 1/0, yes/no or on/off).
    #[arg(
        long,
        env = "LIVEDASH_REQUEST_LOG",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub request_log: bool,
    /// Kafka brokers, `HOST:PORT[,HOST:PORT]`. Setting them turns on cluster mode: ingest
    /// writes to the topic and every shard consumes the partitions it owns [default: none,
    /// standalone].
    #[arg(long, env = "LIVEDASH_KAFKA_BROKERS", value_name = "HOST:PORT,...")]
    pub kafka_brokers: Option<String>,
    /// Kafka topic of the events (cluster mode).
    #[arg(
        long,
        env = "LIVEDASH_KAFKA_TOPIC",
        value_name = "NAME",
        default_value = "livedash.events"
    )]
    pub kafka_topic: String,
    /// Kafka consumer group of the nodes (cluster mode).
    #[arg(
        long,
        env = "LIVEDASH_KAFKA_GROUP",
        value_name = "NAME",
        default_value = "livedash"
    )]
    pub kafka_group: String,
    /// Partitions of the topic when the node creates it (it does when the topic is
    /// missing; an existing topic keeps its own).
    #[arg(
        long,
        env = "LIVEDASH_KAFKA_PARTITIONS",
        value_name = "N",
        default_value_t = 12
    )]
    pub kafka_partitions: u32,
    /// Replication factor of the topic when the node creates it.
    #[arg(
        long,
        env = "LIVEDASH_KAFKA_REPLICATION",
        value_name = "N",
        default_value_t = 1
    )]
    pub kafka_replication: u32,
    /// How long an ingest request waits for the brokers to acknowledge its write, in
    /// milliseconds; past it the request gets 503 and the write is abandoned.
    #[arg(
        long,
        env = "LIVEDASH_KAFKA_ACK_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 5_000
    )]
    pub kafka_ack_timeout_ms: u64,
    /// Redis of the state mirror, `redis://HOST:PORT[/DB]`. In cluster mode each shard
    /// stores its partitions' windows there with the offset they reflect, so a partition
    /// that moves to another node, or a node that restarts, goes on with exact values;
    /// standalone, ingest answers once the events are stored, and a restart loses none
    /// [default: none: windows live in memory].
    #[arg(long, env = "LIVEDASH_REDIS", value_name = "URL")]
    pub redis: Option<String>,
    /// How often each shard writes its changed windows to the state mirror, in ms.
    #[arg(
        long,
        env = "LIVEDASH_MIRROR_INTERVAL_MS",
        value_name = "MS",
        default_value_t = 100
    )]
    pub mirror_interval_ms: u64,
    /// Where browsers reach this node, `http[s]://HOST:PORT` (cluster mode). Every node
    /// lists the live nodes' URLs in its snapshot frames, and a browser whose node dies
    /// reconnects to another of them; streams from these origins are allowed on every
    /// node [default: http:// and the listen address].
    #[arg(long, env = "LIVEDASH_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,
    /// Serve `GET /metrics` (Prometheus text format) and keep its latency histograms;
    /// `false` answers 404 there and keeps only the counters of `/stats`.
    #[arg(long, env = "LIVEDASH_METRICS", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub metrics: bool,
    /// Keep a "livedash node" dashboard fed once a second from the node's own counters
    /// (events/s, rejected/s, push delay and end-to-end p99, open streams, Kafka lag).
    #[arg(long, env = "LIVEDASH_SELF_DASHBOARD", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub self_dashboard: bool,
    /// The end-to-end alert fires when the 95th percentile of event time to frame
    /// written, over the alert window, is above this many milliseconds.
    #[arg(
        long,
        env = "LIVEDASH_ALERT_E2E_P95_MS",
        value_name = "MS",
        default_value_t = 2_000
    )]
    pub alert_e2e_p95_ms: u64,
    /// The window the alerts look at, in seconds.
    #[arg(
        long,
        env = "LIVEDASH_ALERT_WINDOW_SECONDS",
        value_name = "S",
        default_value_t = 60
    )]
    pub alert_window_seconds: u64,
}

/// Environment variables read outside `Config` (by the binary's log set-up).
pub const OTHER_ENV: &[&str] = &["LIVEDASH_LOG", "LIVEDASH_LOG_FORMAT"];

/// A configuration the node refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or variable clap could not read (also `--help` and `--version`, which are
    /// not errors: `exit` prints them).
    #[error("{}", first_line(.0))]
    Args(#[from] clap::Error),
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// A configuration, and warnings about what it ignored.
#[derive(Debug)]
pub struct Resolved {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// The closest of `known` to `name`, if it is close enough to be a likely typo.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

impl Config {
    /// Every `LIVEDASH_*` variable the node reads.
    pub fn known_env() -> Vec<String> {
        Self::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .chain(OTHER_ENV.iter().map(|s| s.to_string()))
            .collect()
    }

    /// Every TOML key: the settings other than `config` itself.
    pub fn toml_keys() -> Vec<String> {
        Self::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| id != "config" && id != "help" && id != "version")
            .collect()
    }

    /// The built-in defaults, untouched by the environment.
    pub fn defaults() -> Result<Self, ConfigError> {
        let command = Self::command().mut_args(|a| a.env(None::<&str>));
        let matches = command.try_get_matches_from(["livedash"])?;
        Ok(Self::from_arg_matches(&matches)?)
    }

    /// Resolves the layers from the process's arguments and environment.
    pub fn resolve(
        args: impl IntoIterator<Item = OsString>,
        env: impl Iterator<Item = String>,
    ) -> Result<Resolved, ConfigError> {
        let known = Self::known_env();
        let warnings = env
            .filter(|name| name.starts_with("LIVEDASH_") && !known.contains(name))
            .map(
                |name| match closest(&name, known.iter().map(String::as_str)) {
                    Some(near) => format!(
                        "unknown environment variable {name} ignored (did you mean {near}?); rename it to {near} or unset it"
                    ),
                    None => format!("unknown environment variable {name} ignored; unset it, or correct its name (livedash --help lists the variables)"),
                },
            )
            .collect();
        let args: Vec<OsString> = args.into_iter().collect();
        let matches = Self::command().try_get_matches_from(&args)?;
        let mut config = Self::from_arg_matches(&matches)?;
        if let Some(path) = config.config.clone() {
            let file = Self::toml_args(&path)?;
            // The file's settings, checked alone so an error names the file.
            let alone = Self::command().mut_args(|a| a.env(None::<&str>));
            alone
                .try_get_matches_from(
                    std::iter::once(OsString::from("livedash")).chain(file.values().cloned()),
                )
                .map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: first_line(&e),
                })?;
            // Then under the environment and the flags: a file setting counts only where
            // neither gave one.
            let from_file = file
                .into_iter()
                .filter(|(key, _)| !given(&matches, key))
                .map(|(_, arg)| arg);
            let mut all = vec![args.first().cloned().unwrap_or_else(|| "livedash".into())];
            all.extend(from_file);
            all.extend(args.iter().skip(1).cloned());
            config = Self::from_arg_matches(&Self::command().try_get_matches_from(all)?)?;
        }
        config.check()?;
        Ok(Resolved { config, warnings })
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
        if self.shards > 64 {
            return invalid("shards", "must be at most 64");
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
            ("call_timeout_ms", self.call_timeout_ms),
            ("kafka_ack_timeout_ms", self.kafka_ack_timeout_ms),
            ("mirror_interval_ms", self.mirror_interval_ms),
            ("alert_e2e_p95_ms", self.alert_e2e_p95_ms),
            (
                "alert_window_seconds",
                self.alert_window_seconds.saturating_mul(1000),
            ),
        ] {
            if ms == 0 {
                return invalid(key, "must be at least 1 ms");
            }
        }
        self.budgets.check()?;
        if self.max_skew_ms < 0 {
            return invalid("max_skew_ms", "must not be negative");
        }
        if self
            .kafka_brokers
            .as_deref()
            .is_some_and(|b| b.trim().is_empty())
        {
            return invalid("kafka_brokers", "must name at least one HOST:PORT");
        }
        if let Some(url) = &self.redis
            && !url.starts_with("redis://")
        {
            return invalid("redis", "must be a redis://HOST:PORT URL");
        }
        if let Some(url) = &self.advertise_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("advertise_url", "must be an http:// or https:// URL");
        }
        if self.kafka_topic.trim().is_empty() || self.kafka_group.trim().is_empty() {
            return invalid("kafka_topic", "the topic and the group must not be empty");
        }
        if self.kafka_partitions == 0 || self.kafka_replication == 0 {
            return invalid(
                "kafka_partitions",
                "partitions and replication must be at least 1",
            );
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

    /// Warnings about a node reachable beyond this machine with no token guarding it.
    pub fn exposure_warnings(&self) -> Vec<String> {
        if self.listen.ip().is_loopback() {
            return Vec::new();
        }
        let hosts = (self.allowed_hosts.is_empty() && self.listen.ip().is_unspecified())
            .then(|| format!("listening on {} without allowed_hosts: only requests for localhost, 127.0.0.1, ::1 and the advertised host are served; set allowed_hosts to the names clients use", self.listen));
        hosts.into_iter().chain([
            (
                "ingest_token",
                &self.ingest_token,
                "anyone who reaches it can send events",
            ),
            (
                "admin_token",
                &self.admin_token,
                "anyone who reaches it can change and delete dashboards",
            ),
            (
                "read_token",
                &self.read_token,
                "anyone who reaches it can read dashboards and values",
            ),
        ]
        .into_iter()
        .filter(|(_, token, _)| token.is_none())
        .map(|(key, _, what)| format!("listening on {} without {key}: {what}; set {key}, or listen on a loopback address with --listen", self.listen)))
        .collect()
    }

    /// The Kafka settings, in cluster mode.
    pub fn kafka(&self) -> Option<livedash_replication::kafka::KafkaSettings> {
        Some(livedash_replication::kafka::KafkaSettings {
            brokers: self.kafka_brokers.clone()?,
            topic: self.kafka_topic.clone(),
            group: self.kafka_group.clone(),
            create_partitions: self.kafka_partitions,
            create_replication: self.kafka_replication,
            ack_timeout: std::time::Duration::from_millis(self.kafka_ack_timeout_ms),
        })
    }

    /// Cluster mode: Kafka and Redis both set.
    pub fn clustered(&self) -> bool {
        self.kafka_brokers.is_some() && self.redis.is_some()
    }

    /// Where browsers reach this node: `advertise_url`, else the bound address (with
    /// loopback for an unspecified address, which no browser can reach).
    pub fn advertised(&self, bound: std::net::SocketAddr) -> String {
        if let Some(url) = &self.advertise_url {
            return url.trim_end_matches('/').to_owned();
        }
        let mut addr = bound;
        if addr.ip().is_unspecified() {
            tracing::warn!(
                "listening on all interfaces without --advertise-url: other nodes send browsers to this node's loopback address; set --advertise-url to the URL browsers reach this node at"
            );
            addr.set_ip(match bound {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    }

    /// The state mirror's settings, when there is one.
    pub fn redis(&self) -> Option<livedash_replication::redis::RedisSettings> {
        Some(livedash_replication::redis::RedisSettings {
            url: self.redis.clone()?,
            interval: std::time::Duration::from_millis(self.mirror_interval_ms),
            scope: if self.kafka_brokers.is_some() {
                livedash_replication::redis::Scope::Partition
            } else {
                livedash_replication::redis::Scope::Shard
            },
        })
    }

    /// Shards to start: the configured number, or one per available core (at most 64).
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(64)),
            n => n,
        }
    }
}

/// Whether the environment or the command line set `key`.
fn given(matches: &ArgMatches, key: &str) -> bool {
    matches!(
        matches.value_source(key),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

mod budgets;
mod file;

pub use budgets::Budgets;
#[cfg(test)]
mod tests;
