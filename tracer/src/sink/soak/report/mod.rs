//! A self-contained HTML report: tables and line charts drawn by plotters as inline SVG. No
//! scripts, no fonts, no network: the file opens anywhere, also from a CI artifact.
use std::fmt::Write as _;

use plotters::{coord::Shift, prelude::*};

/// One series of a chart.
#[derive(Clone, Debug, Default)]
pub struct Line {
    pub name: String,
    /// `(seconds since start, value)`.
    pub points: Vec<(f64, f64)>,
    /// Index into the palette: related lines (one cgroup's usage and working set) share it.
    pub color: usize,
    pub stroke: Stroke,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stroke {
    #[default]
    Solid,
    Dashed,
    /// Thin: a fitted trend rather than a measurement.
    Trend,
}

#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    /// Threshold lines: `(label, value)`.
    pub limits: Vec<(String, f64)>,
    /// Seconds since start where something happened (OOM kills), drawn as red verticals.
    pub marks: Vec<f64>,
    /// Logarithmic value axis (latencies spanning decades); values ≤ 0 are left out.
    pub log_y: bool,
    /// The value axis starts at zero (counts, rates); otherwise it fits the data (memory).
    pub zero: bool,
    /// Shown instead of the chart when there is nothing to draw.
    pub empty: String,
}

#[derive(Clone, Debug, Default)]
pub struct Table {
    pub caption: String,
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub title: String,
    /// The banner: pass (green) or not (red), and its text.
    pub ok: bool,
    pub banner: String,
    pub facts: Vec<(String, String)>,
    pub tables_before: Vec<Table>,
    pub charts: Vec<Chart>,
    pub tables_after: Vec<Table>,
    /// Length of the run, for the time axis unit.
    pub span_secs: f64,
}

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 340;
/// Series colours (Tableau 10): distinct on screen and in print.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (214, 39, 40),
];
/// A limit further than this from the data (in its axis' terms) is named, not drawn.
const LIMIT_REACH: f64 = 5.0;

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The time axis' unit for a run this long: (divisor, name).
pub fn time_unit(span_secs: f64) -> (f64, &'static str) {
    if span_secs <= 900.0 {
        (1.0, "s")
    } else if span_secs <= 36_000.0 {
        (60.0, "min")
    } else {
        (3600.0, "h")
    }
}

