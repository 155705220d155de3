//! The end of a run: the JSON report (exact field names), a human-readable summary, an
//! SVG plot, and the server's CPU and memory read from /proc.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::stats::{Percentiles, Stats};

/// The `--json` report. What a run did not measure is left out: the producers' part
/// without producers, the streams' part without streams, the server's without its pid.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub duration_s: f64,
    /// Stopped early with Ctrl-C: the figures cover `duration_s`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    pub errors: u64,
    #[serde(flatten)]
    pub producers: Option<ProducerFigures>,
    #[serde(flatten)]
    pub streams: Option<StreamFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_bytes: Option<u64>,
}

/// What the producers measured.
#[derive(Debug, Serialize)]
pub struct ProducerFigures {
    pub target_events_per_s: u64,
    pub achieved_events_per_s: f64,
    pub events_sent: u64,
    pub events_acked: u64,
    /// Acknowledged over the whole run, warm-up included (for checks of exact counts).
    pub events_acked_total: u64,
    pub events_rejected: u64,
    /// From each request's intended start to its answer (open loop).
    pub ingest_latency_ms: Percentiles,
}

/// What the streams measured.
#[derive(Debug, Serialize)]
pub struct StreamFigures {
    pub sockets_target: u64,
    pub sockets_connected: u64,
    pub updates_received: u64,
    /// Per event: from its event time to the first frame that shows it, over the events
    /// a sample of the streams followed (`e2e_events` of them).
    pub e2e_latency_ms: Percentiles,
    pub e2e_events: u64,
    /// Per widget in each update frame: receive time minus the widget's newest event
    /// time (how fresh the newest value shown is).
    pub freshness_ms: Percentiles,
    /// Per update frame: receive time minus `sent_at`.
    pub push_delay_ms: Percentiles,
    /// Streams that closed, came back (on the next node) and got updates again.
    pub reconnects: u64,
    /// Per reconnect: the last update before the close to the first after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_gap_ms: Option<Percentiles>,
}

/// CPU seconds (user + system) and resident bytes of process `pid`.
pub fn sample_process(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    // Linux reports CPU time in clock ticks of 1/100 s.
    Some((ticks as f64 / 100.0, rss_kb * 1024))
}

impl Report {
    pub fn print(&self) {
        let p = |l: &Percentiles| {
            format!(
                "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1} ms",
                l.p50, l.p90, l.p99, l.p999, l.max
            )
        };
        println!(
            "scenario {} for {:.1} s{}",
            self.scenario,
            self.duration_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        if let Some(f) = &self.producers {
            println!(
                "  events    {:.0}/s achieved of {}/s; sent {}, acked {}, rejected {}, errors {}",
                f.achieved_events_per_s,
                f.target_events_per_s,
                f.events_sent,
                f.events_acked,
                f.events_rejected,
                self.errors
            );
            println!("  ingest    {}", p(&f.ingest_latency_ms));
        }
        if let Some(f) = &self.streams {
            println!(
                "  sockets   {} of {} connected, {} updates received",
                f.sockets_connected, f.sockets_target, f.updates_received
            );
            println!(
                "  e2e       {} (per event, {} events followed)",
                p(&f.e2e_latency_ms),
                f.e2e_events
            );
            println!("  freshness {}", p(&f.freshness_ms));
            println!("  push      {}", p(&f.push_delay_ms));
            if let Some(g) = &f.reconnect_gap_ms {
                println!(
                    "  reconnect {} streams; gap p50 {:.0}  p99 {:.0}  max {:.0} ms",
                    f.reconnects, g.p50, g.p99, g.max
                );
            }
        }
        if let (Some(cpu), Some(rss)) = (self.server_cpu_seconds, self.server_rss_bytes) {
            println!(
                "  server    {cpu:.2} CPU seconds, {:.1} MiB resident",
                rss as f64 / (1 << 20) as f64
            );
        }
    }
}

/// Draws latency over time (p99 per second) and the end-to-end latency histogram.
pub fn plot(path: &Path, stats: &Stats) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let series = [
        ("e2e p99 (per event)", Stats::p99_series(&stats.e2e), BLUE),
        (
            "freshness p99",
            Stats::p99_series(&stats.freshness),
            MAGENTA,
        ),
        ("push p99", Stats::p99_series(&stats.push), RED),
        ("ingest p99", Stats::p99_series(&stats.ingest), GREEN),
    ];
    let x_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(1);
    // Head room above the data for the legend, so it covers none of it.
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.45;
    let mut chart = ChartBuilder::on(&top)
        .caption("latency over time (p99 per second)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("ms")
        .draw()?;
    for (name, points, color) in series {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points, color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;

    let buckets = Stats::buckets(&stats.e2e, 50);
    let width = buckets.get(1).map_or(1.0, |b| b.0).max(0.001);
    let x_top = buckets.last().map_or(1.0, |b| b.0 + width);
    let y_top = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    let mut hist = ChartBuilder::on(&bottom)
        .caption(
            "end-to-end latency per event (up to p99.9)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_top, 0u64..y_top)?;
    hist.configure_mesh()
        .x_desc("end-to-end latency, ms")
        .y_desc("events")
        .draw()?;
    hist.draw_series(buckets.iter().map(|(lo, n)| {
        Rectangle::new([(*lo, 0), (*lo + width * 0.9, *n)], BLUE.mix(0.6).filled())
    }))?;
    root.present()?;
    Ok(())
}
