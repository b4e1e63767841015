//! The picture's bands under the whole run: a zoom on each fault, where its silence is
//! shaded and measured ([`zoom`]), and each message's publish→delivery latency ([`latency`]).

use std::fmt::Write as _;

use super::analysis::fault_window;
use super::layout::{LATENCY_H, OVERVIEW_H, TimeAxis, ZOOM_H};
use super::plot::{
    KILL_COLOUR, MARGIN_LEFT, Plot, SILENCE_COLOUR, broker_name, colour, count_scale, heading,
    nice_step,
};
use super::{Delivery, Latency, Source};

/// How much a zoomed panel shows before its fault, and at least after it, in ms.
pub const ZOOM_MS: u64 = 1_500;
/// How much a zoomed panel shows after the first delivery that ends the silence, in ms.
const ZOOM_AFTER_SILENCE_MS: u64 = 1_000;
/// The furthest a zoomed panel reaches after its fault, in ms.
const ZOOM_MAX_AFTER_MS: u64 = 10_000;

/// The moments around one fault, between `left` and `right` on the picture: ms relative to
/// the fault on x, one tick per delivery in its broker's lane, the silence across the fault
/// shaded and labelled.
pub(super) fn zoom(
    svg: &mut String,
    deliveries: &[Delivery],
    at_ms: u64,
    name: &str,
    (left, right): (f64, f64),
) {
    let window = fault_window(deliveries, at_ms);
    let rel = |t: u64| t as f64 - at_ms as f64;
    let after = window.first_after.map_or(ZOOM_MAX_AFTER_MS, |d| {
        (d.at_ms - at_ms + ZOOM_AFTER_SILENCE_MS).clamp(ZOOM_MS, ZOOM_MAX_AFTER_MS)
    });
    let top = OVERVIEW_H + 30.0;
    let plot = Plot {
        left,
        right,
        top,
        bottom: OVERVIEW_H + ZOOM_H - 45.0,
        x: (-(ZOOM_MS as f64), after as f64),
        y: (0.0, 2.0),
    };
    heading(svg, left, OVERVIEW_H + 18.0, &format!("zoom: {name}"));

    // The silence first, so the ticks and the fault are drawn over it.
    let from = window.last_before.map_or(at_ms, |d| d.at_ms);
    let gap_from = rel(from).max(plot.x.0);
    let (gap_to, label) = match window.first_after {
        Some(d) => (
            rel(d.at_ms).min(plot.x.1),
            format!("{} ms without a delivery", d.at_ms - from),
        ),
        None => (plot.x.1, "nothing delivered after it".to_string()),
    };
    let _ = writeln!(
        svg,
        r#"<rect class="silence" x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{SILENCE_COLOUR}"/>"#,
        plot.px(gap_from),
        (plot.px(gap_to) - plot.px(gap_from)).max(1.0),
        plot.bottom - top
    );
    plot.axes(
        svg,
        nice_step(plot.x.1 - plot.x.0, 6.0),
        "ms from the fault",
        None,
    );
    plot.fault_line(svg, 0.0);

    // Two lanes: the primary's deliveries in the upper one, the backup's in the lower.
    for (source, lane) in [(Source::Primary, 1.0), (Source::Backup, 0.0)] {
        let (y1, y2) = (plot.py(lane + 0.85), plot.py(lane + 0.15));
        let _ = writeln!(svg, r#"<g stroke="{}" stroke-width="2">"#, colour(source));
        for d in deliveries.iter().filter(|d| d.source == source) {
            let x = rel(d.at_ms);
            if (plot.x.0..=plot.x.1).contains(&x) {
                let _ = writeln!(
                    svg,
                    r#"<line class="tick" x1="{0:.1}" y1="{y1:.1}" x2="{0:.1}" y2="{y2:.1}"/>"#,
                    plot.px(x)
                );
            }
        }
        let _ = writeln!(svg, "</g>");
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{}">{}</text>"#,
            left - 6.0,
            plot.py(lane + 0.5) + 4.0,
            colour(source),
            broker_name(source)
        );
    }

    // The silence's length above it, kept inside the panel.
    let half = 3.5 * label.chars().count() as f64;
    let centre = ((plot.px(gap_from) + plot.px(gap_to)) / 2.0).clamp(left + half, right - half);
    let _ = writeln!(
        svg,
        r#"<text class="silence" x="{centre:.1}" y="{:.1}" text-anchor="middle" fill="{KILL_COLOUR}" font-weight="bold">{label}</text>"#,
        top - 4.0
    );
}

/// Publish→delivery latency per message against the run's time axis, under the zooms
/// (`top` is where this band starts).
pub(super) fn latency(
    svg: &mut String,
    lat: &[Latency],
    faults: &[u64],
    time: &TimeAxis,
    top: f64,
) {
    let mut sorted: Vec<u64> = lat.iter().map(Latency::ms).collect();
    sorted.sort_unstable();
    let worst = lat.iter().max_by_key(|l| l.ms());
    let title = match (worst, sorted.get(sorted.len() / 2)) {
        (Some(w), Some(median)) => format!(
            "publish → delivery latency per message: median {median} ms, max {} ms (seq {})",
            w.ms(),
            w.seq
        ),
        _ => "publish → delivery latency per message".to_string(),
    };
    heading(svg, MARGIN_LEFT, top + 18.0, &title);
    let plot = time.panel(
        svg,
        (top + 30.0, top + LATENCY_H - 45.0),
        count_scale(worst.map_or(1, Latency::ms), 5.0, 1.05),
        "latency (ms)",
    );
    for &at_ms in faults {
        plot.fault_line(svg, time.secs(at_ms));
    }
    for l in lat {
        let _ = writeln!(
            svg,
            r#"<rect class="latency" x="{:.1}" y="{:.1}" width="3" height="3" fill="{}"/>"#,
            plot.px(time.secs(l.delivery.at_ms)) - 1.5,
            plot.py(l.ms() as f64) - 1.5,
            colour(l.delivery.source)
        );
    }
    if lat.is_empty() {
        plot.note(
            svg,
            "no publish times: run test_publisher with --publish-log FILE and give report --published FILE",
            "",
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::report::fixtures::{one_failover, steady};
    use crate::report::{DEFAULT_FAULT_LABEL, render_svg};

    #[test]
    fn svg_zooms_on_the_silence_around_each_fault() {
        // Primary until 1500, kill at 1550, backup from 2750: a 1250 ms silence.
        let svg = render_svg(&one_failover(), &[], &[1550], DEFAULT_FAULT_LABEL, "zoom");
        assert!(svg.contains(r#"<g id="zoom-1">"#), "{svg}");
        assert!(!svg.contains(r#"<g id="zoom-2">"#));
        assert!(svg.contains(">1250 ms without a delivery</text>"), "{svg}");
        assert_eq!(
            svg.matches(r#"class="tick""#).count(),
            10,
            "every delivery is in the zoom"
        );
        // No fault, no zoom: the picture is the overview and the latency panel.
        let svg = render_svg(
            &steady(1..=3),
            &[(950, 1)],
            &[],
            DEFAULT_FAULT_LABEL,
            "calm",
        );
        assert!(!svg.contains("zoom"), "{svg}");
        assert_eq!(svg.matches(r#"class="latency""#).count(), 1);
        assert!(svg.contains(r#"height="760""#), "{svg}");
    }
}
