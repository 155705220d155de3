//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of every shard's
//! counters and histograms, merged on the shard that took the scrape, plus the alerts,
//! the other nodes (cluster mode) and the process. Metric names start with `livedash_`;
//! per-shard ones carry a `shard` label.

use std::rc::Rc;
use std::time::Instant;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use super::ApiError;
use crate::http::Response;
use crate::service::calls::Alerts;
use crate::service::metrics::Buckets;
use crate::service::stats::{self, ShardStats};
use crate::service::{CATALOGUE_SHARD, Services};

/// The metric families of one scrape, in the order they are written.
#[derive(Debug, Default)]
struct Families(Vec<MetricFamily>);

mod sections;
use sections::{aggregation, cluster, ingest, kafka, mirror, process, push};

/// Label names and values of one sample.
type Labels = Vec<(&'static str, String)>;

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        // An empty family is left out (the format has no way to write one).
        if metrics.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(format!("livedash_{name}"));
        f.set_help(help.to_owned());
        f.set_field_type(kind);
        f.set_metric(metrics);
        self.0.push(f);
    }

    pub(super) fn counter(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        self.scalars(name, help, MetricType::COUNTER, samples, |m, v| {
            let mut c = Counter::default();
            c.set_value(v);
            m.set_counter(c);
        });
    }

    pub(super) fn gauge(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        self.scalars(name, help, MetricType::GAUGE, samples, |m, v| {
            let mut g = Gauge::default();
            g.set_value(v);
            m.set_gauge(g);
        });
    }

    /// A family of one number per sample, set on each metric by `set`.
    fn scalars(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (Labels, f64)>,
        set: impl Fn(&mut Metric, f64),
    ) {
        let metrics = samples
            .into_iter()
            .map(|(labels, v)| {
                let mut m = Metric::from_label(label_pairs(&labels));
                set(&mut m, v);
                m
            })
            .collect();
        self.family(name, help, kind, metrics);
    }

    pub(super) fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, &'a Buckets)>,
    ) {
        let metrics = samples
            .into_iter()
            .map(|(labels, b)| {
                let mut h = Histogram::default();
                h.set_sample_count(b.count());
                h.set_sample_sum(b.sum);
                h.set_bucket(
                    b.cumulative()
                        .map(|(upper, count)| {
                            let mut bucket = Bucket::default();
                            bucket.set_upper_bound(upper);
                            bucket.set_cumulative_count(count);
                            bucket
                        })
                        .collect(),
                );
                let mut m = Metric::from_label(label_pairs(&labels));
                m.set_histogram(h);
                m
            })
            .collect();
        self.family(name, help, MetricType::HISTOGRAM, metrics);
    }
}

fn label_pairs(labels: &Labels) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name((*k).to_owned());
            p.set_value(v.clone());
            p
        })
        .collect()
}

/// `GET /metrics`.
pub async fn handle(svc: &Rc<Services>) -> Result<Response, ApiError> {
    if !svc.config.metrics {
        return Err(ApiError::new(
            404,
            "metrics are off on this node: start it without --metrics false",
        ));
    }
    let started = Instant::now();
    let shards = stats::all_shards(svc, false).await?;
    let alerts = svc.call(CATALOGUE_SHARD, Alerts).await?;
    let building = Instant::now();
    let gathered: u64 = shards.iter().map(|s| s.gather_ns).sum();
    let mut f = Families::default();
    ingest(&mut f, &shards);
    kafka(&mut f, &shards);
    aggregation(&mut f, &shards);
    push(&mut f, &shards);
    mirror(&mut f, &shards);
    if let Some(link) = &svc.cluster {
        cluster(&mut f, link);
    }
    f.gauge(
        "alert",
        "1 while the alert fires; /healthz says why",
        alerts.iter().map(|a| {
            (
                label("alert", a.alert),
                f64::from(u8::from(a.reason.is_some())),
            )
        }),
    );
    process(&mut f);
    f.gauge(
        "shards",
        "shards (executors) of the node",
        [(vec![], shards.len() as f64)],
    );
    f.gauge(
        "build_info",
        "always 1; the version is a label",
        [(label("version", env!("CARGO_PKG_VERSION")), 1.0)],
    );
    let (work, wall) = svc.metrics.last_scrape.get();
    f.gauge(
        "scrape_duration_seconds",
        "the work of the previous scrape taken by this shard: every shard gathering its counters, and this one merging and encoding them",
        [(shard(svc.id), work)],
    );
    f.gauge(
        "scrape_wall_seconds",
        "the previous scrape taken by this shard, from the request to the body ready (waiting for the other shards' answers included)",
        [(shard(svc.id), wall)],
    );
    let mut body = Vec::with_capacity(64 * 1024);
    TextEncoder::new()
        .encode(&f.0, &mut body)
        .map_err(|e| ApiError::new(500, format!("cannot encode the metrics: {e}")))?;
    let work = gathered as f64 / 1e9 + building.elapsed().as_secs_f64();
    svc.metrics
        .last_scrape
        .set((work, started.elapsed().as_secs_f64()));
    Ok(Response::bytes(200, prometheus::TEXT_FORMAT, body))
}

pub(super) fn shard(id: usize) -> Labels {
    vec![("shard", id.to_string())]
}

pub(super) fn label(key: &'static str, value: &str) -> Labels {
    vec![(key, value.to_owned())]
}

pub(super) fn with_shard(s: &ShardStats, key: &'static str, value: &str) -> Labels {
    vec![("shard", s.shard.to_string()), (key, value.to_owned())]
}

/// One sample per shard of `value`.
pub(super) fn each(
    shards: &[ShardStats],
    value: impl Fn(&ShardStats) -> f64,
) -> Vec<(Labels, f64)> {
    shards.iter().map(|s| (shard(s.shard), value(s))).collect()
}

#[cfg(test)]
mod tests {
    /// Every `livedash_*` name the Grafana dashboard and the alerting rules query is one
    /// the node exposes (a histogram's `_bucket`, `_sum` and `_count` included).
    #[test]
    fn the_ops_files_query_only_exposed_metrics() {
        let sources = [
            include_str!("prometheus.rs"),
            include_str!("prometheus/sections.rs"),
        ]
        .concat();
        let files = [
            include_str!("../../ops/grafana-dashboard.json"),
            include_str!("../../ops/livedash-rules.yml"),
        ];
        let mut checked = 0;
        for file in files {
            for (at, _) in file.match_indices("livedash_") {
                let name: String = file[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = name.strip_prefix("livedash_").unwrap_or_default();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| family.strip_suffix(s))
                    .unwrap_or(family);
                assert!(
                    sources.contains(&format!("\"{family}\"")),
                    "{name} is not exposed"
                );
                checked += 1;
            }
        }
        assert!(checked > 30, "only {checked} names found");
    }
}
