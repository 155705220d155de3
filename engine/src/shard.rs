//! The shard state machine: the windows and widgets one shard owns, driven by three inputs
//! (events, widget changes, clock ticks) and no I/O. The node feeds it from sockets,
//! Kafka and timers; tests drive it directly with a synthetic clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use hashbrown::HashMap;
use serde::Serialize;
use uuid::Uuid;

use crate::limits::{
    DEFAULT_DISTRIBUTION_BUCKETS, DEFAULT_HISTORY_LEN, DEFAULT_MAX_GROUP_VALUES,
    DEFAULT_MAX_GROUP_WINDOWS, DEFAULT_MAX_SKEW_MS, MAX_DETAIL_HISTORY_LEN,
};
use crate::model::{Aggregation, MetricEvent, Widget};
use crate::query::{QueryId, QueryIndex, QueryKey};
use crate::validate::{self, ValidationError};

mod apply;
mod mirror;
mod value;
pub use apply::Grouping;
pub use mirror::QueryChanges;
pub use value::{Detail, HistoryPoint, WidgetValue, serialize_reading};

/// Tunables of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardConfig {
    /// Events stamped further than this ahead of the shard clock are rejected.
    pub max_skew_ms: i64,
    /// Recent values kept per widget for charts.
    pub history_len: usize,
    /// Events older than `max(longest window, min_horizon_ms)` are rejected. The node sets
    /// this to the longest window of any dashboard so all shards agree.
    pub min_horizon_ms: i64,
    /// Refresh each widget at its dashboard's phase within the interval
    /// (`Widget::tick_phase_ms`) instead of on multiples of the interval.
    pub spread_ticks: bool,
    /// Most tag values a grouped query splits its window into, and all grouped queries
    /// of the shard together.
    pub max_group_values: usize,
    pub max_group_windows: usize,
    /// Most buckets a `histogram` widget reports.
    pub distribution_buckets: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
            history_len: DEFAULT_HISTORY_LEN,
            min_horizon_ms: 300_000,
            spread_ticks: true,
            max_group_values: DEFAULT_MAX_GROUP_VALUES,
            max_group_windows: DEFAULT_MAX_GROUP_WINDOWS,
            distribution_buckets: DEFAULT_DISTRIBUTION_BUCKETS,
        }
    }
}

/// Why the shard refused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Older than the longest window: no window can count it.
    TooOld,
    /// Further ahead of the clock than the allowed skew.
    TooFarAhead,
}

impl Rejection {
    /// A reason a producer can act on.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooOld => "event_time is older than the longest window; the event cannot count",
            Self::TooFarAhead => {
                "event_time is further in the future than the allowed clock skew; check the producer clock"
            }
        }
    }
}

/// Counters of everything `apply` saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestStats {
    /// Events accepted (including those no widget watches).
    pub accepted: u64,
    /// Accepted events whose metric no query watches.
    pub unmatched: u64,
    pub rejected_too_old: u64,
    pub rejected_too_far_ahead: u64,
    /// Widget values computed by refreshes.
    pub values_computed: u64,
}

/// The result of one `apply`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyOutcome {
    pub accepted: usize,
    /// Index in the batch and reason, for every refused event.
    pub rejected: Vec<(usize, Rejection)>,
}

/// A widget on this shard. What a refresh reads comes first (`repr(C)`), so it fits the
/// cache lines `tick` prefetches; the full definition is last.
#[derive(Debug)]
#[repr(C)]
struct WidgetState {
    query: QueryId,
    /// A grouped widget's `top` (how many tag values it reports); 0 for the others.
    top: u16,
    aggregation: Aggregation,
    interval_ms: i64,
    /// Refreshes fall on `phase_ms + k * interval_ms`.
    phase_ms: i64,
    generation: u64,
    /// When the next refresh is scheduled.
    due: i64,
    history: VecDeque<HistoryPoint>,
    last: Option<WidgetValue>,
    /// Grouped and `histogram` widgets: the details of recent values, oldest first.
    details: VecDeque<(i64, Arc<Detail>)>,
    widget: Widget,
}

