//! Drawing primitives the picture's bands share: a panel's scales and axes ([`Plot`]), tick
//! steps and labels, the colours, headings, and escaping text for SVG.

use std::fmt::Write as _;

use super::Source;

/// Picture width and the side margins of every panel, in SVG user units (pixels at 100 %).
pub(super) const SVG_W: f64 = 900.0;
pub(super) const MARGIN_LEFT: f64 = 75.0;
pub(super) const MARGIN_RIGHT: f64 = 25.0;
pub(super) const PRIMARY_COLOUR: &str = "#1f77b4";
pub(super) const BACKUP_COLOUR: &str = "#ff7f0e";
pub(super) const KILL_COLOUR: &str = "#d62728";
pub(super) const SILENCE_COLOUR: &str = "#fcdcdc";

/// The colour of a broker's deliveries.
pub(super) fn colour(source: Source) -> &'static str {
    match source {
        Source::Primary => PRIMARY_COLOUR,
        Source::Backup => BACKUP_COLOUR,
    }
}

/// A broker's name in the legend and the lanes.
pub(super) fn broker_name(source: Source) -> &'static str {
    match source {
        Source::Primary => "primary",
        Source::Backup => "backup",
    }
}

/// Escapes text for use inside SVG/XML text and attribute values.
pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0.
            c if c.is_control() && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks over `span`.
pub(super) fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    step.max(f64::MIN_POSITIVE)
}

/// Formats a tick value with as many decimals as the step needs.
fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let s = format!("{value:.decimals$}");
    // Avoid "-0".
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// A count axis from 0 for values up to `hi` (at least 1): a whole-number tick step giving
/// about `target` ticks, and the range, its top `grow` times `hi` rounded up to a tick.
pub(super) fn count_scale(hi: u64, target: f64, grow: f64) -> (f64, (f64, f64)) {
    let hi = hi.max(1) as f64;
    let step = nice_step(hi, target).max(1.0);
    (step, (0.0, (hi * grow / step).ceil() * step))
}

/// The tick values from `lo` to `hi` (inclusive, with a little slack) at multiples of `step`.
fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// One panel's plotting area: where it sits on the picture (pixels) and the data ranges it
/// shows (`x` and `y`, each `(low, high)` with `low < high`).
pub(super) struct Plot {
    pub(super) left: f64,
    pub(super) right: f64,
    pub(super) top: f64,
    pub(super) bottom: f64,
    pub(super) x: (f64, f64),
    pub(super) y: (f64, f64),
}

impl Plot {
    /// Where data value `x` lies across the picture.
    pub(super) fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * (self.right - self.left)
    }

    /// Where data value `y` lies down the picture.
    pub(super) fn py(&self, y: f64) -> f64 {
        self.bottom - (y - self.y.0) / (self.y.1 - self.y.0) * (self.bottom - self.top)
    }

    /// Draws the grid, tick labels, frame and the x axis's name; with `y` (its tick step
    /// and name) the y axis too.
    pub(super) fn axes(&self, svg: &mut String, x_step: f64, x_name: &str, y: Option<(f64, &str)>) {
        let x_ticks = ticks(self.x.0, self.x.1, x_step);
        let y_ticks = y.map_or(Vec::new(), |(step, _)| ticks(self.y.0, self.y.1, step));
        let (left, right, top, bottom) = (self.left, self.right, self.top, self.bottom);
        let _ = writeln!(svg, r##"<g stroke="#e0e0e0" stroke-width="1">"##);
        for &x in &x_ticks {
            let _ = writeln!(
                svg,
                r#"<line x1="{0:.1}" y1="{top:.1}" x2="{0:.1}" y2="{bottom:.1}"/>"#,
                self.px(x)
            );
        }
        for &y in &y_ticks {
            let _ = writeln!(
                svg,
                r#"<line x1="{left:.1}" y1="{0:.1}" x2="{right:.1}" y2="{0:.1}"/>"#,
                self.py(y)
            );
        }
        let _ = writeln!(svg, "</g>");
        let _ = writeln!(svg, r##"<g fill="#333">"##);
        for &x in &x_ticks {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                self.px(x),
                bottom + 17.0,
                tick_label(x, x_step)
            );
        }
        if let Some((step, _)) = y {
            for &y in &y_ticks {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    left - 6.0,
                    self.py(y) + 4.0,
                    tick_label(y, step)
                );
            }
        }
        let _ = writeln!(svg, "</g>");
        let _ = writeln!(
            svg,
            r##"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
            right - left,
            bottom - top
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (left + right) / 2.0,
            bottom + 36.0,
            xml_escape(x_name)
        );
        if let Some((_, name)) = y {
            let _ = writeln!(
                svg,
                r#"<text x="20" y="{0:.1}" text-anchor="middle" transform="rotate(-90 20 {0:.1})">{1}</text>"#,
                (top + bottom) / 2.0,
                xml_escape(name)
            );
        }
    }

    /// A solid red vertical line at `x`: a fault, in the panels under the overview.
    pub(super) fn fault_line(&self, svg: &mut String, x: f64) {
        let _ = writeln!(
            svg,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="{KILL_COLOUR}" stroke-width="1.5"/>"#,
            self.px(x),
            self.top,
            self.bottom
        );
    }

    /// A grey note in the middle of the plot, for a panel with nothing to show; `attrs` are
    /// further attributes of the text (`r#" font-size="16""#`).
    pub(super) fn note(&self, svg: &mut String, text: &str, attrs: &str) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888"{attrs}>{}</text>"##,
            (self.left + self.right) / 2.0,
            (self.top + self.bottom) / 2.0,
            xml_escape(text)
        );
    }
}

/// A panel's heading, left-aligned above its plot.
pub(super) fn heading(svg: &mut String, x: f64, y: f64, text: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" font-weight="bold">{}</text>"#,
        xml_escape(text)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_helpers() {
        assert_eq!(nice_step(40.0, 10.0), 5.0);
        assert_eq!(nice_step(400.0, 8.0), 50.0);
        assert_eq!(nice_step(1.0, 10.0), 0.1);
        assert_eq!(tick_label(2.5, 0.5), "2.5");
        assert_eq!(tick_label(-0.0, 0.5), "0.0");
        assert_eq!(tick_label(30.0, 5.0), "30");
        assert_eq!(ticks(0.0, 10.0, 5.0), vec![0.0, 5.0, 10.0]);
    }
}
