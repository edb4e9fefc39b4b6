//! A small hand-written SVG line chart (no fonts or system libraries needed: text is left
//! to the viewer): throughput and p99 latency against concurrency, one line per series.

use std::fmt::Write;

/// One line of the chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Stroke colour (`#rrggbb`).
    pub color: String,
    /// Dashed line.
    pub dashed: bool,
    /// `(concurrency, throughput per second, p99 in µs)` points.
    pub points: Vec<(f64, f64, f64)>,
}

const PANEL_W: f64 = 470.0;
const PANEL_H: f64 = 330.0;
/// The room around a panel's plot area for its axes' labels and titles.
struct Margins {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

const MARGIN: Margins = Margins {
    left: 70.0,
    right: 20.0,
    top: 52.0,
    bottom: 45.0,
};
const LEGEND_ROW: f64 = 20.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// "Nice" upper bound and step for a linear axis from 0 to `max`.
fn nice_linear(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn fmt_count(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", trim(v / 1000.0))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

fn fmt_us(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{} s", trim(v / 1_000_000.0))
    } else if v >= 1000.0 {
        format!("{} ms", trim(v / 1000.0))
    } else {
        format!("{} µs", trim(v))
    }
}

/// A y axis: linear from 0, or logarithmic over whole decades.
#[derive(Clone, Copy)]
enum YScale {
    Linear { hi: f64 },
    Log { lo: f64, llo: f64, lhi: f64 },
}

impl YScale {
    /// The scale for values in `ymin..=ymax` and its labelled ticks.
    fn fit(log: bool, ymin: f64, ymax: f64) -> (Self, Vec<(f64, String)>) {
        if log {
            // No positive data: an arbitrary decade rather than an absurd range.
            let (ymin, ymax) = if ymin > 0.0 && ymin <= ymax && ymax.is_finite() {
                (ymin, ymax)
            } else {
                (10.0, 100.0)
            };
            let lo = 10f64.powf(ymin.log10().floor());
            let hi = 10f64.powf(ymax.log10().ceil()).max(lo * 10.0);
            let (llo, lhi) = (lo.log10(), hi.log10());
            let ticks = (llo.round() as i32..=lhi.round() as i32)
                .map(|k| {
                    let v = 10f64.powi(k);
                    (v, fmt_us(v))
                })
                .collect();
            (YScale::Log { lo, llo, lhi }, ticks)
        } else {
            let (hi, step) = nice_linear(ymax);
            let n = (hi / step).round() as i32;
            let ticks = (0..=n)
                .map(|i| {
                    let v = f64::from(i) * step;
                    (v, fmt_count(v))
                })
                .collect();
            (YScale::Linear { hi }, ticks)
        }
    }

    fn map(self, v: f64, top: f64, bottom: f64) -> f64 {
        match self {
            YScale::Linear { hi } => bottom - v / hi * (bottom - top),
            YScale::Log { lo, llo, lhi } => {
                bottom - (v.max(lo).log10() - llo) / (lhi - llo) * (bottom - top)
            }
        }
    }
}

struct Panel<'a> {
    x0: f64,
    title: &'a str,
    log_y: bool,
    y_of: fn(&(f64, f64, f64)) -> f64,
}

/// Renders the two panels (throughput left, p99 right, concurrency on a log axis) and a
/// legend. `xs` are the concurrency levels to tick.
pub fn render(title: &str, xs: &[f64], series: &[Series]) -> String {
    let legend_rows = series.len().div_ceil(3).max(1) as f64;
    let width = 2.0 * PANEL_W;
    let height = PANEL_H + MARGIN.top + 20.0 + legend_rows * LEGEND_ROW + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="20" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        esc(title)
    );
    let panels = [
        Panel {
            x0: 0.0,
            title: "throughput (calls/s) vs concurrency",
            log_y: false,
            y_of: |p| p.1,
        },
        Panel {
            x0: PANEL_W,
            title: "p99 latency vs concurrency (log scale)",
            log_y: true,
            y_of: |p| p.2,
        },
    ];
    let (xmin, xmax) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmin < xmax {
        (xmin.max(1.0), xmax)
    } else {
        (1.0, 2.0)
    };
    for panel in &panels {
        let left = panel.x0 + MARGIN.left;
        let right = panel.x0 + PANEL_W - MARGIN.right;
        let top = MARGIN.top;
        let bottom = PANEL_H - MARGIN.bottom + MARGIN.top;
        let ys: Vec<f64> = series
            .iter()
            .flat_map(|s| s.points.iter().map(panel.y_of))
            .filter(|v| *v > 0.0 && v.is_finite())
            .collect();
        let ymax = ys.iter().copied().fold(0.0, f64::max);
        let ymin = ys.iter().copied().fold(f64::MAX, f64::min);
        let sx =
            |x: f64| left + (x.log2() - xmin.log2()) / (xmax.log2() - xmin.log2()) * (right - left);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
            (left + right) / 2.0,
            top - 8.0,
            esc(panel.title)
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
            right - left,
            bottom - top
        );
        // y axis
        let (scale, ticks) = YScale::fit(panel.log_y, ymin, ymax);
        let sy = |v: f64| scale.map(v, top, bottom);
        for (v, label) in &ticks {
            let y = sy(*v);
            let _ = writeln!(
                svg,
                r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                left - 6.0,
                y + 4.0,
                esc(label)
            );
        }
        for &x in xs {
            let px = sx(x);
            let _ = writeln!(
                svg,
                r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="#e4e4e4"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
                bottom + 16.0,
                trim(x)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">concurrent callers</text>"#,
            (left + right) / 2.0,
            bottom + 34.0
        );
        for s in series {
            let mut pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.0 > 0.0 && (panel.y_of)(p) > 0.0)
                .map(|p| (sx(p.0), sy((panel.y_of)(p))))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if pts.is_empty() {
                continue;
            }
            let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                path.join(" "),
                s.color
            );
            for (x, y) in pts {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"/>"#,
                    s.color
                );
            }
        }
    }
    // legend
    // Below the axis titles (plot bottom + ticks + title).
    let legend_top = PANEL_H + MARGIN.top + 20.0;
    for (i, s) in series.iter().enumerate() {
        let col = (i % 3) as f64;
        let row = (i / 3) as f64;
        let x = 40.0 + col * (width - 80.0) / 3.0;
        let y = legend_top + row * LEGEND_ROW;
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 28.0,
            s.color,
            x + 34.0,
            y + 4.0,
            esc(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_and_axis() {
        let svg = render(
            "t <&>",
            &[1.0, 16.0, 128.0],
            &[
                Series {
                    name: "proxyless (3 replicas)".into(),
                    color: "#1f77b4".into(),
                    dashed: false,
                    points: vec![
                        (1.0, 3000.0, 400.0),
                        (16.0, 20000.0, 2000.0),
                        (128.0, 25000.0, 15000.0),
                    ],
                },
                Series {
                    name: "envoy".into(),
                    color: "#d62728".into(),
                    dashed: true,
                    points: vec![(1.0, 900.0, 1500.0), (128.0, 5000.0, 90000.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("proxyless (3 replicas)"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert!(svg.contains(">128<"));
        assert!(svg.contains("100 ms"), "log axis ticks in time units");
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn empty_and_degenerate_input_still_renders() {
        let svg = render("empty", &[], &[]);
        assert!(svg.contains("</svg>"));
        let svg = render(
            "zeros",
            &[1.0],
            &[Series {
                name: "z".into(),
                color: "#000".into(),
                dashed: false,
                points: vec![(1.0, 0.0, 0.0)],
            }],
        );
        assert!(!svg.contains("NaN"), "{svg}");
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_linear(23_000.0), (25_000.0, 5_000.0));
        assert_eq!(nice_linear(0.0), (1.0, 0.2));
        assert_eq!(fmt_count(2500.0), "2.5k");
        assert_eq!(fmt_us(1000.0), "1 ms");
    }
}
