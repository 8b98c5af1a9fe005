//! `ferrolb lab --plot FILE.svg`: the failover timeline as a picture — every client request
//! as a dot at (time, node that answered), failed requests on their own row in red, each
//! failover as a band from the signal to the first request served by another node, with one
//! label per failover carrying the duration the scenario measured, and a legend.
//!
//! Everything that decides where something goes is a pure function of the data ([`layout`]
//! with [`label_text`], [`choose_labels`], [`place_labels`], [`flow_legend`], [`text_width`]);
//! [`render`] only draws what they decided.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::probe::{percentile, Outcome, Sample};
use super::scenario::Failover;

/// Width of the picture in pixels, and the most it is widened to make room for labels.
const WIDTH: i32 = 1100;
const MAX_WIDTH: i32 = 2400;
/// Space kept free at every edge of the picture.
const MARGIN: i32 = 14;
/// Font sizes in SVG pixels (plotters scales the size it is given by 1/1.24 when it writes SVG).
const CAPTION_PX: f64 = 18.0;
const SUMMARY_PX: f64 = 13.0;
const LABEL_PX: f64 = 13.0;
const AXIS_PX: f64 = 12.0;
const LEGEND_PX: f64 = 12.0;
/// The most rows of labels before shorter labels are used.
const MAX_LANES: usize = 4;
/// Height of one row of event labels, and the box drawn around a label inside it.
const LANE_H: i32 = 22;
const BOX_H: i32 = 18;
/// Horizontal padding between a label's box and its text.
const BOX_PAD: i32 = 4;
/// Smallest free space between two label boxes of one row.
const BOX_GAP: i32 = 8;
/// Smallest free space between a leader line and a label box it passes.
const LEADER_CLEAR: i32 = 6;
/// Height of the chart (plot area, tick labels and axis titles).
const CHART_H: i32 = 330;
const Y_LABEL_AREA: i32 = 96;
const X_LABEL_AREA: i32 = 46;
const LEGEND_ROW_H: i32 = 20;

const SERVED: RGBColor = RGBColor(31, 119, 180);
const FAILED: RGBColor = RGBColor(214, 39, 40);
const CRASH: RGBColor = RGBColor(230, 110, 0);
const CRASH_TEXT: RGBColor = RGBColor(170, 70, 0);
const GRACEFUL: RGBColor = RGBColor(44, 160, 44);
const GRACEFUL_TEXT: RGBColor = RGBColor(20, 110, 20);
const IDLE: RGBColor = RGBColor(225, 225, 225);
const IDLE_ALPHA: f64 = 0.6;
const BAND_ALPHA: f64 = 0.22;

/// An axis-aligned box in pixels, `x0 <= x1`, `y0 <= y1`, edges included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl Rect {
    /// Whether the two boxes, each grown by `gap / 2` on the sides, share a pixel.
    pub fn overlaps(&self, o: &Rect, gap: i32) -> bool {
        self.x0 < o.x1 + gap && o.x0 < self.x1 + gap && self.y0 < o.y1 + gap && o.y0 < self.y1 + gap
    }

    /// Whether `self` lies inside `o`.
    pub fn inside(&self, o: &Rect) -> bool {
        self.x0 >= o.x0 && self.x1 <= o.x1 && self.y0 >= o.y0 && self.y1 <= o.y1
    }
}

/// A conservative estimate of the width of `text` in pixels at a font size of `px`, for the
/// common sans-serif faces (DejaVu Sans is the widest of them; Arial, Helvetica and Liberation
/// Sans come out narrower), so a box sized with it holds the text wherever the SVG is shown.
pub fn text_width(text: &str, px: f64) -> i32 {
    let em: f64 = text
        .chars()
        .map(|c| match c {
            'm' | 'w' | 'M' | 'W' => 1.0,
            'i' | 'j' | 'l' | 'I' | '.' | ',' | ':' | ';' | '\'' | '!' | '|' => 0.34,
            ' ' => 0.34,
            'A'..='Z' => 0.8,
            'a'..='z' | '0'..='9' => 0.66,
            c if c.is_ascii() => 0.5,
            _ => 1.0,
        })
        .sum();
    (em * px).ceil() as i32
}

/// How much a failover's label says; [`choose_labels`] takes the most it can fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// `crash node-1 → node-3: 612 ms, 3 requests failed`
    Full,
    /// `crash 612 ms, 3 failed`
    Kind,
    /// `612 ms` (the colour tells the kind)
    Duration,
}

/// The one label of a failover: the duration the scenario measured, in the words of the
/// scenario's summary, with as much around it as `detail` asks for.
pub fn label_text(f: &Failover, detail: Detail) -> String {
    let took = match f.millis {
        Some(ms) => format!("{ms:.0} ms"),
        None => "no takeover".to_string(),
    };
    match detail {
        Detail::Duration => took,
        Detail::Kind => match f.failed_requests {
            0 => format!("{} {took}", f.kind),
            n => format!("{} {took}, {n} failed", f.kind),
        },
        Detail::Full => {
            let failed = match f.failed_requests {
                0 => String::new(),
                1 => ", 1 request failed".to_string(),
                n => format!(", {n} requests failed"),
            };
            match (&f.to, f.millis) {
                (Some(to), Some(ms)) => {
                    format!("{} {} → {to}: {ms:.0} ms{failed}", f.kind, f.from)
                }
                _ => format!("{} {}: no other node answered{failed}", f.kind, f.from),
            }
        }
    }
}

