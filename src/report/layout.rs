//! The layout the picture's bands share: their heights, the names of the faults, and the
//! time axis of the whole run.

use super::Delivery;
use super::plot::{MARGIN_LEFT, MARGIN_RIGHT, Plot, SVG_W, nice_step};

/// Heights of the three bands: the whole run, the zooms around the faults (drawn only when
/// there is a fault), and the latency of each message.
pub(super) const OVERVIEW_H: f64 = 500.0;
pub(super) const ZOOM_H: f64 = 230.0;
pub(super) const LATENCY_H: f64 = 260.0;

/// Fault `i`'s (0-based) name in the picture: `label`, numbered `label (2)` when there are
/// several.
pub(super) fn fault_name(label: &str, i: usize, count: usize) -> String {
    if count > 1 {
        format!("{label} ({})", i + 1)
    } else {
        label.to_string()
    }
}

/// The time axis the overview and the latency panel share: seconds since the first delivery
/// (`t0`, unix ms), rounded out to whole ticks.
pub(super) struct TimeAxis {
    t0: u64,
    range: (f64, f64),
    step: f64,
}

impl TimeAxis {
    pub(super) fn new(deliveries: &[Delivery], faults: &[u64]) -> TimeAxis {
        let t0 = deliveries.iter().map(|d| d.at_ms).min().unwrap_or(0);
        let secs = |at_ms: u64| secs_since(t0, at_ms);
        let mut lo: f64 = 0.0;
        let mut hi: f64 = deliveries.iter().map(|d| secs(d.at_ms)).fold(0.0, f64::max);
        for &k in faults {
            lo = lo.min(secs(k));
            hi = hi.max(secs(k));
        }
        if hi - lo < 1.0 {
            hi = lo + 1.0;
        }
        let step = nice_step(hi - lo, 10.0);
        // A little headroom so the last dot does not sit on the frame.
        let lo = (lo / step).floor() * step;
        let hi = ((hi + 0.01 * (hi - lo)) / step).ceil() * step;
        TimeAxis {
            t0,
            range: (lo, hi),
            step,
        }
    }

    /// Where `at_ms` (unix ms) lies on this axis, in seconds.
    pub(super) fn secs(&self, at_ms: u64) -> f64 {
        secs_since(self.t0, at_ms)
    }

    /// A panel across the picture from `top` to `bottom` over this axis, with the count axis
    /// `y` (its tick step and range, see [`count_scale`](super::plot::count_scale)) named
    /// `y_name`; draws its axes.
    pub(super) fn panel(
        &self,
        svg: &mut String,
        (top, bottom): (f64, f64),
        (y_step, y): (f64, (f64, f64)),
        y_name: &str,
    ) -> Plot {
        let plot = Plot {
            left: MARGIN_LEFT,
            right: SVG_W - MARGIN_RIGHT,
            top,
            bottom,
            x: self.range,
            y,
        };
        plot.axes(
            svg,
            self.step,
            "time since first delivery (s)",
            Some((y_step, y_name)),
        );
        plot
    }
}

/// Seconds from `t0` to `at_ms` (both unix ms).
fn secs_since(t0: u64, at_ms: u64) -> f64 {
    (at_ms as f64 - t0 as f64) / 1000.0
}