/// Bytes of a `WidgetState` a refresh reads, from its start.
const WIDGET_HOT_BYTES: usize = 192;

impl WidgetState {
    fn percentile(&self) -> bool {
        self.widget.spec.aggregation.is_percentile()
    }
}

/// The state one shard owns. See the module docs.
#[derive(Debug)]
pub struct Shard {
    config: ShardConfig,
    queries: QueryIndex,
    /// Widget states in slots, so a refresh walks memory in order.
    widgets: Vec<Option<WidgetState>>,
    free_slots: Vec<u32>,
    slot_of: HashMap<Uuid, u32>,
    /// Refresh deadlines: due time to (slot, generation). Deadlines are aligned to the
    /// phase, so the widgets of a dashboard sharing an interval share one entry. Stale generations are skipped.
    schedule: BTreeMap<i64, Vec<(u32, u64)>>,
    next_generation: u64,
    /// The shard clock: the largest `now` seen; it never goes back.
    clock: i64,
    horizon_ms: i64,
    stats: IngestStats,
    /// Percentile widgets on this shard (when 0, `apply` skips the histogram pass).
    histograms: usize,
    /// Scratch for `apply`: (event, query) pairs, and the same grouped by query.
    plan: Vec<apply::Pair>,
    grouped: Vec<apply::Pair>,
    group_counts: Vec<u32>,
}

/// Refreshes handled per pass of `tick`.
const TICK_CHUNK: usize = 64;

/// Events handled per pass of `apply`: small enough that a chunk's panes stay in cache.
const APPLY_CHUNK: usize = 64;

impl Shard {
    pub fn new(config: ShardConfig) -> Self {
        let horizon_ms = config.min_horizon_ms;
        let queries = QueryIndex::new(config.max_group_values, config.max_group_windows);
        Self {
            config,
            queries,
            widgets: Vec::new(),
            free_slots: Vec::new(),
            slot_of: HashMap::new(),
            schedule: BTreeMap::new(),
            next_generation: 0,
            clock: i64::MIN,
            horizon_ms,
            stats: IngestStats::default(),
            histograms: 0,
            plan: Vec::with_capacity(APPLY_CHUNK),
            grouped: Vec::new(),
            group_counts: Vec::new(),
        }
    }

    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    fn now(&mut self, now_ms: i64) -> i64 {
        self.clock = self.clock.max(now_ms);
        self.clock
    }

    /// Sets the minimum horizon (see `ShardConfig::min_horizon_ms`).
    pub fn set_min_horizon_ms(&mut self, ms: i64) {
        self.config.min_horizon_ms = ms;
        self.refresh_horizon();
    }

    fn refresh_horizon(&mut self) {
        self.horizon_ms = self
            .queries
            .longest_window_ms()
            .max(self.config.min_horizon_ms);
    }

    /// Events older than this many ms before the clock are rejected.
    pub fn horizon_ms(&self) -> i64 {
        self.horizon_ms
    }

    #[inline]
    fn check_time(&mut self, event_time: i64, now: i64) -> Result<(), Rejection> {
        if event_time < now.saturating_sub(self.horizon_ms) {
            self.stats.rejected_too_old += 1;
            return Err(Rejection::TooOld);
        }
        if event_time > now.saturating_add(self.config.max_skew_ms) {
            self.stats.rejected_too_far_ahead += 1;
            return Err(Rejection::TooFarAhead);
        }
        self.stats.accepted += 1;
        Ok(())
    }

    /// Applies one event that already passed `validate::event`.
    pub fn apply_one(&mut self, ev: &MetricEvent, now_ms: i64) -> Result<(), Rejection> {
        let now = self.now(now_ms);
        self.check_time(ev.event_time, now)?;
        if self
            .queries
            .insert(&ev.metric_name, &ev.tags, ev.event_time, ev.value, now)
            .is_none()
        {
            self.stats.unmatched += 1;
        }
        Ok(())
    }

