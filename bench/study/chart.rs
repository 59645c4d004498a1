//! The study's chart, drawn with plotters as SVG: requests/s against the number of workers, one line per workload
//! and server (wasmcorn solid, Gunicorn dashed) and the ideal as a thin line. SVG only: plotters' PNG encoder would
//! turn on a feature of a crate wasmtime uses, and `cargo test --workspace` would then build wasmtime twice (see
//! bench/Cargo.toml).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::points::Point;
use crate::server::ServerKind;
use crate::tools::FONT_FILE;
use crate::workload::Workload;

const SIZE: (u32, u32) = (1100, 700);

/// Draws `study.svg` in `out`; returns its path.
pub(crate) fn draw(out: &Path, points: &[Point], cores: usize) -> anyhow::Result<PathBuf> {
    register_font()?;
    let svg = out.join("study.svg");
    plot(SVGBackend::new(&svg, SIZE).into_drawing_area(), points, cores)
        .with_context(|| format!("cannot draw {}", svg.display()))?;
    Ok(svg)
}

/// plotters lays out text with `ab_glyph`, which needs a font registered once; it keeps the bytes for the life of
/// the process.
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if REGISTERED.get().is_some() {
        return Ok(());
    }
    let bytes = std::fs::read(FONT_FILE).with_context(|| format!("cannot read the chart font {FONT_FILE}"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{FONT_FILE} is not a font plotters can use"))?;
    let _ = REGISTERED.set(());
    Ok(())
}

fn colour(workload: Workload) -> RGBColor {
    match workload {
        Workload::Io => RGBColor(31, 119, 180),
        Workload::Cpu => RGBColor(214, 39, 40),
        Workload::Blend => RGBColor(44, 160, 44),
    }
}

fn series(points: &[Point], server: ServerKind, workload: Workload, pick: fn(&Point) -> f64) -> Vec<(f64, f64)> {
    let mut line: Vec<(f64, f64)> = points
        .iter()
        .filter(|point| point.server == server && point.workload == workload)
        .map(|point| (point.workers as f64, pick(point)))
        .collect();
    line.sort_by(|a, b| a.0.total_cmp(&b.0));
    line
}

fn plot<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, points: &[Point], cores: usize) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let failed = |err: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{err:?}");
    root.fill(&WHITE).map_err(failed)?;
    let max_workers = points.iter().map(|point| point.workers).max().unwrap_or(1) as f64;
    let top = points
        .iter()
        .flat_map(|point| [point.requests_per_second, point.ideal_requests_per_second])
        .filter(|value| value.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Sync workers: throughput by number of workers ({cores} cores)"), ("sans-serif", 28))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5..max_workers + 0.5, 0.0..top)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("workers")
        .y_desc("requests / s")
        .x_labels(max_workers as usize + 1)
        .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-6 { format!("{x:.0}") } else { String::new() })
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(failed)?;

    let servers: Vec<ServerKind> = [ServerKind::Wasmcorn, ServerKind::Gunicorn]
        .into_iter()
        .filter(|server| points.iter().any(|point| point.server == *server))
        .collect();
    for workload in Workload::ALL {
        let paint = colour(workload);
        if let Some(&first) = servers.first() {
            let ideal = series(points, first, workload, |point| point.ideal_requests_per_second);
            if !ideal.is_empty() {
                let thin = paint.mix(0.35).stroke_width(2);
                chart
                    .draw_series(LineSeries::new(ideal, thin))
                    .map_err(failed)?
                    .label(format!("ideal, {}", workload.label()))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], thin));
            }
        }
        for &server in &servers {
            let line = series(points, server, workload, |point| point.requests_per_second);
            if line.is_empty() {
                continue;
            }
            let solid = paint.stroke_width(3);
            let label = format!("{server}, {}", workload.label());
            match server {
                ServerKind::Wasmcorn => {
                    chart
                        .draw_series(LineSeries::new(line.clone(), solid).point_size(5))
                        .map_err(failed)?
                        .label(label)
                        .legend(move |(x, y)| {
                            EmptyElement::at((x, y))
                                + PathElement::new(vec![(0, 0), (24, 0)], solid)
                                + Circle::new((12, 0), 4, paint.filled())
                        });
                }
                ServerKind::Gunicorn => {
                    chart
                        .draw_series(DashedLineSeries::new(line.clone(), 8, 5, solid))
                        .map_err(failed)?
                        .label(label)
                        .legend(move |(x, y)| {
                            EmptyElement::at((x, y))
                                + PathElement::new(vec![(0, 0), (8, 0)], solid)
                                + PathElement::new(vec![(16, 0), (24, 0)], solid)
                                + TriangleMarker::new((12, 0), 6, paint.filled())
                        });
                    chart
                        .draw_series(line.iter().map(|&(x, y)| TriangleMarker::new((x, y), 6, paint.filled())))
                        .map_err(failed)?;
                }
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}
