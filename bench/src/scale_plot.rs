//! The `--scale` curves as SVG, one file per axis: on the left the ready
//! time and the time to the first rule-attributed hop, on the right the
//! peak RSS, each against the size (medians).
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::scale::{Axis, Scale, StepResult};

type Points = Vec<(f64, f64)>;

/// (size, median) of one figure over one axis's steps.
fn points(steps: &[&StepResult], f: impl Fn(&StepResult) -> Option<f64>) -> Points {
    steps
        .iter()
        .filter_map(|s| Some((s.size as f64, f(s)?)))
        .collect()
}

fn top(series: &[&Points]) -> f64 {
    let max = series
        .iter()
        .flat_map(|p| p.iter().map(|x| x.1))
        .fold(0.0, f64::max);
    (max * 1.15).max(1.0)
}

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    x_label: &str,
    y_label: &str,
    max_x: f64,
    lines: &[(&str, &Points, RGBColor)],
) -> Result<()> {
    let y_top = top(&lines.iter().map(|l| l.1).collect::<Vec<_>>());
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..max_x, 0.0..y_top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (name, pts, color) in lines {
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Writes one SVG per axis into `dir`; their paths.
pub fn write(scale: &Scale, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for axis in [
        Axis::IptablesRules,
        Axis::NftRules,
        Axis::Namespaces,
        Axis::Veths,
    ] {
        let steps: Vec<&StepResult> = scale.steps.iter().filter(|s| s.axis == axis).collect();
        if steps.is_empty() {
            continue;
        }
        let med = |s: &Option<crate::stats::Summary>| s.as_ref().map(|s| s.median);
        let ready = points(&steps, |s| med(&s.ready_ms));
        let hop = points(&steps, |s| med(&s.first_rule_hop_ms));
        let rss = points(&steps, |s| med(&s.peak_rss_kib).map(|k| k / 1024.0));
        let max_x = steps.iter().map(|s| s.size).max().unwrap_or(1) as f64 * 1.05;
        let path = dir.join(format!("scale-{}.svg", axis.file_stem()));
        {
            let root = SVGBackend::new(&path, (960, 400)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
            let (left, right) = root.split_horizontally(480);
            panel(
                &left,
                &format!("time, by {}", axis.label()),
                axis.label(),
                "ms",
                max_x,
                &[
                    ("ready", &ready, BLUE),
                    ("first rule-attributed hop", &hop, RED),
                ],
            )?;
            panel(
                &right,
                &format!("peak RSS, by {}", axis.label()),
                axis.label(),
                "MiB",
                max_x,
                &[("peak RSS", &rss, BLACK)],
            )?;
            root.present().map_err(|e| anyhow!("{e}"))?;
        }
        out.push(path);
    }
    Ok(out)
}