    /// Adds a widget, or changes it if its id exists. A widget whose query (metric,
    /// filter, window) already exists starts from that query's state; otherwise it
    /// starts empty. Changing the query or the aggregation clears its history.
    pub fn upsert_widget(&mut self, widget: Widget, now_ms: i64) -> Result<(), ValidationError> {
        validate::widget(&widget.spec)?;
        let now = self.now(now_ms);
        let key = QueryKey::of(&widget.spec);
        let percentile = widget.spec.aggregation.is_percentile();
        let generation = self.next_generation;
        self.next_generation += 1;
        let interval_ms = widget.refresh_interval_ms();
        let top = if widget.spec.group_by.is_some() {
            widget.spec.top_n() as u16
        } else {
            0
        };
        let phase_ms = if self.config.spread_ticks {
            widget.tick_phase_ms()
        } else {
            0
        };
        let id = widget.widget_id;
        let existing = self
            .slot_of
            .get(&id)
            .and_then(|&slot| Some((slot, self.widgets.get_mut(slot as usize)?.as_mut()?)));
        let slot = match existing {
            Some((slot, state)) => {
                let old_key = QueryKey::of(&state.widget.spec);
                let was_percentile = state.percentile();
                self.histograms =
                    self.histograms + usize::from(percentile) - usize::from(was_percentile);
                let query_changed = old_key != key;
                if query_changed {
                    let new_query =
                        self.queries
                            .acquire(key, percentile, now, self.config.max_skew_ms);
                    self.queries.release(state.query, was_percentile);
                    state.query = new_query;
                } else {
                    self.queries
                        .set_percentile(state.query, was_percentile, percentile);
                }
                if query_changed
                    || state.widget.spec.aggregation != widget.spec.aggregation
                    || state.widget.spec.top != widget.spec.top
                {
                    state.history.clear();
                    state.details.clear();
                    state.last = None;
                }
                state.aggregation = widget.spec.aggregation;
                state.top = top;
                state.widget = widget;
                state.interval_ms = interval_ms;
                state.phase_ms = phase_ms;
                state.generation = generation;
                state.due = now;
                slot
            }
            None => {
                self.histograms += usize::from(percentile);
                let query = self
                    .queries
                    .acquire(key, percentile, now, self.config.max_skew_ms);
                let state = WidgetState {
                    top,
                    aggregation: widget.spec.aggregation,
                    widget,
                    query,
                    interval_ms,
                    phase_ms,
                    generation,
                    due: now,
                    last: None,
                    history: VecDeque::with_capacity(self.config.history_len.min(64)),
                    details: VecDeque::new(),
                };
                let slot = match self.free_slots.pop() {
                    Some(slot) => {
                        self.widgets[slot as usize] = Some(state);
                        slot
                    }
                    None => {
                        self.widgets.push(Some(state));
                        (self.widgets.len() - 1) as u32
                    }
                };
                self.slot_of.insert(id, slot);
                slot
            }
        };
        self.schedule
            .entry(now)
            .or_default()
            .push((slot, generation));
        self.refresh_horizon();
        Ok(())
    }

    fn state(&self, widget_id: &Uuid) -> Option<&WidgetState> {
        self.widgets
            .get(*self.slot_of.get(widget_id)? as usize)?
            .as_ref()
    }

    /// Removes a widget; returns false if it was not here.
    pub fn remove_widget(&mut self, widget_id: &Uuid) -> bool {
        let Some(slot) = self.slot_of.remove(widget_id) else {
            return false;
        };
        let Some(state) = self.widgets.get_mut(slot as usize).and_then(Option::take) else {
            return false;
        };
        self.free_slots.push(slot);
        self.histograms -= usize::from(state.percentile());
        self.queries.release(state.query, state.percentile());
        self.refresh_horizon();
        true
    }

