//! Sliding windows over event time: a ring of fixed-width panes per query.
//! `spec` picks pane widths, `sliding` is the ring, `histogram` backs percentiles
//! and `distribution` reports it,
//! `compensated` keeps subtract-on-evict sums accurate.

mod compensated;
mod distribution;
mod histogram;
mod pane;
mod sliding;
mod spec;

pub use distribution::Distribution;
pub use histogram::{BUCKET_RELATIVE_ERROR, Histogram};
pub use sliding::{InsertOutcome, PaneChanges, PaneState, SlidingWindow};
pub use spec::WindowSpec;