/// Boxed labels at `detail` for failovers whose markers are at `anchors`, placed by
/// [`place_labels`] in `area` (left, right, top); with a `limit`, `None` when they need that
/// many rows or a leader line would cross a box.
fn boxed_labels(
    anchors: &[i32],
    failovers: &[&Failover],
    detail: Detail,
    area: (i32, i32, i32),
    limit: Option<usize>,
) -> Option<(Vec<String>, Vec<Placed>)> {
    let texts: Vec<String> = failovers.iter().map(|f| label_text(f, detail)).collect();
    let sized: Vec<(i32, i32)> = anchors
        .iter()
        .zip(&texts)
        .map(|(&a, t)| (a, text_width(t, LABEL_PX) + 2 * BOX_PAD))
        .collect();
    Some((texts, place(&sized, area, limit)?))
}

/// The boxed labels of the most detailed [`Detail`] that fits in at most `max_lanes` rows
/// with no leader line crossing a box; `None` when none does.
pub fn choose_labels(
    anchors: &[i32],
    failovers: &[&Failover],
    area: (i32, i32, i32),
    max_lanes: usize,
) -> Option<(Vec<String>, Vec<Placed>)> {
    [Detail::Full, Detail::Kind, Detail::Duration]
        .into_iter()
        .find_map(|detail| boxed_labels(anchors, failovers, detail, area, Some(max_lanes)))
}

/// Whether a leader line at `x` passes through (or within [`LEADER_CLEAR`] of) `rect`.
fn leader_crosses(x: i32, rect: &Rect) -> bool {
    x >= rect.x0 - LEADER_CLEAR && x <= rect.x1 + LEADER_CLEAR
}

/// How many times a leader line (from a box straight down at its marker, through every row
/// below) passes through or close by another label's box.
pub fn crossings(placed: &[Placed]) -> usize {
    placed
        .iter()
        .map(|a| {
            placed
                .iter()
                .filter(|b| b.lane > a.lane && leader_crosses(a.anchor, &b.rect))
                .count()
        })
        .sum()
}

/// One line summing the failovers up per kind, from the same durations the labels carry.
pub fn summary_line(failovers: &[&Failover]) -> String {
    let mut parts = Vec::new();
    for (kind, signal) in [("crash", "SIGKILL"), ("graceful", "SIGTERM")] {
        let of_kind: Vec<&&Failover> = failovers.iter().filter(|f| f.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let took: Vec<Duration> = of_kind
            .iter()
            .filter_map(|f| f.millis.map(|m| Duration::from_secs_f64(m / 1e3)))
            .collect();
        let ms = |p: f64| percentile(&took, p).map(|d| d.as_secs_f64() * 1e3);
        let missed = of_kind.len() - took.len();
        let mut part = match (took.len(), ms(50.0), ms(100.0)) {
            (1, Some(v), _) => format!("{kind} ({signal}): {v:.0} ms"),
            (n, Some(p50), Some(max)) => {
                format!("{kind} ({signal}) ×{n}: p50 {p50:.0} ms, max {max:.0} ms")
            }
            _ => format!("{kind} ({signal})"),
        };
        if missed > 0 {
            part.push_str(&format!(", {missed} without takeover"));
        }
        parts.push(part);
    }
    parts.join("  ·  ")
}

/// Where a label went: its box, its row (0 is the row farthest from the plot), and the x of
/// the marker it belongs to (its leader line runs from the box straight down at that x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub rect: Rect,
    pub lane: usize,
    pub anchor: i32,
}

/// Places one label per marker in rows above the plot. `labels` are (marker x, text width);
/// every box lies within `[left, right]` and has its marker under it; no two boxes of a row
/// come closer than [`BOX_GAP`]. Each label takes, among the places it fits in, the one
/// where the fewest leader lines cross boxes, then the highest row, then the one closest to
/// starting at its marker (so a label near `right` ends at `right` instead). Rows are
/// [`LANE_H`] apart from `top`.
pub fn place_labels(labels: &[(i32, i32)], left: i32, right: i32, top: i32) -> Vec<Placed> {
    place(labels, (left, right, top), None).expect("without a limit every label is placed")
}

