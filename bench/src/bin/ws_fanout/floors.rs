//! The loopback floors `ws_fanout` compares with: of a schedule, and of the same schedule
//! through io_uring or with compact frames.

use livedash_bench::floor;
use livedash_engine::tick_phase_ms;
use serde_json::json;

use crate::probe::{p99, percentile, spread};
use crate::{Args, INTERVAL_MS, SHARDS};

/// The loopback floor of `sockets` streams on the schedule `phases`, frames of
/// `frame_bytes`.
pub(crate) fn floor_run(
    args: &Args,
    frame_bytes: usize,
    phases: Vec<i64>,
    submit: floor::Submit,
    label: &str,
) -> Result<Vec<i64>, String> {
    let plan = floor::Fanout {
        sockets: args.sockets,
        submit,
        phases,
        frame_bytes,
        ticks: args.seconds as u32,
        interval_ms: INTERVAL_MS,
        senders: SHARDS,
        readers: args.clients,
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let delays = floor::measure(&exe, plan)?;
    println!(
        "loopback floor, {label} ({SHARDS} sender threads doing nothing but send, {frame_bytes}-byte frames): delay {}",
        spread(&delays)
    );
    Ok(delays)
}

/// The floors of one spread schedule, three ways, `floor_rounds` times in turn; prints
/// each run's p99 and the medians' ratios.
pub(crate) fn floors_only(args: &Args) -> Result<(), String> {
    let phases: Vec<i64> = (0..args.dashboards)
        .map(|_| tick_phase_ms(&uuid::Uuid::new_v4(), INTERVAL_MS))
        .collect();
    let compact = compact_frame_bytes(args.frame_bytes, args.widgets);
    let ways = [
        (floor::Submit::Send, args.frame_bytes, "send"),
        (floor::Submit::Uring, args.frame_bytes, "io_uring"),
        (floor::Submit::Send, compact, "compact frames"),
    ];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    for round in 0..args.floor_rounds.max(1) {
        for i in 0..ways.len() {
            let w = (i + round) % ways.len();
            let (submit, bytes, label) = ways[w];
            let d = floor_run(args, bytes, phases.clone(), submit, label)?;
            p99s[w].push(p99(&d));
            p50s[w].push(percentile(&d, 0.5) as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m50, m99): (Vec<f64>, Vec<f64>) = p50s
        .iter_mut()
        .zip(p99s.iter_mut())
        .map(|(a, b)| (median(a), median(b)))
        .unzip();
    for (i, (_, bytes, label)) in ways.iter().enumerate() {
        println!(
            "{label:<16} {bytes:>5}-byte frames: median p50 {:.0} ms, p99 {:.0} ms ({:.2}x send's)",
            m50[i],
            m99[i],
            m99[i] / m99[0]
        );
    }
    Ok(())
}

/// The size of an update frame of `widgets` widgets as `frame_bytes`, if each widget were
/// sent as `[index,value,latest_event_time]` (its index announced in the snapshot) and
/// `window_end` and `stale` once per frame: what a compact JSON encoding would weigh.
pub(crate) fn compact_frame_bytes(frame_bytes: usize, widgets: usize) -> usize {
    let sample = json!({
        "type": "update", "seq": 12345, "sent_at": 1_764_512_345_678_i64,
        "window_end": 1_764_512_346_000_i64,
        "v": (0..widgets).map(|i| json!([i, 123_456.5, 1_764_512_345_432_i64])).collect::<Vec<_>>(),
    })
    .to_string();
    let full = json!({
        "type": "update", "seq": 12345, "sent_at": 1_764_512_345_678_i64,
        "widgets": (0..widgets).map(|_| json!({
            "widget_id": uuid::Uuid::nil(), "value": 123_456.5,
            "window_end": 1_764_512_346_000_i64,
            "latest_event_time": 1_764_512_345_432_i64, "stale": false,
        })).collect::<Vec<_>>(),
    })
    .to_string();
    // Scaled to the measured frame, whose values differ in length from the sample's.
    let payload = frame_bytes * sample.len() / full.len().max(1);
    payload + floor::header_len(payload)
}
