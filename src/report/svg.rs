//! The picture of a run: [`render_svg`] lays out its bands (the whole run, a zoom on each
//! fault, each message's latency) on the time axis they share, and draws each band with its
//! own module.

use std::fmt::Write as _;

use super::layout::{LATENCY_H, OVERVIEW_H, TimeAxis, ZOOM_H, fault_name};
use super::overview::overview;
use super::panels::{latency, zoom};
use super::plot::{MARGIN_LEFT, MARGIN_RIGHT, SVG_W, xml_escape};
use super::{Delivery, latencies};

/// How the picture labels a fault unless told otherwise.
pub const DEFAULT_FAULT_LABEL: &str = "primary killed";

/// Renders a self-contained SVG of a run, 900 wide, in three bands:
/// - the whole run: sequence number (y) against seconds since the first delivery (x), one
///   dot per delivery coloured by source (primary blue, backup orange), a legend, and each
///   fault (unix ms) as a red dashed vertical line labelled `fault_label` (numbered when
///   there are several);
/// - when there are faults, one zoomed panel per fault ([`ZOOM_MS`](super::ZOOM_MS) before
///   it, and until a second after the silence ends): each delivery a tick at its time, in a
///   lane for each broker, and the silence across the fault shaded and labelled in ms;
/// - the publish→delivery latency of each message (`published`: `(unix_ms, seq)` pairs from
///   test_publisher's publish log) against the same time axis as the whole run, so the
///   backlog the backup works off after a takeover shows as a spike.
pub fn render_svg(
    deliveries: &[Delivery],
    published: &[(u64, u64)],
    faults_at_ms: &[u64],
    fault_label: &str,
    title: &str,
) -> String {
    let mut faults = faults_at_ms.to_vec();
    faults.sort_unstable();
    if deliveries.is_empty() {
        faults.clear();
    }
    let zoom_h = if faults.is_empty() { 0.0 } else { ZOOM_H };
    let height = OVERVIEW_H + zoom_h + LATENCY_H;

    let mut svg = String::new();
    // `write!` to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{height}" viewBox="0 0 {SVG_W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{SVG_W}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="25" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        SVG_W / 2.0,
        xml_escape(title)
    );
    let time = TimeAxis::new(deliveries, &faults);

    let _ = writeln!(svg, r#"<g id="overview">"#);
    overview(&mut svg, deliveries, &faults, &time, fault_label);
    let _ = writeln!(svg, "</g>");
    let n = faults.len() as f64;
    let width = (SVG_W - MARGIN_LEFT - MARGIN_RIGHT - 30.0 * (n - 1.0)) / n;
    for (i, &at_ms) in faults.iter().enumerate() {
        let left = MARGIN_LEFT + i as f64 * (width + 30.0);
        let name = fault_name(fault_label, i, faults.len());
        let _ = writeln!(svg, r#"<g id="zoom-{}">"#, i + 1);
        zoom(&mut svg, deliveries, at_ms, &name, (left, left + width));
        let _ = writeln!(svg, "</g>");
    }
    let _ = writeln!(svg, r#"<g id="latency">"#);
    latency(
        &mut svg,
        &latencies(deliveries, published),
        &faults,
        &time,
        OVERVIEW_H + zoom_h,
    );
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, "</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Source;
    use crate::report::fixtures::{d, one_failover, steady};
    use crate::report::plot::{BACKUP_COLOUR, PRIMARY_COLOUR};

    #[test]
    fn svg_marks_every_fault_with_its_label() {
        let svg = render_svg(
            &one_failover(),
            &[],
            &[3000, 1550],
            "primary <stopped>",
            "two",
        );
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            2 + 1,
            "2 markers + 1 legend line"
        );
        assert!(svg.contains("primary &lt;stopped&gt; (1)</text>"), "{svg}");
        assert!(svg.contains("primary &lt;stopped&gt; (2)</text>"), "{svg}");
        assert!(
            svg.contains(">primary &lt;stopped&gt;</text>"),
            "legend: {svg}"
        );
        assert!(!svg.contains("primary killed"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn svg_is_self_contained_and_marks_the_kill() {
        let mut got = steady(1..=6);
        got.push(d(2750, Source::Backup, 7));
        let svg = render_svg(
            &got,
            &[],
            &[1550],
            DEFAULT_FAULT_LABEL,
            "run <1> & \"more\"",
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<circle").count(),
            7 + 2,
            "7 dots + 2 legend dots"
        );
        assert!(svg.contains(PRIMARY_COLOUR) && svg.contains(BACKUP_COLOUR));
        assert!(svg.contains("primary killed"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains("run &lt;1&gt; &amp; &quot;more&quot;"));
        assert!(!svg.contains("<1>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn svg_copes_with_no_data() {
        let svg = render_svg(&[], &[], &[], DEFAULT_FAULT_LABEL, "empty");
        assert!(svg.contains("no deliveries"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let svg = render_svg(
            &[d(0, Source::Primary, 1)],
            &[],
            &[0],
            DEFAULT_FAULT_LABEL,
            "one",
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