fn value_label(v: f64) -> String {
    let a = v.abs();
    let text = if a == 0.0 {
        return "0".into();
    } else if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

fn line_color(line: &Line) -> RGBColor {
    let (r, g, b) = PALETTE[line.color % PALETTE.len()];
    RGBColor(r, g, b)
}

const LIMIT_COLOR: RGBColor = RGBColor(214, 0, 0);
const MARK_COLOR: RGBColor = RGBColor(200, 0, 0);

/// Which limits are drawn (the others are too far from the data to share its axis).
fn drawn_limits(chart: &Chart) -> Vec<&(String, f64)> {
    let (lo, hi) = data_range(chart);
    let y = |v: f64| if chart.log_y { v.log10() } else { v };
    chart
        .limits
        .iter()
        .filter(|(_, v)| v.is_finite() && (!chart.log_y || *v > 0.0))
        .filter(|(_, v)| {
            let v = y(*v);
            if chart.log_y {
                let reach = LIMIT_REACH.log10();
                v <= hi + reach && v >= lo - reach
            } else {
                v <= hi.max(0.0) * LIMIT_REACH
            }
        })
        .collect()
}

/// The data's extent on the value axis (log10 on a log axis).
fn data_range(chart: &Chart) -> (f64, f64) {
    chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite() && (!chart.log_y || *v > 0.0))
        .map(|v| if chart.log_y { v.log10() } else { v })
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

/// The chart as an `<svg>` element (without the xmlns attribute, which HTML does not need).
pub fn svg(chart: &Chart, span_secs: f64) -> Result<String, String> {
    let mut buf = String::new();
    draw(chart, span_secs, &mut buf).map_err(|err| format!("drawing {}: {err}", chart.title))?;
    Ok(buf.replacen(r#" xmlns="http://www.w3.org/2000/svg""#, "", 1))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(chart: &Chart, span_secs: f64, buf: &mut String) -> DrawResult {
    let (unit, unit_name) = time_unit(span_secs);
    let log_y = chart.log_y;
    let y = |v: f64| if log_y { v.log10() } else { v };
    let keep = |v: f64| v.is_finite() && (!log_y || v > 0.0);
    let (mut lo, mut hi) = data_range(chart);
    let limits = drawn_limits(chart);
    for (_, v) in &limits {
        lo = lo.min(y(*v));
        hi = hi.max(y(*v));
    }
    if chart.zero {
        lo = lo.min(0.0);
    }
    let (lo, hi) = if log_y {
        // Whole decades, one tick each: 0.01, 0.1, 1, 10 ms.
        ((lo - 0.05).floor(), (hi + 0.05).ceil())
    } else {
        let pad = ((hi - lo) * 0.08)
            .max(hi.abs() * 0.02)
            .max(if hi <= 0.0 { 1.0 } else { 1e-6 });
        let lo = if chart.zero && lo >= 0.0 {
            lo
        } else {
            lo - pad
        };
        (lo, hi + pad)
    };
    let y_labels = if log_y { (hi - lo) as usize + 1 } else { 10 };
    let x_max = (span_secs / unit).max(1e-3);

    let root = SVGBackend::with_string(buf, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(78)
        .build_cartesian_2d(0.0..x_max, lo..hi)?;
    let y_fmt = move |v: &f64| value_label(if log_y { 10f64.powf(*v) } else { *v });
    c.configure_mesh()
        .x_desc(format!("time since start ({unit_name})"))
        .y_desc(chart.y_label.as_str())
        .y_label_formatter(&y_fmt)
        .y_labels(y_labels)
        .x_label_formatter(&|v| value_label(*v))
        .label_style(("sans-serif", 17))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let x = |t: f64| t / unit;
    for line in &chart.lines {
        let color = line_color(line);
        let points: Vec<(f64, f64)> = line
            .points
            .iter()
            .filter(|p| p.0.is_finite() && keep(p.1))
            .map(|p| (x(p.0), y(p.1)))
            .collect();
        match line.stroke {
            Stroke::Solid => {
                c.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
            }
            Stroke::Dashed => {
                let style = color.stroke_width(2);
                c.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))?;
            }
            Stroke::Trend => {
                let style = color.mix(0.7).stroke_width(1);
                c.draw_series(LineSeries::new(points.clone(), style))?;
            }
        }
        if points.len() <= 120 && line.stroke != Stroke::Trend {
            c.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        }
    }
    for (_, v) in limits {
        let v = y(*v);
        let style = LIMIT_COLOR.stroke_width(1);
        c.draw_series(LineSeries::new(vec![(0.0, v), (x_max, v)], style))?;
    }
    for t in &chart.marks {
        let style = MARK_COLOR.mix(0.6).stroke_width(2);
        c.draw_series(LineSeries::new(vec![(x(*t), lo), (x(*t), hi)], style))?;
    }
    present(&root)
}

/// The chart's key, in HTML under it (a key inside the plot would hide data).
fn legend(out: &mut String, chart: &Chart) {
    let hex = |c: RGBColor| format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2);
    let mut item = |color: RGBColor, glyph: &str, label: &str| {
        let _ = writeln!(
            out,
            "<span class=\"key\"><span style=\"color:{}\">{glyph}</span> {}</span>",
            hex(color),
            escape(label)
        );
    };
    for line in &chart.lines {
        let glyph = match line.stroke {
            Stroke::Solid => "&#9473;&#9473;",
            Stroke::Dashed => "&#9549;&#9549;",
            Stroke::Trend => "&#9472;&#9472;",
        };
        item(line_color(line), glyph, &line.name);
    }
    let drawn = drawn_limits(chart);
    for (label, value) in &chart.limits {
        let shown = drawn.iter().any(|(l, v)| l == label && v == value);
        let text = if shown {
            format!("limit {label}")
        } else {
            format!("limit {label} (off the scale)")
        };
        item(LIMIT_COLOR, "&#9472;&#9472;", &text);
    }
    if !chart.marks.is_empty() {
        let text = format!("OOM kill ({})", chart.marks.len());
        item(MARK_COLOR, "&#9475;", &text);
    }
}

fn present(root: &DrawingArea<SVGBackend, Shift>) -> DrawResult {
    root.present()?;
    Ok(())
}

fn table(out: &mut String, table: &Table) {
    let _ = write!(
        out,
        "<table><caption>{}</caption><tr>",
        escape(&table.caption)
    );
    for h in &table.head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1140px}\
h1{font-size:24px}.banner{padding:10px 14px;border-radius:4px;font-weight:bold;color:#fff}\
.ok{background:#2e7d32}.bad{background:#c62828}table{border-collapse:collapse;margin:14px 0}\
caption{text-align:left;font-weight:bold;padding:4px 0}th,td{border:1px solid #ccc;\
padding:3px 8px;text-align:left;font-size:14px}dl{display:grid;grid-template-columns:max-content \
auto;gap:2px 14px}dt{color:#555}dd{margin:0}figure{margin:18px 0}.empty{color:#666;\
font-style:italic}figcaption{font-size:14px;margin-left:90px}.key{margin-right:18px;\
white-space:nowrap}";

pub fn html(report: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{}</h1>\n<p class=\"banner {}\">{}</p>\n<dl>",
        escape(&report.title),
        escape(&report.title),
        if report.ok { "ok" } else { "bad" },
        escape(&report.banner)
    );
    for (k, v) in &report.facts {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
    }
    out.push_str("</dl>\n");
    report.tables_before.iter().for_each(|t| table(&mut out, t));
    for chart in &report.charts {
        let drawable = chart.lines.iter().any(|l| {
            l.points
                .iter()
                .any(|p| p.1.is_finite() && (!chart.log_y || p.1 > 0.0))
        });
        out.push_str("<figure>");
        match drawable.then(|| svg(chart, report.span_secs)) {
            Some(Ok(svg)) => {
                out.push_str(&svg);
                out.push_str("<figcaption>");
                legend(&mut out, chart);
                out.push_str("</figcaption>");
            }
            Some(Err(err)) => {
                let _ = write!(out, "<p class=\"empty\">{}</p>", escape(&err));
            }
            None => {
                let _ = write!(
                    out,
                    "<h3>{}</h3><p class=\"empty\">{}</p>",
                    escape(&chart.title),
                    escape(&chart.empty)
                );
            }
        }
        out.push_str("</figure>\n");
    }
    report.tables_after.iter().for_each(|t| table(&mut out, t));
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests;