    /// Ids of the widgets on this shard.
    pub fn widget_ids(&self) -> impl Iterator<Item = &Uuid> {
        self.slot_of.keys()
    }

    /// The widget definition, if present.
    pub fn widget(&self, widget_id: &Uuid) -> Option<&Widget> {
        self.state(widget_id).map(|s| &s.widget)
    }

    /// Runs every refresh that is due at `now_ms`; returns the values that changed since
    /// the widget's previous refresh (every widget's first refresh counts as a change).
    ///
    /// Due widgets are handled in chunks, in passes that prefetch first the widget states,
    /// then their queries and history slots, then the panes that slide out, so the cache
    /// misses of a chunk overlap; the last pass computes.
    pub fn tick(&mut self, now_ms: i64) -> Vec<WidgetValue> {
        self.tick_noting(now_ms, &mut Vec::new())
    }

    /// `tick`, also appending to `unchanged` the id of every widget refreshed without a
    /// change, so a receiver waiting for a dashboard's values of this tick knows that
    /// nothing more comes.
    pub fn tick_noting(&mut self, now_ms: i64, unchanged: &mut Vec<Uuid>) -> Vec<WidgetValue> {
        let now = self.now(now_ms);
        let mut changed = Vec::new();
        while let Some(entry) = self.schedule.first_entry() {
            if *entry.key() > now {
                break;
            }
            let due = entry.remove();
            changed.reserve(due.len());
            // Widgets refreshed together mostly share their next deadline: collect them
            // and touch the schedule once per distinct deadline.
            let mut next_batch: Option<(i64, Vec<(u32, u64)>)> = None;
            for chunk in due.chunks(TICK_CHUNK) {
                for &(slot, _) in chunk {
                    if (slot as usize) < self.widgets.len() {
                        let base = self
                            .widgets
                            .as_ptr()
                            .wrapping_add(slot as usize)
                            .cast::<u8>();
                        for line in (0..WIDGET_HOT_BYTES).step_by(64) {
                            crate::prefetch::prefetch(base.wrapping_add(line));
                        }
                    }
                }
                for &(slot, generation) in chunk {
                    if let Some(Some(state)) = self.widgets.get(slot as usize)
                        && state.generation == generation
                    {
                        self.queries.prefetch(state.query);
                        if let Some(front) = state.history.front() {
                            crate::prefetch::prefetch(front);
                        }
                        if let Some(back) = state.history.back() {
                            crate::prefetch::prefetch(
                                (back as *const HistoryPoint).wrapping_add(1),
                            );
                        }
                    }
                }
                // The panes that slide out, then (with percentile widgets on the shard)
                // the three steps of their histogram records.
                let passes = if self.histograms > 0 { 4 } else { 1 };
                for pass in 0..passes {
                    for &(slot, _) in chunk {
                        if let Some(Some(state)) = self.widgets.get(slot as usize)
                            && let Some(query) = self.queries.get(state.query)
                        {
                            match pass {
                                0 => query.window.prefetch_advance(now),
                                step => query.window.prefetch_advance_histogram(now, step - 1),
                            }
                        }
                    }
                }
                for &(slot, generation) in chunk {
                    let Some(Some(state)) = self.widgets.get_mut(slot as usize) else {
                        continue;
                    };
                    if state.generation != generation {
                        continue;
                    }
                    let Some(value) = Self::compute(
                        &mut self.queries,
                        state,
                        now,
                        self.config.distribution_buckets,
                    ) else {
                        continue;
                    };
                    self.stats.values_computed += 1;
                    if state.history.len() >= self.config.history_len {
                        state.history.pop_front();
                    }
                    // History is kept by refresh time: a window's end moves once per pane,
                    // which may hold many refreshes.
                    if self.config.history_len > 0 {
                        state.history.push_back((now, value.value));
                    }
                    if let Some(detail) = &value.detail {
                        let keep = self.config.history_len.min(MAX_DETAIL_HISTORY_LEN);
                        if state.details.len() >= keep {
                            state.details.pop_front();
                        }
                        if keep > 0 {
                            state
                                .details
                                .push_back((value.window_end, Arc::clone(detail)));
                        }
                    }
                    let differs = state.last.as_ref().is_none_or(|last| {
                        last.value.map(f64::to_bits) != value.value.map(f64::to_bits)
                            || last.latest_event_time != value.latest_event_time
                            || last.detail != value.detail
                    });
                    if differs {
                        changed.push(value.clone());
                    } else {
                        unchanged.push(value.widget_id);
                    }
                    state.last = Some(value);
                    // Refreshes fall on the dashboard's phase plus multiples of the
                    // interval, so a dashboard's widgets refresh together and dashboards
                    // apart; a shard that fell behind skips missed slots.
                    let next = state.phase_ms
                        + ((now - state.phase_ms).div_euclid(state.interval_ms) + 1)
                            * state.interval_ms;
                    state.due = next;
                    match &mut next_batch {
                        Some((at, list)) if *at == next => list.push((slot, generation)),
                        _ => {
                            if let Some((at, list)) = next_batch.take() {
                                self.schedule.entry(at).or_default().extend(list);
                            }
                            let mut list = Vec::with_capacity(due.len());
                            list.push((slot, generation));
                            next_batch = Some((next, list));
                        }
                    }
                }
            }
            if let Some((at, list)) = next_batch {
                self.schedule.entry(at).or_default().extend(list);
            }
        }
        changed
    }

