//! How a window of a given length is cut into panes.
//! Short windows get ten panes, medium ones 1 s panes, long ones at most about 600 panes.

/// Pane geometry of one sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Width of one pane in milliseconds.
    pub pane_ms: i64,
    /// Number of panes the window spans (`pane_ms * panes` >= the window length).
    pub panes: i64,
    /// Extra ring slots for events ahead of the clock (within the allowed skew).
    pub future_panes: i64,
}

/// Most panes a long window is cut into.
const MAX_PANES: i64 = 600;

impl WindowSpec {
    /// The geometry for a window of `window_seconds`, holding events up to `max_skew_ms` ahead.
    ///
    /// Windows up to 10 s use ten panes (a 1 s window slides in 100 ms steps); windows up
    /// to 10 min use 1 s panes; longer ones use whole-second panes, at most about 600 of
    /// them, preferring a width that divides the window so that it covers it exactly.
    pub fn for_window(window_seconds: u64, max_skew_ms: i64) -> Self {
        let window_ms = (window_seconds.max(1) as i64).saturating_mul(1000);
        let pane_ms = if window_ms <= 10_000 {
            window_ms / 10
        } else if window_ms <= MAX_PANES * 1000 {
            1000
        } else {
            let secs = window_ms / 1000;
            let min_width = (secs + MAX_PANES - 1) / MAX_PANES;
            let exact = (min_width..=min_width * 2).find(|w| secs % w == 0);
            exact.unwrap_or(min_width) * 1000
        };
        let panes = (window_ms + pane_ms - 1) / pane_ms;
        let future_panes = (max_skew_ms.max(0) + pane_ms - 1) / pane_ms + 1;
        Self {
            pane_ms,
            panes,
            future_panes,
        }
    }

    /// Ring slots needed: live panes plus the future ones.
    pub fn capacity(&self) -> i64 {
        self.panes + self.future_panes
    }

    /// Milliseconds the window spans.
    pub fn span_ms(&self) -> i64 {
        self.pane_ms * self.panes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        let s = WindowSpec::for_window(1, 5000);
        assert_eq!((s.pane_ms, s.panes, s.future_panes), (100, 10, 51));
        let s = WindowSpec::for_window(60, 5000);
        assert_eq!((s.pane_ms, s.panes, s.future_panes), (1000, 60, 6));
        let s = WindowSpec::for_window(300, 5000);
        assert_eq!((s.pane_ms, s.panes), (1000, 300));
        let s = WindowSpec::for_window(3600, 5000);
        assert_eq!((s.pane_ms, s.panes), (6000, 600));
        let s = WindowSpec::for_window(86_400, 5000);
        assert_eq!((s.pane_ms, s.panes), (144_000, 600));
        // 3601 s = 13 x 277: 13 s panes cover it exactly.
        let s = WindowSpec::for_window(3601, 0);
        assert_eq!((s.pane_ms, s.panes, s.future_panes), (13_000, 277, 1));
        // 3607 s is prime: no divisor in range, so the window rounds up to whole panes.
        let s = WindowSpec::for_window(3607, 0);
        assert_eq!((s.pane_ms, s.panes), (7000, 516));
        assert!(s.span_ms() >= 3_607_000);
        for w in [1, 7, 59, 601, 1000, 7200, 86_399] {
            let s = WindowSpec::for_window(w, 5000);
            assert!(
                s.span_ms() >= w as i64 * 1000 && s.panes <= MAX_PANES + 1,
                "{w}: {s:?}"
            );
        }
    }
}
