//! `ferrolb lab --plot FILE.svg`: the failover timeline as a picture — every client request
//! as a dot at (time, node that answered), failed requests on their own row in red, and a
//! vertical line at each kill / takeover.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use plotters::prelude::*;

use super::probe::{Outcome, Sample};

/// Draws the timeline. `samples` are (offset of their prober, sample); `events` are
/// (time, label) marks.
pub fn draw(
    path: &Path,
    samples: &[(Duration, Sample)],
    events: &[(Duration, String)],
    nodes: usize,
) -> Result<()> {
    let points: Vec<(f64, i32, bool)> = samples
        .iter()
        .map(|(off, s)| {
            let t = (*off + s.at).as_secs_f64();
            match &s.outcome {
                Outcome::Node(n) => (
                    t,
                    n.strip_prefix("node-")
                        .and_then(|x| x.parse::<i32>().ok())
                        .unwrap_or(0),
                    true,
                ),
                Outcome::Failed => (t, 0, false),
            }
        })
        .collect();
    let t_max = points
        .iter()
        .map(|p| p.0)
        .chain(events.iter().map(|e| e.0.as_secs_f64()))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ferrolb lab: which node served each client request",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max * 1.02, -0.5..(nodes as f64 + 0.5))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_labels(nodes + 1)
        .y_label_formatter(&|y| {
            let i = y.round() as i64;
            if i == 0 {
                "failed".to_string()
            } else {
                format!("node-{i}")
            }
        })
        .draw()?;
    chart.draw_series(
        points
            .iter()
            .filter(|p| p.2)
            .map(|(t, n, _)| Circle::new((*t, *n as f64), 2, BLUE.filled())),
    )?;
    chart.draw_series(
        points
            .iter()
            .filter(|p| !p.2)
            .map(|(t, _, _)| Circle::new((*t, 0.0), 2, RED.filled())),
    )?;
    for (t, label) in events {
        let x = t.as_secs_f64();
        let color = if label.starts_with("served") {
            GREEN
        } else {
            BLACK
        };
        chart.draw_series(LineSeries::new(
            vec![(x, -0.5), (x, nodes as f64 + 0.5)],
            color.stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (x, nodes as f64 + 0.3),
            ("sans-serif", 12).into_font().color(&color),
        )))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_with_points_and_marks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.svg");
        let ms = Duration::from_millis;
        let samples = vec![
            (
                ms(0),
                Sample {
                    at: ms(10),
                    outcome: Outcome::Node("node-1".into()),
                },
            ),
            (
                ms(0),
                Sample {
                    at: ms(20),
                    outcome: Outcome::Failed,
                },
            ),
            (
                ms(0),
                Sample {
                    at: ms(30),
                    outcome: Outcome::Node("node-2".into()),
                },
            ),
        ];
        let events = vec![
            (ms(15), "crash: node-1".to_string()),
            (ms(30), "served by node-2".into()),
        ];
        draw(&path, &samples, &events, 3).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("crash: node-1") && svg.contains("served by node-2"));
        assert!(svg.matches("<circle").count() >= 3, "{svg}");
    }
}