    /// The value of a widget at `now_ms`, computed on demand (history is untouched).
    pub fn value(&mut self, widget_id: &Uuid, now_ms: i64) -> Option<WidgetValue> {
        let now = self.now(now_ms);
        let slot = *self.slot_of.get(widget_id)?;
        let state = self.widgets.get(slot as usize)?.as_ref()?;
        Self::compute(
            &mut self.queries,
            state,
            now,
            self.config.distribution_buckets,
        )
    }

    /// True when the widget's refresh is overdue by more than twice its interval at
    /// `now_ms`: the shard has fallen behind and pushed values lag. `None` if unknown.
    pub fn is_behind(&self, widget_id: &Uuid, now_ms: i64) -> Option<bool> {
        let state = self.state(widget_id)?;
        Some(now_ms - state.due > 2 * state.interval_ms)
    }

    /// The last value pushed for a widget, if it has refreshed at least once.
    pub fn last_value(&self, widget_id: &Uuid) -> Option<&WidgetValue> {
        self.state(widget_id)?.last.as_ref()
    }

    /// Recent `(window_end, value)` points of a widget, oldest first.
    pub fn history(&self, widget_id: &Uuid) -> Option<&VecDeque<HistoryPoint>> {
        self.state(widget_id).map(|s| &s.history)
    }

    /// Grouped and `histogram` widgets: the details of recent values, oldest first.
    pub fn detail_history(&self, widget_id: &Uuid) -> Option<&VecDeque<(i64, Arc<Detail>)>> {
        self.state(widget_id).map(|s| &s.details)
    }

    /// Earliest refresh deadline, for the caller's timer.
    pub fn next_due(&self) -> Option<i64> {
        self.schedule.keys().next().copied()
    }

    pub fn stats(&self) -> IngestStats {
        self.stats
    }

    pub fn widget_count(&self) -> usize {
        self.slot_of.len()
    }

    pub fn query_count(&self) -> usize {
        self.queries.len()
    }

    /// Events of grouped widgets past their split's most tag values (counted in the
    /// whole and `other` only).
    pub fn group_values_refused(&self) -> u64 {
        self.queries.parts_refused()
    }

    /// Heap bytes held by window state.
    pub fn window_heap_bytes(&self) -> usize {
        self.queries.heap_bytes()
    }
}

#[cfg(test)]
mod tests;
