//! The picture's top band, the whole run: each delivery a dot at its time and sequence number,
//! coloured by the broker that delivered it, each fault a dashed line, and a legend.

use std::fmt::Write as _;

use super::layout::{OVERVIEW_H, TimeAxis, fault_name};
use super::plot::{KILL_COLOUR, broker_name, colour, count_scale, xml_escape};
use super::{Delivery, Source};

/// The whole run: sequence number against time, the faults dashed, a legend.
pub(super) fn overview(
    svg: &mut String,
    deliveries: &[Delivery],
    faults: &[u64],
    time: &TimeAxis,
    fault_label: &str,
) {
    let highest = deliveries.iter().map(|d| d.seq).max().unwrap_or(0);
    let plot = time.panel(
        svg,
        (45.0, OVERVIEW_H - 55.0),
        count_scale(highest, 8.0, 1.02),
        "sequence number",
    );

    // The faults, under the dots so they never hide one.
    let label = xml_escape(fault_label);
    // Rough width of the label (12 px sans-serif), to keep it inside the plot and the legend.
    let label_w = 6.5 * fault_label.chars().count() as f64;
    for (i, &at_ms) in faults.iter().enumerate() {
        let x = plot.px(time.secs(at_ms));
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{KILL_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
            plot.top, plot.bottom
        );
        // Label to the left of the line when it sits near the right edge.
        let (lx, anchor) = if x > plot.right - (label_w + 19.0) {
            (x - 4.0, "end")
        } else {
            (x + 4.0, "start")
        };
        let text = xml_escape(&fault_name(fault_label, i, faults.len()));
        // Each label one row lower than the one before, so close faults stay readable.
        let _ = writeln!(
            svg,
            r#"<text x="{lx:.1}" y="{:.1}" fill="{KILL_COLOUR}" text-anchor="{anchor}">{text}</text>"#,
            plot.top + 14.0 * (i + 1) as f64
        );
    }

    // One dot per delivery; backup drawn last so a late takeover is visible on top.
    for source in [Source::Primary, Source::Backup] {
        let _ = writeln!(svg, r#"<g fill="{}" fill-opacity="0.8">"#, colour(source));
        for d in deliveries.iter().filter(|d| d.source == source) {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5"/>"#,
                plot.px(time.secs(d.at_ms)),
                plot.py(d.seq as f64)
            );
        }
        let _ = writeln!(svg, "</g>");
    }

    if deliveries.is_empty() {
        plot.note(svg, "no deliveries", r#" font-size="16""#);
    }

    // Legend, top left inside the plot (the dots rise to the right, so that corner is free).
    let count = |s: Source| deliveries.iter().filter(|d| d.source == s).count();
    let (lx, ly) = (plot.left + 10.0, plot.top + 10.0);
    let has_faults = !faults.is_empty();
    let legend_w = if has_faults {
        (label_w + 36.0).max(150.0)
    } else {
        150.0
    };
    let _ = writeln!(
        svg,
        r##"<rect x="{lx:.1}" y="{ly:.1}" width="{legend_w:.0}" height="{}" fill="white" fill-opacity="0.9" stroke="#999"/>"##,
        if has_faults { 66 } else { 46 }
    );
    let mut row = ly + 16.0;
    for source in [Source::Primary, Source::Backup] {
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/><text x="{:.1}" y="{:.1}">{} ({})</text>"#,
            lx + 12.0,
            row - 4.0,
            colour(source),
            lx + 24.0,
            row,
            broker_name(source),
            count(source)
        );
        row += 20.0;
    }
    if has_faults {
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{KILL_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            lx + 6.0,
            row - 4.0,
            lx + 18.0,
            row - 4.0,
            lx + 24.0,
            row
        );
    }
}
