//! SVG line charts written by hand: two chart kinds do not justify a plotting dependency,
//! and the output opens in any browser.

use std::fmt::Write;

use super::RunSummary;

const W: f64 = 900.0;
const H: f64 = 500.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

/// Latency against percentile, x on a "nines" scale (log of 1/(1-p)), the usual
/// HdrHistogram plot: produce latency solid, end-to-end dashed, one colour per target.
/// Latency is on a log scale: targets often differ by orders of magnitude in the tail.
pub fn latency_spectrum(runs: &[RunSummary]) -> String {
    let nines = |p: f64| -(1.0 - p / 100.0).max(1e-5).log10();
    let mut series = Vec::new();
    for r in runs {
        for (kind, lat, dashed) in [
            ("produce", &r.produce_latency, false),
            ("e2e", &r.e2e_latency, true),
        ] {
            if lat.count > 0 {
                series.push(Series {
                    name: format!("{} {kind}", r.target),
                    points: lat
                        .spectrum
                        .iter()
                        .map(|&(p, us)| (nines(p), us / 1000.0))
                        .collect(),
                    dashed,
                });
            }
        }
    }
    let ticks = [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ];
    chart(
        &format!("{}: latency by percentile", title(runs)),
        "percentile",
        "latency (ms)",
        &series,
        Some(&ticks),
        true,
    )
}

/// Messages per second over the run, produced solid and consumed dashed.
pub fn throughput(runs: &[RunSummary]) -> String {
    let mut series = Vec::new();
    for r in runs {
        let produced = r
            .series
            .iter()
            .map(|t| (t.second as f64, t.produced_msgs as f64));
        let consumed = r
            .series
            .iter()
            .map(|t| (t.second as f64, t.consumed_msgs as f64));
        series.push(Series {
            name: format!("{} produced", r.target),
            points: produced.collect(),
            dashed: false,
        });
        if r.scenario.consumers > 0 {
            series.push(Series {
                name: format!("{} consumed", r.target),
                points: consumed.collect(),
                dashed: true,
            });
        }
    }
    chart(
        &format!("{}: throughput", title(runs)),
        "second",
        "messages/s",
        &series,
        None,
        false,
    )
}

fn title(runs: &[RunSummary]) -> String {
    runs.first()
        .map(|r| r.scenario.name.clone())
        .unwrap_or_default()
}

/// A "nice" upper bound (1, 2 or 5 times a power of ten) at or above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.4}").trim_end_matches('0').to_string()
    }
}

fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_ticks: Option<&[(f64, &str)]>,
    log_y: bool,
) -> String {
    let all = series.iter().flat_map(|s| &s.points);
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |v: f64| LEFT + v / x_max * pw;
    let (y_ticks, y): (Vec<f64>, Box<dyn Fn(f64) -> f64>) = if log_y {
        // Decades from below the smallest positive value to above the largest.
        let positive = all.map(|p| p.1).filter(|&v| v > 0.0);
        let lo = positive
            .clone()
            .fold(f64::MAX, f64::min)
            .min(1.0)
            .log10()
            .floor();
        let hi = positive
            .fold(0.0, f64::max)
            .max(1.0)
            .log10()
            .ceil()
            .max(lo + 1.0);
        let ticks = (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect();
        let to_y = move |v: f64| TOP + ph - (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo) * ph;
        (ticks, Box::new(to_y))
    } else {
        let y_max = nice_max(all.map(|p| p.1).fold(0.0, f64::max));
        let ticks = (0..=5).map(|i| y_max * i as f64 / 5.0).collect();
        (ticks, Box::new(move |v: f64| TOP + ph - v / y_max * ph))
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="25" font-size="16" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        esc(title)
    );
    for v in y_ticks {
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y(v) + 4.0,
            label(v),
            y = y(v)
        );
    }
    let ticks: Vec<(f64, String)> = match x_ticks {
        Some(t) => t.iter().map(|&(v, s)| (v, s.to_string())).collect(),
        None => {
            let step = nice_max(x_max / 8.0);
            (0..)
                .map(|i| i as f64 * step)
                .take_while(|&v| v <= x_max)
                .map(|v| (v, label(v)))
                .collect()
        }
    };
    for (v, s) in ticks {
        let _ = writeln!(
            o,
            r##"<line x1="{xv}" x2="{xv}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{xv}" y="{}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            esc(&s),
            xv = x(v)
        );
    }
    let _ = writeln!(
        o,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 15.0,
        esc(x_label)
    );
    let _ = writeln!(
        o,
        r#"<text transform="translate(20 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        esc(y_label)
    );
    let mut colour = 0;
    let mut last_target = None;
    for (i, s) in series.iter().enumerate() {
        // Series of one target (solid + dashed) share a colour.
        let target = s.name.rsplit_once(' ').map(|(t, _)| t.to_string());
        if i > 0 && target != last_target {
            colour += 1;
        }
        last_target = target;
        let c = COLORS[colour % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{}"/>"#,
            pts.join(" ")
        );
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = W - RIGHT + 15.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 25.0,
            lx + 30.0,
            ly + 4.0,
            esc(&s.name)
        );
    }
    o.push_str("</svg>\n");
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
    }

    #[test]
    fn chart_is_well_formed() {
        let s = Series {
            name: "a<b> produce".into(),
            points: vec![(0.0, 1.0), (2.0, 3.0)],
            dashed: true,
        };
        let svg = chart("t", "x", "y", std::slice::from_ref(&s), None, false);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(chart("t", "x", "y", &[s], None, true).contains("<polyline"));
        assert!(svg.contains("a&lt;b&gt; produce"));
        assert!(svg.contains("<polyline"));
    }
}
