//! The curves as PNG, one file per axis: on the left the ready time and the
//! time to the first rule-attributed hop, on the right the peak RSS and the
//! kernel memory (BPF maps and programs), each against the size (medians).
//! The text is drawn with DejaVu Sans, built into the binary (the `dejavu`
//! crate): no host font is read.
use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{anyhow, Result};
use plotters::{
    prelude::*,
    style::{register_font, FontStyle},
};

use super::{Axis, Scale, StepResult};
use crate::stats::Summary;

type Points = Vec<(f64, f64)>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// The one font family the plots name.
const FONT: &str = "sans-serif";

/// Registers the built-in font once.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the built-in font (DejaVu Sans) did not load"))
    }
}

/// (size, median) of one figure over one axis's steps.
fn points(steps: &[&StepResult], f: impl Fn(&StepResult) -> Option<f64>) -> Points {
    steps
        .iter()
        .filter_map(|s| Some((s.size as f64, f(s)?)))
        .collect()
}

/// The y axis's top: room above the highest point for the legend.
fn top(series: &[&Points]) -> f64 {
    let max = series
        .iter()
        .flat_map(|p| p.iter().map(|x| x.1))
        .fold(0.0, f64::max);
    (max * 1.5).max(1.0)
}

/// One chart: `lines` against the size, and each target as a dashed
/// grey line at its value.
fn panel(
    area: &Area,
    caption: &str,
    (x_label, y_label): (&str, &str),
    max_x: f64,
    lines: &[(&str, &Points, RGBColor)],
    targets: &[(&str, f64)],
) -> Result<()> {
    let target_pts: Vec<Points> = targets
        .iter()
        .map(|&(_, y)| vec![(0.0, y), (max_x, y)])
        .collect();
    let y_top = top(&lines
        .iter()
        .map(|l| l.1)
        .chain(target_pts.iter())
        .collect::<Vec<_>>());
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, 0.0..y_top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .light_line_style(WHITE)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 14))
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
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    for ((name, _), pts) in targets.iter().zip(&target_pts) {
        let grey = RGBColor(128, 128, 128);
        chart
            .draw_series(DashedLineSeries::new(
                pts.iter().copied(),
                8,
                6,
                grey.stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Draws one axis's curves into `path`.
fn draw(axis: Axis, steps: &[&StepResult], path: &Path) -> Result<()> {
    let med = |s: &Option<Summary>| s.as_ref().map(|s| s.median);
    let ready = points(steps, |s| med(&s.ready_ms));
    let hop = points(steps, |s| med(&s.first_rule_hop_ms));
    let rss = points(steps, |s| med(&s.peak_rss_kib).map(|k| k / 1024.0));
    let kernel = points(steps, |s| {
        Some((med(&s.kernel_maps_kib)? + med(&s.kernel_progs_kib)?) / 1024.0)
    });
    let max_x = steps.iter().map(|s| s.size).max().unwrap_or(1) as f64 * 1.05;
    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(600);
    let rules = matches!(axis, Axis::IptablesRules | Axis::NftRules);
    let time_targets: &[(&str, f64)] = if rules {
        &[
            ("target: ready 100 ms", 100.0),
            ("target: hop 1 s at 10k rules", 1000.0),
        ]
    } else {
        &[("target: ready 100 ms", 100.0)]
    };
    let memory_targets: &[(&str, f64)] = if rules {
        &[("target: 30 MiB at 50k rules", 30.0)]
    } else {
        &[]
    };
    panel(
        &left,
        &format!("time, by {}", axis.label()),
        (axis.label(), "ms"),
        max_x,
        &[
            ("ready", &ready, BLUE),
            ("first rule-attributed hop", &hop, RED),
        ],
        time_targets,
    )?;
    panel(
        &right,
        &format!("memory, by {}", axis.label()),
        (axis.label(), "MiB"),
        max_x,
        &[
            ("peak RSS", &rss, BLACK),
            ("kernel: BPF maps and programs", &kernel, MAGENTA),
        ],
        memory_targets,
    )?;
    root.present().map_err(|e| anyhow!("{e}"))
}

/// Writes one PNG per axis that has steps into `dir`; their paths.
pub fn write(scale: &Scale, dir: &Path) -> Result<Vec<PathBuf>> {
    font()?;
    let mut out = Vec::new();
    for axis in Axis::ALL {
        let steps: Vec<&StepResult> = scale.steps.iter().filter(|s| s.axis == axis).collect();
        if steps.is_empty() {
            continue;
        }
        let path = dir.join(format!("scale-{}.png", axis.file_stem()));
        draw(axis, &steps, &path)?;
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::StepResult;

    fn step(axis: Axis, size: usize, ms: f64) -> StepResult {
        StepResult {
            axis,
            size,
            build_secs: 0.1,
            ready_ms: Summary::of(&[ms]),
            first_rule_hop_ms: Summary::of(&[ms * 3.0]),
            peak_rss_kib: Summary::of(&[24_000.0]),
            kernel_maps_kib: Summary::of(&[1642.0]),
            kernel_progs_kib: Summary::of(&[80.0]),
            other_netns: 0,
            errors: Vec::new(),
        }
    }

    #[test]
    fn writes_one_png_per_axis_with_the_built_in_font() {
        let scale = Scale {
            quick: true,
            runs_per_step: 1,
            steps: vec![
                step(Axis::NftRules, 0, 70.0),
                step(Axis::NftRules, 10_000, 90.0),
                step(Axis::Containers, 1, 75.0),
            ],
        };
        let dir = std::env::temp_dir().join(format!("ptbench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let files = write(&scale, &dir).expect("plots");
        let names: Vec<_> = files.iter().filter_map(|f| f.file_name()).collect();
        assert_eq!(names, ["scale-nft-rules.png", "scale-containers.png"]);
        for f in &files {
            let bytes = std::fs::read(f).expect("png");
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", f.display());
            assert!(bytes.len() > 10_000, "{} is nearly empty", f.display());
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