/// [`place_labels`], giving up (`None`) as soon as a label would need row `limit` or a leader
/// line would cross a box.
fn place(
    labels: &[(i32, i32)],
    (left, right, top): (i32, i32, i32),
    limit: Option<usize>,
) -> Option<Vec<Placed>> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by_key(|&i| labels[i].0);
    let mut placed: Vec<Option<Placed>> = vec![None; labels.len()];
    let mut done: Vec<Placed> = Vec::new();
    let mut lanes = 0usize;
    for i in order {
        let (anchor, width) = labels[i];
        let w = width.clamp(0, right - left);
        let starts_at = anchor - 1;
        let ends_at = anchor + 1 - w;
        // Where the box may go: starting or ending at its marker, or just clear of another
        // box or leader line, as long as its marker stays under it.
        let mut xs = vec![starts_at, ends_at, left, right - w];
        for p in &done {
            xs.extend([
                p.rect.x1 + BOX_GAP + 1,
                p.rect.x0 - BOX_GAP - 1 - w,
                p.anchor + LEADER_CLEAR + 1,
                p.anchor - LEADER_CLEAR - 1 - w,
            ]);
        }
        xs.retain(|&x0| x0 >= left && x0 + w <= right && x0 <= starts_at && x0 >= ends_at);
        if xs.is_empty() {
            xs.push(starts_at.clamp(left, (right - w).max(left)));
        }
        xs.sort_unstable();
        xs.dedup();
        // Only labels whose box or leader comes near this one's can get in its way.
        let reach = BOX_GAP.max(LEADER_CLEAR) + 1;
        let lo = xs[0].min(anchor) - reach;
        let hi = (xs[xs.len() - 1] + w).max(anchor) + reach;
        let near: Vec<&Placed> = done
            .iter()
            .filter(|p| (p.rect.x0 <= hi && p.rect.x1 >= lo) || (lo..=hi).contains(&p.anchor))
            .collect();
        let mut best: Option<((usize, usize, i32), Placed)> = None;
        for lane in 0..=lanes {
            for &x0 in &xs {
                let y0 = top + lane as i32 * LANE_H;
                let rect = Rect {
                    x0,
                    y0,
                    x1: x0 + w,
                    y1: y0 + BOX_H,
                };
                if near
                    .iter()
                    .any(|p| p.lane == lane && p.rect.overlaps(&rect, BOX_GAP))
                {
                    continue;
                }
                // Leaders run down from their box through every row below it.
                let crossed_by_others = near
                    .iter()
                    .filter(|p| p.lane < lane)
                    .filter(|p| leader_crosses(p.anchor, &rect))
                    .count();
                let own_crosses = near
                    .iter()
                    .filter(|p| p.lane > lane)
                    .filter(|p| leader_crosses(anchor, &p.rect))
                    .count();
                let cost = (
                    crossed_by_others + own_crosses,
                    lane,
                    (x0 - starts_at).abs(),
                );
                if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                    best = Some((cost, Placed { rect, lane, anchor }));
                }
            }
        }
        let ((cost, lane, _), p) = best.expect("a new row always has room");
        if limit.is_some_and(|l| cost > 0 || lane >= l) {
            return None;
        }
        lanes = lanes.max(p.lane + 1);
        placed[i] = Some(p);
        done.push(p);
    }
    Some(placed.into_iter().flatten().collect())
}

/// Lays legend entries of the given widths out in a grid of equal columns from (`left`,
/// `top`), as many columns as fit between `left` and `right`, rows [`LEGEND_ROW_H`] apart.
pub fn flow_legend(widths: &[i32], left: i32, right: i32, top: i32) -> Vec<Rect> {
    const GAP: i32 = 24;
    let span = right - left;
    let col = widths.iter().copied().max().unwrap_or(0).clamp(1, span);
    let cols = ((span + GAP) / (col + GAP)).max(1) as usize;
    widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let x0 = left + (i % cols) as i32 * (col + GAP);
            let y0 = top + (i / cols) as i32 * LEGEND_ROW_H;
            Rect {
                x0,
                y0,
                x1: x0 + w.min(span),
                y1: y0 + LEGEND_ROW_H - 4,
            }
        })
        .collect()
}

/// The stretches of time during which the client was probing: one per prober, from its
/// first to its last sample. `samples` are (offset of their prober, sample).
fn probed_spans(samples: &[(Duration, Sample)]) -> Vec<(f64, f64)> {
    let mut spans: Vec<(Duration, f64, f64)> = Vec::new();
    for (off, s) in samples {
        let t = (*off + s.at).as_secs_f64();
        match spans.iter_mut().find(|(o, _, _)| o == off) {
            Some(span) => {
                span.1 = span.1.min(t);
                span.2 = span.2.max(t);
            }
            None => spans.push((*off, t, t)),
        }
    }
    let mut out: Vec<(f64, f64)> = spans.into_iter().map(|(_, a, b)| (a, b)).collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

fn node_row(name: &str) -> f64 {
    name.strip_prefix("node-")
        .and_then(|x| x.parse::<u32>().ok())
        .map(f64::from)
        .unwrap_or(0.0)
}

fn font(px: f64) -> FontDesc<'static> {
    ("sans-serif", px * 1.24).into_font()
}

fn kind_colors(kind: &str) -> (RGBColor, RGBColor) {
    if kind == "crash" {
        (CRASH, CRASH_TEXT)
    } else {
        (GRACEFUL, GRACEFUL_TEXT)
    }
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn build_chart<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    t_max: f64,
    nodes: usize,
) -> Result<Chart<'a, DB>>
where
    DB::ErrorType: 'static,
{
    Ok(ChartBuilder::on(area)
        .margin_left(MARGIN)
        .margin_right(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0.0..t_max, -0.5..(nodes as f64 + 0.5))?)
}

/// A failover's label as drawn: horizontal in a box, or turned to read upwards right above
/// its marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub text: String,
    pub rect: Rect,
    pub anchor: i32,
    pub rotated: bool,
}

/// Where everything of the picture goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub width: i32,
    pub height: i32,
    /// Top of the chart (plot area with its axes); the labels are above it.
    pub chart_top: i32,
    /// Left and right pixel of the plot area.
    pub plot_x: (i32, i32),
    /// One per failover, in the order given.
    pub labels: Vec<Label>,
    /// One per legend entry.
    pub legend: Vec<Rect>,
}

