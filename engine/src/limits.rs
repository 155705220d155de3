//! Every limit the engine enforces, in one place, so the API docs and the checks agree.
//! Changing a value here changes what `validate` accepts; nothing else hard-codes them.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest metric name, in bytes.
pub const MAX_METRIC_NAME_BYTES: usize = 256;
/// Characters allowed in metric names and tag keys besides ASCII letters and digits.
pub const NAME_PUNCTUATION: &str = "_-.:/";
/// Human-readable form of the name character set, used in error messages.
pub const NAME_CHARSET: &str = "ASCII letters, digits and _ - . : /";
/// Refused events an ingest answer lists with their reason (by index); the rest are
/// counted in `rejected_total`.
pub const MAX_LISTED_REJECTIONS: usize = 100;
/// Most tags on one event, and most entries in one widget filter.
pub const MAX_TAGS: usize = 32;
/// Longest tag key, in bytes.
pub const MAX_TAG_KEY_BYTES: usize = 128;
/// Longest tag value, in bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 256;
/// Shortest sliding window, in seconds.
pub const MIN_WINDOW_SECONDS: u64 = 1;
/// Longest sliding window, in seconds (24 h).
pub const MAX_WINDOW_SECONDS: u64 = 86_400;
/// Shortest refresh interval, in seconds.
pub const MIN_REFRESH_SECONDS: f64 = 0.1;
/// Longest refresh interval, in seconds (1 h).
pub const MAX_REFRESH_SECONDS: f64 = 3_600.0;
/// Longest dashboard name, in characters.
pub const MAX_DASHBOARD_NAME_CHARS: usize = 200;
/// Most widgets on one dashboard.
pub const MAX_WIDGETS_PER_DASHBOARD: usize = 200;
/// Largest `display_config` of one widget, serialised, in bytes.
pub const MAX_DISPLAY_CONFIG_BYTES: usize = 16 * 1024;
/// Largest dashboard `layout`, serialised, in bytes.
pub const MAX_LAYOUT_BYTES: usize = 64 * 1024;
/// Most JSON values (objects, arrays and scalars alike) in one widget's `display_config`
/// and in one dashboard's `layout`: held as trees, many small values cost far more
/// memory than their text.
pub const MAX_DISPLAY_CONFIG_VALUES: usize = 512;
pub const MAX_LAYOUT_VALUES: usize = 4_096;
/// Deepest nesting of `display_config` and `layout`.
pub const MAX_JSON_DEPTH: usize = 10;
/// Default allowed clock skew: events further ahead of the shard's clock are rejected.
pub const DEFAULT_MAX_SKEW_MS: i64 = 5_000;
/// Default number of recent values kept per widget for charts drawn on connect.
pub const DEFAULT_HISTORY_LEN: usize = 300;
/// Columns of the dashboard grid: `layout.items` places widgets on it.
pub const LAYOUT_COLUMNS: u64 = 12;
/// Highest row and tallest widget of `layout.items`, in grid rows.
pub const MAX_LAYOUT_ROW: u64 = 10_000;
pub const MAX_LAYOUT_HEIGHT: u64 = 100;
/// Largest magnitude of an event's value: sums of a day's events at any rate stay finite.
pub const MAX_VALUE_MAGNITUDE: f64 = 1e200;
/// Tag values a grouped widget reports by default (`top`), and at most.
pub const DEFAULT_TOP: usize = 10;
pub const MAX_TOP: usize = 50;
/// Default most tag values a grouped query splits its window into; events of further
/// values count in the whole (and `other`) only.
pub const DEFAULT_MAX_GROUP_VALUES: usize = 200;
/// Default most tag values' windows of grouped queries, all queries together, per shard
/// (each costs about what a query's window does).
pub const DEFAULT_MAX_GROUP_WINDOWS: usize = 10_000;
/// Default most buckets a `histogram` widget reports (more are merged evenly).
pub const DEFAULT_DISTRIBUTION_BUCKETS: usize = 40;
/// Most buckets a node may be set to report per `histogram` widget.
pub const MAX_DISTRIBUTION_BUCKETS: usize = 1_000;
/// Most past values kept for grouped and `histogram` widgets (their series and
/// distributions), for charts drawn on connect.
pub const MAX_DETAIL_HISTORY_LEN: usize = 120;
/// Default most buckets each sign of a percentile window's histogram spans: 64 octaves
/// (a ratio of about 1.8e19 between the largest and smallest magnitude) at full
/// resolution, 32 KiB.
pub const DEFAULT_HISTOGRAM_BUCKETS: usize = 4096;

static HISTOGRAM_BUCKETS: AtomicUsize = AtomicUsize::new(DEFAULT_HISTOGRAM_BUCKETS);

/// Sets the bucket budget of histograms made from now on (the node sets it at start).
pub fn set_histogram_buckets(buckets: usize) {
    HISTOGRAM_BUCKETS.store(buckets, Ordering::Relaxed);
}

/// The bucket budget of new histograms.
pub fn histogram_buckets() -> usize {
    HISTOGRAM_BUCKETS.load(Ordering::Relaxed)
}
