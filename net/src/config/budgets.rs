//! The budgets: settings that bound what clients can make the node hold (connections,
//! dashboards, queries, names, buckets, buffered bytes). Each is a flag, a `LIVEDASH_*`
//! variable and a TOML key like any other setting.

use clap::Args;
use livedash_engine::limits::{
    DEFAULT_DISTRIBUTION_BUCKETS, DEFAULT_HISTOGRAM_BUCKETS, DEFAULT_MAX_GROUP_VALUES,
    MAX_DISTRIBUTION_BUCKETS,
};

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Args)]
pub struct Budgets {
    /// Most connections (HTTP and streams) the node holds, shared evenly by its shards; a
    /// connection over it is answered 429 and closed. 0: the open-files limit less 512.
    #[arg(
        long,
        env = "LIVEDASH_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_connections: usize,
    /// Most connections from one source address, shared evenly by the shards; 0: no limit
    /// beyond `max_connections`.
    #[arg(
        long,
        env = "LIVEDASH_MAX_CONNECTIONS_PER_ADDRESS",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_connections_per_address: usize,
    /// Most dashboards the node keeps; creating one more gets 429.
    #[arg(
        long,
        env = "LIVEDASH_MAX_DASHBOARDS",
        value_name = "N",
        default_value_t = 1_000
    )]
    pub max_dashboards: usize,
    /// Most widgets over all dashboards; an edit that would pass it gets 429.
    #[arg(
        long,
        env = "LIVEDASH_MAX_WIDGETS",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub max_widgets: usize,
    /// Most distinct queries (metric, window, tag filter) over all widgets, each of which
    /// keeps a sliding window; an edit that would pass it gets 429. Widgets that differ
    /// only in aggregation, refresh or display share a query.
    #[arg(
        long,
        env = "LIVEDASH_MAX_QUERIES",
        value_name = "N",
        default_value_t = 5_000
    )]
    pub max_queries: usize,
    /// Most metric names each shard remembers for the UI's suggestions
    /// (`/api/metric-names`); past it, the least recently seen are forgotten.
    #[arg(
        long,
        env = "LIVEDASH_MAX_METRIC_NAMES",
        value_name = "N",
        default_value_t = 2_000
    )]
    pub max_metric_names: usize,
    /// Most buckets each sign of a percentile window's histogram spans (64 per octave,
    /// 8 bytes each). Values spread wider keep the largest magnitudes exact and merge
    /// the smallest into the lowest bucket kept, until they leave the window.
    #[arg(long, env = "LIVEDASH_MAX_HISTOGRAM_BUCKETS", value_name = "N", default_value_t = DEFAULT_HISTOGRAM_BUCKETS)]
    pub max_histogram_buckets: usize,
    /// Most tag values the query of a grouped widget (`group_by`) splits its window into,
    /// each a sliding window of its own; events of further values count in the whole
    /// (and `other`) only, and in `/stats` as `group_values_refused`.
    #[arg(long, env = "LIVEDASH_MAX_GROUP_VALUES", value_name = "N", default_value_t = DEFAULT_MAX_GROUP_VALUES)]
    pub max_group_values: usize,
    /// Most tag values' windows of all grouped widgets' queries together, on the node
    /// (shared evenly by its shards): past it, events of new tag values count in the
    /// whole and `other` only, as past `max_group_values`. Each costs about what a
    /// query's window does.
    #[arg(
        long,
        env = "LIVEDASH_MAX_GROUP_WINDOWS",
        value_name = "N",
        default_value_t = 20_000
    )]
    pub max_group_windows: usize,
    /// Most buckets a `histogram` widget reports; more are merged evenly.
    #[arg(long, env = "LIVEDASH_HISTOGRAM_WIDGET_BUCKETS", value_name = "N", default_value_t = DEFAULT_DISTRIBUTION_BUCKETS)]
    pub histogram_widget_buckets: usize,
    /// Bytes read from a stream's client per keep-alive sweep (pongs, pings, a close);
    /// more waits in the kernel for the next sweep.
    #[arg(long, env = "LIVEDASH_STREAM_READ_BYTES", value_name = "BYTES", default_value_t = 64 * 1024)]
    pub stream_read_bytes: usize,
    /// Bytes of stream frames queued in the node for one client that reads slowly; past
    /// it, the queue is dropped and the client is sent the dashboard's current values
    /// once it catches up (as when it lags by frames).
    #[arg(long, env = "LIVEDASH_MAX_QUEUED_BYTES", value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_queued_bytes: usize,
}

impl Budgets {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let at_least = |key: &'static str, value: usize, min: usize| {
            if value < min {
                Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be at least {min}"),
                })
            } else {
                Ok(())
            }
        };
        at_least("max_dashboards", self.max_dashboards, 1)?;
        at_least("max_widgets", self.max_widgets, 1)?;
        at_least("max_queries", self.max_queries, 1)?;
        at_least("max_metric_names", self.max_metric_names, 1)?;
        at_least("max_histogram_buckets", self.max_histogram_buckets, 64)?;
        at_least("max_group_values", self.max_group_values, 1)?;
        at_least("max_group_windows", self.max_group_windows, 1)?;
        at_least("histogram_widget_buckets", self.histogram_widget_buckets, 1)?;
        if self.histogram_widget_buckets > MAX_DISTRIBUTION_BUCKETS {
            return Err(ConfigError::Invalid {
                key: "histogram_widget_buckets",
                reason: format!("must be at most {MAX_DISTRIBUTION_BUCKETS}"),
            });
        }
        at_least("stream_read_bytes", self.stream_read_bytes, 1024)?;
        at_least("max_queued_bytes", self.max_queued_bytes, 64 * 1024)
    }
}