/// The pixel column of time `t` on a plot spanning `plot_x` for times `0..t_max`, as plotters
/// maps it.
pub fn x_of(t: f64, t_max: f64, plot_x: (i32, i32)) -> i32 {
    plot_x.0 + ((plot_x.1 - plot_x.0) as f64 * (t / t_max) + 1e-3).floor() as i32
}

/// Lays the picture out for failovers at the given times (seconds on a time axis `0..t_max`):
/// labels in boxes in rows above the plot when some [`Detail`] fits in [`MAX_LANES`] rows
/// with no leader line crossing a box; otherwise turned labels right above their markers,
/// widening the picture (up to [`MAX_WIDTH`]) until neighbours do not touch; failing that,
/// the shortest boxed labels, which never overlap even where leader lines cross them.
pub fn layout(failovers: &[(f64, &Failover)], t_max: f64) -> Layout {
    let caption_h = (CAPTION_PX * 1.5) as i32 + (SUMMARY_PX * 1.6) as i32;
    let lanes_top = MARGIN + caption_h;
    // plotters' plot area ends one pixel before the right margin.
    let plot_x = |width: i32| (MARGIN + Y_LABEL_AREA, width - MARGIN - 1);
    let fs: Vec<&Failover> = failovers.iter().map(|(_, f)| *f).collect();

    let boxed = |texts: Vec<String>, placed: Vec<Placed>, anchors: &[i32]| -> (Vec<Label>, i32) {
        let lanes = placed.iter().map(|p| p.lane + 1).max().unwrap_or(0) as i32;
        let labels = texts
            .into_iter()
            .zip(placed)
            .zip(anchors)
            .map(|((text, p), &anchor)| Label {
                text,
                rect: p.rect,
                anchor,
                rotated: false,
            })
            .collect();
        (labels, lanes * LANE_H)
    };

    let anchors: Vec<i32> = failovers
        .iter()
        .map(|(t, _)| x_of(*t, t_max, plot_x(WIDTH)))
        .collect();
    let area = (MARGIN, WIDTH - MARGIN, lanes_top);
    let (width, labels, strip_h) =
        if let Some((texts, placed)) = choose_labels(&anchors, &fs, area, MAX_LANES) {
            let (labels, h) = boxed(texts, placed, &anchors);
            (WIDTH, labels, h)
        } else if let Some(turned) = rotated_labels(failovers, &fs, t_max, &plot_x, lanes_top) {
            turned
        } else {
            let (texts, placed) = boxed_labels(&anchors, &fs, Detail::Duration, area, None)
                .expect("without a limit every label is placed");
            let (labels, h) = boxed(texts, placed, &anchors);
            (WIDTH, labels, h)
        };
    let chart_top = lanes_top + strip_h + 4;
    let legend_widths: Vec<i32> = legend_entries()
        .iter()
        .map(|(_, text)| 22 + text_width(text, LEGEND_PX))
        .collect();
    let legend_top = chart_top + CHART_H + 8;
    let legend = flow_legend(&legend_widths, MARGIN, width - MARGIN, legend_top);
    let height = legend.iter().map(|r| r.y1).max().unwrap_or(legend_top) + MARGIN;
    Layout {
        width,
        height,
        chart_top,
        plot_x: plot_x(width),
        labels,
        legend,
    }
}

/// Labels turned to read upwards, each right above its marker, at [`Detail::Kind`]; the
/// picture is widened until neighbouring labels keep [`BOX_GAP`] apart. `None` when even
/// [`MAX_WIDTH`] is not enough. Returns the width, the labels and the height they take.
fn rotated_labels(
    failovers: &[(f64, &Failover)],
    fs: &[&Failover],
    t_max: f64,
    plot_x: &dyn Fn(i32) -> (i32, i32),
    top: i32,
) -> Option<(i32, Vec<Label>, i32)> {
    let texts: Vec<String> = fs.iter().map(|f| label_text(f, Detail::Kind)).collect();
    let long = texts
        .iter()
        .map(|t| text_width(t, LABEL_PX) + 2 * BOX_PAD)
        .max()
        .unwrap_or(0);
    let mut times: Vec<f64> = failovers.iter().map(|(t, _)| *t).collect();
    times.sort_by(f64::total_cmp);
    let closest = times
        .windows(2)
        .map(|w| (w[1] - w[0]) / t_max)
        .fold(f64::INFINITY, f64::min);
    let fixed = WIDTH - (plot_x(WIDTH).1 - plot_x(WIDTH).0);
    // One more pixel than the spacing needs, for the rounding of each marker to a pixel.
    let need = ((BOX_H + BOX_GAP + 1) as f64 / closest).ceil();
    if !need.is_finite() || need > f64::from(MAX_WIDTH) {
        return None;
    }
    let width = (need as i32 + fixed).max(WIDTH);
    if width > MAX_WIDTH {
        return None;
    }
    let (left, right) = (MARGIN, width - MARGIN);
    let bottom = top + long;
    let labels: Vec<Label> = failovers
        .iter()
        .zip(texts)
        .map(|((t, _), text)| {
            let anchor = x_of(*t, t_max, plot_x(width));
            let x0 = (anchor - BOX_H / 2).clamp(left, right - BOX_H);
            let len = text_width(&text, LABEL_PX) + 2 * BOX_PAD;
            Label {
                text,
                rect: Rect {
                    x0,
                    y0: bottom - len,
                    x1: x0 + BOX_H,
                    y1: bottom,
                },
                anchor,
                rotated: true,
            }
        })
        .collect();
    Some((width, labels, long))
}

