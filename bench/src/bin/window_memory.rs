//! Reports the memory of one query's window state for a 5-minute window, with and
//! without a percentile histogram, filled at a given event rate:
//! `cargo run --release -p livedash-bench --bin window_memory [events_per_second]`.

use livedash_bench::workload::{materialize, metric_names, second_of_traffic, widgets};
use livedash_engine::{Aggregation, Shard, ShardConfig};

const START_MS: i64 = 1_764_000_000_000;
const WINDOW_S: u64 = 300;

/// Heap bytes of the window state of one 5-minute query after a full window of traffic.
fn bytes_per_query(aggregation: Aggregation, series: usize, per_series: usize) -> usize {
    let names = metric_names(series);
    let mut shard = Shard::new(ShardConfig::default());
    for w in widgets(&names, aggregation, WINDOW_S) {
        if let Err(e) = shard.upsert_widget(w, START_MS) {
            eprintln!("bad widget: {e}");
            std::process::exit(1);
        }
    }
    let traffic = second_of_traffic(series, per_series, 7);
    let mut batch = Vec::new();
    for second in 0..WINDOW_S as i64 + 5 {
        let now = START_MS + (second + 1) * 1000;
        for chunk in traffic.chunks(1000) {
            materialize(chunk, &names, START_MS + second * 1000, &mut batch);
            shard.apply(&batch, now);
        }
        shard.tick(now);
    }
    shard.window_heap_bytes() / series
}

fn main() {
    let rate: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    println!("5-minute window, {rate} events/s per series, heap bytes of window state per query:");
    for (label, agg) in [
        ("sum/avg/min/max/count (no histogram)", Aggregation::Sum),
        ("p50..p99 (with histogram)", Aggregation::P99),
    ] {
        let series = if rate >= 1000 { 4 } else { 200 };
        println!(
            "  {label:<40} {:>9} bytes",
            bytes_per_query(agg, series, rate)
        );
    }
}