/// Draws the timeline into the SVG file at `path`; see [`render`].
pub fn draw(
    path: &Path,
    samples: &[(Duration, Sample)],
    failovers: &[(Duration, Failover)],
    nodes: usize,
) -> Result<()> {
    std::fs::write(path, render(samples, failovers, nodes)?)?;
    Ok(())
}

/// The timeline as an SVG document. `samples` are (offset of their prober on the timeline,
/// sample); `failovers` are (time of the signal on the timeline, what the scenario measured).
pub fn render(
    samples: &[(Duration, Sample)],
    failovers: &[(Duration, Failover)],
    nodes: usize,
) -> Result<String> {
    let points: Vec<(f64, Option<f64>)> = samples
        .iter()
        .map(|(off, s)| {
            let t = (*off + s.at).as_secs_f64();
            match &s.outcome {
                Outcome::Node(n) => (t, Some(node_row(n))),
                Outcome::Failed => (t, None),
            }
        })
        .collect();
    let served_at = |at: &Duration, f: &Failover| at.as_secs_f64() + f.millis.unwrap_or(0.0) / 1e3;
    let t_last = points
        .iter()
        .map(|p| p.0)
        .chain(failovers.iter().map(|(at, f)| served_at(at, f)))
        .fold(0.0f64, f64::max);
    let t_max = (t_last * 1.02).max(0.1);

    let measured: Vec<(f64, &Failover)> = failovers
        .iter()
        .map(|(at, f)| (at.as_secs_f64(), f))
        .collect();
    let lay = layout(&measured, t_max);
    let summary = summary_line(&measured.iter().map(|(_, f)| *f).collect::<Vec<_>>());
    let legend = legend_entries();
    let (width, height) = (lay.width, lay.height);

    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (width as u32, height as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        root.draw(&Text::new(
            "ferrolb lab: which node served each client request",
            (width / 2, MARGIN),
            font(CAPTION_PX)
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        root.draw(&Text::new(
            summary,
            (width / 2, MARGIN + (CAPTION_PX * 1.5) as i32),
            font(SUMMARY_PX)
                .color(&RGBColor(60, 60, 60))
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;

        let chart_area = root.clone().shrink((0, lay.chart_top), (width, CHART_H));
        let mut chart = build_chart(&chart_area, t_max, nodes)?;
        let y_hi = nodes as f64 + 0.5;
        // Time the client was not probing (between rounds, while the speaker restarts).
        let spans = probed_spans(samples);
        let mut idle = Vec::new();
        let mut from = 0.0;
        for (a, b) in &spans {
            if *a > from {
                idle.push((from, *a));
            }
            from = from.max(*b);
        }
        if t_max > from && !spans.is_empty() {
            idle.push((from, t_max));
        }
        chart.draw_series(idle.iter().map(|(a, b)| {
            Rectangle::new([(*a, -0.5), (*b, y_hi)], IDLE.mix(IDLE_ALPHA).filled())
        }))?;
        for (at, f) in failovers {
            let (color, _) = kind_colors(f.kind);
            let t0 = at.as_secs_f64();
            let t1 = served_at(at, f);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(t0, -0.5), (t1, y_hi)],
                color.mix(BAND_ALPHA).filled(),
            )))?;
            chart.draw_series(LineSeries::new(
                vec![(t0, -0.5), (t0, y_hi)],
                color.stroke_width(2),
            ))?;
            if f.millis.is_some() {
                chart.draw_series(LineSeries::new(
                    vec![(t1, -0.5), (t1, y_hi)],
                    color.mix(0.8).stroke_width(1),
                ))?;
            }
        }
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_desc("time since the client's first request (s)")
            .y_desc("node that answered the request")
            .axis_desc_style(font(AXIS_PX))
            .label_style(font(AXIS_PX))
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.1}")
                }
            })
            .y_labels(nodes + 1)
            .y_label_formatter(&|y| {
                let i = y.round() as i64;
                if (y - i as f64).abs() > 0.01 {
                    String::new()
                } else if i == 0 {
                    "failed".to_string()
                } else {
                    format!("node-{i}")
                }
            })
            .draw()?;
        chart.draw_series(
            points
                .iter()
                .filter_map(|(t, row)| row.map(|r| Circle::new((*t, r), 2, SERVED.filled()))),
        )?;
        chart.draw_series(
            points
                .iter()
                .filter(|(_, row)| row.is_none())
                .map(|(t, _)| Circle::new((*t, 0.0), 2, FAILED.filled())),
        )?;
        let plot_top = chart.backend_coord(&(0.0, y_hi)).1;

        for ((_, f), l) in failovers.iter().zip(&lay.labels) {
            let (color, text_color) = kind_colors(f.kind);
            root.draw(&PathElement::new(
                vec![(l.anchor, l.rect.y1), (l.anchor, plot_top)],
                color.mix(0.9).stroke_width(1),
            ))?;
            let r = &l.rect;
            if l.rotated {
                root.draw(&Text::new(
                    l.text.clone(),
                    ((r.x0 + r.x1) / 2, r.y1 - BOX_PAD),
                    font(LABEL_PX)
                        .transform(FontTransform::Rotate270)
                        .color(&text_color)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ))?;
                continue;
            }
            root.draw(&Rectangle::new(
                [(r.x0, r.y0), (r.x1, r.y1)],
                WHITE.filled(),
            ))?;
            root.draw(&Rectangle::new(
                [(r.x0, r.y0), (r.x1, r.y1)],
                color.stroke_width(1),
            ))?;
            root.draw(&Text::new(
                l.text.clone(),
                (r.x0 + BOX_PAD, (r.y0 + r.y1) / 2),
                font(LABEL_PX)
                    .color(&text_color)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }

        for ((swatch, text), r) in legend.iter().zip(&lay.legend) {
            let cy = (r.y0 + r.y1) / 2;
            match swatch {
                Swatch::Dot(c) => root.draw(&Circle::new((r.x0 + 7, cy), 4, c.filled()))?,
                Swatch::Band(c, alpha) => {
                    root.draw(&Rectangle::new(
                        [(r.x0, cy - 6), (r.x0 + 14, cy + 6)],
                        c.mix(*alpha).filled(),
                    ))?;
                    root.draw(&PathElement::new(
                        vec![(r.x0, cy - 6), (r.x0, cy + 6)],
                        c.stroke_width(2),
                    ))?;
                }
            }
            root.draw(&Text::new(
                text.to_string(),
                (r.x0 + 22, cy),
                font(LEGEND_PX)
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        root.present()?;
    }
    Ok(svg)
}

enum Swatch {
    Dot(RGBColor),
    Band(RGBColor, f64),
}

fn legend_entries() -> Vec<(Swatch, &'static str)> {
    vec![
        (
            Swatch::Dot(SERVED),
            "request answered (row: the node that served it)",
        ),
        (Swatch::Dot(FAILED), "request failed (no answer)"),
        (
            Swatch::Band(CRASH, BAND_ALPHA),
            "crash: SIGKILL of the owner's speaker → another node serves",
        ),
        (
            Swatch::Band(GRACEFUL, BAND_ALPHA),
            "graceful: SIGTERM of the owner's speaker → another node serves",
        ),
        (
            Swatch::Band(IDLE, IDLE_ALPHA),
            "client not probing (between rounds)",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn failover(kind: &'static str, from: &str, to: &str, millis: f64, failed: usize) -> Failover {
        Failover {
            kind,
            from: from.into(),
            to: Some(to.into()),
            millis: Some(millis),
            failed_requests: failed,
        }
    }

    /// Samples and failovers as the scenario hands them to [`render`].
    type Recorded = (Vec<(Duration, Sample)>, Vec<(Duration, Failover)>);

    /// A timeline shaped like a real run: one prober per failover, a request every 10 ms
    /// from 300 ms before the signal until 200 ms after the takeover.
    fn timeline(rounds: usize) -> Recorded {
        let mut samples = Vec::new();
        let mut failovers = Vec::new();
        let mut offset = 0u64;
        let (mut owner, mut next) = (1usize, 3usize);
        for r in 0..rounds {
            for (kind, took) in [
                ("crash", 547 + 13 * r as u64),
                ("graceful", 15 + 7 * r as u64),
            ] {
                let signal = 300u64;
                let end = signal + took + 200;
                let failed = if r % 2 == 1 && kind == "crash" { 4 } else { 0 };
                for at in (0..end).step_by(10) {
                    let outcome = if at < signal + took {
                        if at > signal + 100 && at <= signal + 100 + failed as u64 * 10 {
                            Outcome::Failed
                        } else {
                            Outcome::Node(format!("node-{owner}"))
                        }
                    } else {
                        Outcome::Node(format!("node-{next}"))
                    };
                    samples.push((
                        ms(offset),
                        Sample {
                            at: ms(at),
                            outcome,
                        },
                    ));
                }
                failovers.push((
                    ms(offset + signal),
                    failover(
                        kind,
                        &format!("node-{owner}"),
                        &format!("node-{next}"),
                        took as f64,
                        failed,
                    ),
                ));
                std::mem::swap(&mut owner, &mut next);
                offset += end + 2300;
            }
        }
        (samples, failovers)
    }

    #[test]
    fn label_carries_kind_owners_and_the_measured_duration() {
        assert_eq!(
            label_text(
                &failover("crash", "node-1", "node-3", 612.4, 0),
                Detail::Full
            ),
            "crash node-1 → node-3: 612 ms"
        );
        assert_eq!(
            label_text(
                &failover("graceful", "node-3", "node-1", 15.0, 3),
                Detail::Full
            ),
            "graceful node-3 → node-1: 15 ms, 3 requests failed"
        );
        let f = failover("graceful", "node-3", "node-1", 15.0, 3);
        assert_eq!(label_text(&f, Detail::Kind), "graceful 15 ms, 3 failed");
        assert_eq!(label_text(&f, Detail::Duration), "15 ms");
        let lost = Failover {
            kind: "crash",
            from: "node-2".into(),
            to: None,
            millis: None,
            failed_requests: 1,
        };
        assert_eq!(
            label_text(&lost, Detail::Full),
            "crash node-2: no other node answered, 1 request failed"
        );
    }

    #[test]
    fn text_width_is_not_below_dejavu_sans() {
        // DejaVu Sans advance widths at 13 px: "crash node-1 → node-3: 547 ms" is 198 px wide.
        assert!(text_width("crash node-1 → node-3: 547 ms", 13.0) >= 198);
        assert!(text_width("mmmm", 10.0) >= 39);
    }

    #[test]
    fn labels_of_distant_markers_share_one_row_and_start_at_their_marker() {
        let p = place_labels(&[(100, 150), (400, 150), (700, 150)], 0, 1000, 50);
        assert!(p.iter().all(|p| p.lane == 0), "{p:?}");
        assert!(p.iter().all(|p| p.rect.x0 == p.anchor - 1));
    }

    #[test]
    fn a_label_near_the_right_edge_moves_left_over_its_marker() {
        let p = place_labels(&[(950, 200)], 0, 1000, 0);
        assert_eq!(
            p[0].rect,
            Rect {
                x0: 800,
                y0: 0,
                x1: 1000,
                y1: BOX_H
            }
        );
    }

    #[test]
    fn close_markers_stack_without_leaders_crossing_boxes() {
        // Crash and its takeover 60 px apart, then the next round: a staircase, not a pile.
        let anchors = [100, 160, 400, 460, 700, 760, 950];
        let labels: Vec<(i32, i32)> = anchors.iter().map(|&a| (a, 220)).collect();
        let p = place_labels(&labels, 0, 1100, 0);
        assert_eq!(crossings(&p), 0, "{p:?}");
        let lanes = p.iter().map(|p| p.lane).max().unwrap() + 1;
        assert!(lanes <= 3, "{p:?}");
    }

    proptest! {
        #[test]
        fn label_boxes_never_overlap_and_stay_on_the_canvas(
            labels in proptest::collection::vec((0i32..1100, 40i32..400), 0..40),
        ) {
            let (left, right, top) = (14, 1086, 40);
            let p = place_labels(&labels, left, right, top);
            prop_assert_eq!(p.len(), labels.len());
            for (i, (a, l)) in p.iter().zip(&labels).enumerate() {
                prop_assert_eq!(a.anchor, l.0);
                prop_assert_eq!(a.rect.x1 - a.rect.x0, l.1);
                prop_assert!(a.rect.x0 >= left && a.rect.x1 <= right, "{:?}", a);
                prop_assert!(a.rect.y0 >= top);
                for b in &p[i + 1..] {
                    prop_assert!(!a.rect.overlaps(&b.rect, 0), "{:?} overlaps {:?}", a, b);
                }
            }
        }

        #[test]
        fn labels_of_any_timeline_never_overlap_and_stay_on_the_canvas(
            events in proptest::collection::vec(
                (0u64..120_000, any::<bool>(), 1u64..20_000, 0usize..30),
                0..60,
            ),
        ) {
            let fs: Vec<(f64, Failover)> = events
                .iter()
                .map(|&(at, crash, took, failed)| {
                    let kind = if crash { "crash" } else { "graceful" };
                    (at as f64 / 1e3, failover(kind, "node-1", "node-2", took as f64, failed))
                })
                .collect();
            let refs: Vec<(f64, &Failover)> = fs.iter().map(|(t, f)| (*t, f)).collect();
            let t_max = fs
                .iter()
                .map(|(t, f)| t + f.millis.unwrap() / 1e3)
                .fold(0.1, f64::max)
                * 1.02;
            let lay = layout(&refs, t_max);
            prop_assert_eq!(lay.labels.len(), fs.len());
            let canvas = Rect { x0: 0, y0: 0, x1: lay.width, y1: lay.height };
            for (i, a) in lay.labels.iter().enumerate() {
                prop_assert!(a.rect.inside(&canvas), "{:?} outside {:?}", a, canvas);
                prop_assert!(a.rect.y1 < lay.chart_top, "{:?} reaches into the chart", a);
                prop_assert!(
                    a.rect.x1 - a.rect.x0 >= text_width(&a.text, LABEL_PX).min(BOX_H)
                );
                for b in &lay.labels[i + 1..] {
                    prop_assert!(!a.rect.overlaps(&b.rect, 0), "{:?} overlaps {:?}", a, b);
                }
            }
            for r in &lay.legend {
                prop_assert!(r.inside(&canvas) && r.y0 >= lay.chart_top + CHART_H);
            }
        }

        #[test]
        fn legend_entries_never_overlap_and_stay_on_the_canvas(
            widths in proptest::collection::vec(10i32..1200, 0..12),
        ) {
            let r = flow_legend(&widths, 14, 1086, 500);
            for (i, a) in r.iter().enumerate() {
                prop_assert!(a.x0 >= 14 && a.x1 <= 1086 && a.y0 >= 500, "{:?}", a);
                for b in &r[i + 1..] {
                    prop_assert!(!a.overlaps(b, 0));
                }
            }
        }
    }

    /// The (x, y, text) of every `<text>` element, as plotters writes them.
    fn svg_texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = t.split_once('>')?.1;
                Some(body.split_once("</text>")?.0.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn every_failover_gets_one_label_with_its_measured_duration() {
        for (rounds, detail) in [(1, Detail::Full), (2, Detail::Full), (10, Detail::Kind)] {
            let (samples, failovers) = timeline(rounds);
            let svg = render(&samples, &failovers, 3).unwrap();
            let texts = svg_texts(&svg);
            let mut want: Vec<String> = failovers
                .iter()
                .map(|(_, f)| label_text(f, detail))
                .collect();
            for ((_, f), w) in failovers.iter().zip(&want) {
                assert!(w.contains(&format!("{:.0} ms", f.millis.unwrap())), "{w}");
            }
            let mut got: Vec<String> = texts.iter().filter(|t| want.contains(t)).cloned().collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{rounds} rounds: {texts:?}");
            let measured: Vec<&Failover> = failovers.iter().map(|(_, f)| f).collect();
            assert!(texts.contains(&summary_line(&measured)), "{texts:?}");
            assert!(texts.iter().any(|t| t.starts_with("request failed")));
            assert!(texts.iter().any(|t| t.ends_with("(s)")));
            assert!(svg.matches("<circle").count() >= samples.len());
            // Ten rounds are too dense for boxes: the labels stand upright over their markers
            // (the y axis title is the one other turned text).
            let upright = if rounds == 10 { failovers.len() } else { 0 };
            assert_eq!(svg.matches("rotate(270").count(), 1 + upright);
        }
    }

    #[test]
    fn labels_get_shorter_only_when_the_full_ones_do_not_fit() {
        let f = failover("crash", "node-1", "node-3", 547.0, 0);
        let sparse = [100, 500, 900];
        let (texts, placed) = choose_labels(&sparse, &[&f, &f, &f], (0, 1100, 0), 4).unwrap();
        assert_eq!(texts[0], "crash node-1 → node-3: 547 ms");
        assert!(placed.iter().all(|p| p.lane == 0));
        let closer: Vec<i32> = (0..8).map(|i| 20 + i * 130).collect();
        let all = vec![&f; closer.len()];
        let (texts, placed) = choose_labels(&closer, &all, (0, 1100, 0), 4).unwrap();
        assert!(texts.iter().all(|t| t == "crash 547 ms"), "{texts:?}");
        assert_eq!(crossings(&placed), 0);
        assert!(placed.iter().all(|p| p.lane == 0), "{placed:?}");
        // Markers closer than any label is wide chain every label under the next one.
        let dense: Vec<i32> = (0..30).map(|i| 20 + i * 35).collect();
        let all = vec![&f; dense.len()];
        assert_eq!(choose_labels(&dense, &all, (0, 1100, 0), 4), None);
    }

    #[test]
    fn dense_timelines_get_turned_labels_right_above_their_markers() {
        let f = failover("crash", "node-1", "node-3", 547.0, 0);
        let fs: Vec<(f64, &Failover)> = (0..30).map(|i| (0.5 + i as f64 * 4.0, &f)).collect();
        let lay = layout(&fs, 125.0);
        assert_eq!(lay.width, WIDTH);
        for l in &lay.labels {
            assert!(l.rotated && l.text == "crash 547 ms");
            assert!(l.rect.x0 <= l.anchor && l.anchor <= l.rect.x1, "{l:?}");
        }
        // Twice as dense: the picture widens until the labels fit.
        let fs: Vec<(f64, &Failover)> = (0..60).map(|i| (0.5 + i as f64 * 2.0, &f)).collect();
        let lay = layout(&fs, 125.0);
        assert!(lay.width > WIDTH && lay.width <= MAX_WIDTH, "{}", lay.width);
        assert!(lay.labels.iter().all(|l| l.rotated));
        for w in lay.labels.windows(2) {
            assert!(w[1].rect.x0 - w[0].rect.x1 >= BOX_GAP, "{w:?}");
        }
        // Too dense even for the widest picture: the shortest boxed labels, still apart.
        let fs: Vec<(f64, &Failover)> = (0..300).map(|i| (0.5 + i as f64 * 0.4, &f)).collect();
        let lay = layout(&fs, 125.0);
        assert_eq!(lay.width, WIDTH);
        assert!(lay.labels.iter().all(|l| !l.rotated && l.text == "547 ms"));
        for (i, a) in lay.labels.iter().enumerate() {
            assert!(lay.labels[i + 1..]
                .iter()
                .all(|b| !a.rect.overlaps(&b.rect, 0)));
        }
    }

    #[test]
    fn summary_gives_p50_and_max_per_kind() {
        let a = failover("crash", "node-1", "node-3", 500.0, 0);
        let b = failover("crash", "node-3", "node-1", 620.0, 0);
        let c = failover("crash", "node-1", "node-3", 580.0, 0);
        let g = failover("graceful", "node-3", "node-1", 15.0, 0);
        assert_eq!(
            summary_line(&[&a, &g, &b, &c]),
            "crash (SIGKILL) ×3: p50 580 ms, max 620 ms  ·  graceful (SIGTERM): 15 ms"
        );
    }

    #[test]
    fn markers_land_where_plotters_draws_them() {
        let mut svg = String::new();
        let area = SVGBackend::with_string(&mut svg, (WIDTH as u32, 400)).into_drawing_area();
        let chart = build_chart(&area, 12.5, 3).unwrap();
        let plot_x = layout(&[], 12.5).plot_x;
        for t in [0.0, 0.3, 1.7, 6.25, 9.99, 12.5] {
            assert_eq!(
                chart.backend_coord(&(t, 0.0)).0,
                x_of(t, 12.5, plot_x),
                "t = {t}"
            );
        }
    }

    #[test]
    fn renders_an_empty_timeline() {
        let svg = render(&[], &[], 3).unwrap();
        assert!(svg.starts_with("<svg"));
    }

    #[test]
    fn writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.svg");
        let (samples, failovers) = timeline(1);
        draw(&path, &samples, &failovers, 3).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            render(&samples, &failovers, 3).unwrap()
        );
    }
}
