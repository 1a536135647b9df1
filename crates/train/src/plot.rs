//! PNG line charts (plotters' bitmap backend, text in the embedded DejaVu Sans, so no system
//! font is needed): a run's loss and accuracy curves ([`run_plots`]) and the comparison plots of
//! [`crate::report`].

use crate::metrics::Metrics;
use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// One line: `(x, y)` points, and optionally a ± band drawn as error bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Half-widths of error bars at the points (same length), if any.
    pub errors: Option<Vec<f64>>,
}

impl Series {
    pub fn new(label: impl Into<String>, xs: &[f64], ys: &[f64]) -> Self {
        Self {
            label: label.into(),
            points: xs.iter().copied().zip(ys.iter().copied()).collect(),
            errors: None,
        }
    }
}

/// A chart: title, axis names, lines, and horizontal reference lines (`(label, y, d)`, with a
/// shaded band `y ± d` when `d > 0`).
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub references: Vec<(String, f64, f64)>,
    /// Plot x as log10 (ticks still show the values).
    pub log_x: bool,
}

fn register_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            plotters::style::register_font("sans-serif", style, dejavu::sans::regular())
                .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
        }
    });
}

/// The range of `v` widened by 5% on each side (or ±1 around a single value).
fn span(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    (lo - pad, hi + pad)
}

impl Chart {
    /// The legend's entries: each line (2 px) and each reference line (1 px), with colours.
    fn legend(&self) -> Vec<(String, RGBAColor, u32)> {
        let series = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.label.clone(), i, 2));
        let refs = (self.references.iter().enumerate())
            .map(|(j, r)| (r.0.clone(), self.series.len() + j, 1));
        series
            .chain(refs)
            .map(|(l, i, w)| (l, Palette99::pick(i).to_rgba(), w))
            .collect()
    }

    /// Writes the chart as a PNG: a 900×560 plot with the legend in a column to its right
    /// (as wide as the longest label, and taller than 560 when it has many entries), so it
    /// never hides a curve.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        register_font();
        let legend = self.legend();
        let longest = legend
            .iter()
            .map(|l| l.0.chars().count())
            .max()
            .unwrap_or(0);
        let legend_w = 48 + 7 * longest as u32;
        let height = 560.max(40 + 20 * legend.len() as u32);
        let fx = |x: f64| if self.log_x { x.log10() } else { x };
        let (x0, x1) = span(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| fx(p.0))),
        );
        let (y0, y1) = span(
            self.series
                .iter()
                .flat_map(|s| {
                    let e = s.errors.clone().unwrap_or_default();
                    s.points.iter().enumerate().flat_map(move |(i, p)| {
                        let d = e.get(i).copied().unwrap_or(0.0);
                        [p.1 - d, p.1 + d]
                    })
                })
                .chain(self.references.iter().flat_map(|r| [r.1 - r.2, r.1 + r.2])),
        );
        let e = |e: &dyn std::fmt::Debug| anyhow!("drawing {}: {e:?}", path.display());
        let root = BitMapBackend::new(path, (900 + legend_w, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        // The title over the whole width (it may be longer than the plot is wide).
        let body = root
            .titled(&self.title, ("sans-serif", 22))
            .map_err(|x| e(&x))?;
        let (plot, side) = body.split_horizontally(900);
        let mut chart = ChartBuilder::on(&plot)
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|x| e(&x))?;
        let log_x = self.log_x;
        let x_fmt = move |v: &f64| {
            let v = if log_x { 10f64.powf(*v) } else { *v };
            format!("{}", (v * 1000.0).round() / 1000.0)
        };
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&x_fmt)
            // On a log axis, at most one label per decade (10, 100, 1000), not 31.623.
            .x_labels(if log_x {
                (x1 - x0).ceil() as usize + 1
            } else {
                10
            })
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|x| e(&x))?;
        for (s, (_, color, _)) in self.series.iter().zip(&legend) {
            let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (fx(p.0), p.1)).collect();
            draw_line(&mut chart, &pts, s.errors.as_deref(), *color).map_err(|x| e(&x))?;
        }
        for ((_, y, d), (_, color, _)) in self.references.iter().zip(&legend[self.series.len()..]) {
            draw_reference(&mut chart, (x0, x1), *y, *d, *color).map_err(|x| e(&x))?;
        }
        draw_legend(&side, &legend).map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
        Ok(())
    }
}

type Plot<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type DrawResult =
    Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

/// The legend: a short line (of the entry's width) and the label, one entry a row.
fn draw_legend(
    side: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    legend: &[(String, RGBAColor, u32)],
) -> DrawResult {
    for (i, (label, color, width)) in legend.iter().enumerate() {
        let y = 20 + 20 * i as i32;
        side.draw(&PathElement::new(
            vec![(4, y), (28, y)],
            color.stroke_width(*width),
        ))?;
        side.draw(&Text::new(
            label.as_str(),
            (36, y - 8),
            ("sans-serif", 14).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}

/// A line of `pts` (2 px), its points when there are at most 40, and ± error bars.
fn draw_line(
    chart: &mut Plot,
    pts: &[(f64, f64)],
    errs: Option<&[f64]>,
    color: RGBAColor,
) -> DrawResult {
    chart.draw_series(LineSeries::new(pts.to_vec(), color.stroke_width(2)))?;
    if pts.len() <= 40 {
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    if let Some(errs) = errs {
        chart.draw_series(pts.iter().zip(errs).map(|(&(x, y), &d)| {
            ErrorBar::new_vertical(x, y - d, y, y + d, color.stroke_width(1), 8)
        }))?;
    }
    Ok(())
}

/// A horizontal reference line at `y` across `xs` (1 px), over a shaded band `y ± d`.
fn draw_reference(
    chart: &mut Plot,
    (x0, x1): (f64, f64),
    y: f64,
    d: f64,
    color: RGBAColor,
) -> DrawResult {
    if d > 0.0 {
        chart.draw_series([Rectangle::new(
            [(x0, y - d), (x1, y + d)],
            color.mix(0.12).filled(),
        )])?;
    }
    chart.draw_series(LineSeries::new(
        vec![(x0, y), (x1, y)],
        color.stroke_width(1),
    ))?;
    Ok(())
}

/// A run's curves from its `metrics.csv`: `loss.png` (total and every term per epoch) and
/// `accuracy.png` (train accuracy and the test accuracy of every student / exit / ensemble).
pub fn run_plots(run_dir: &Path) -> Result<()> {
    let m = Metrics::load(run_dir)?;
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let epochs = m.epochs();
    let mut loss = Chart {
        title: format!("{name}: training loss"),
        x_label: "epoch".into(),
        y_label: "mean loss per batch".into(),
        ..Default::default()
    };
    let total: Vec<f64> = m.rows.iter().map(|r| r.loss).collect();
    loss.series.push(Series::new("total", &epochs, &total));
    for (i, term) in m.term_names().into_iter().enumerate() {
        let v: Vec<f64> = m.rows.iter().map(|r| r.terms[i].1).collect();
        loss.series.push(Series::new(term, &epochs, &v));
    }
    loss.write_png(&run_dir.join("loss.png"))?;
    let mut acc = Chart {
        title: format!("{name}: accuracy"),
        x_label: "epoch".into(),
        y_label: "accuracy (%)".into(),
        ..Default::default()
    };
    let train: Vec<f64> = m.rows.iter().map(|r| r.train_acc).collect();
    acc.series.push(Series::new("train", &epochs, &train));
    for entry in m.entries() {
        let (xs, ys): (Vec<f64>, Vec<f64>) = m.test_curve(entry).into_iter().unzip();
        acc.series
            .push(Series::new(format!("test {entry}"), &xs, &ys));
    }
    acc.write_png(&run_dir.join("accuracy.png"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_plots_draw_every_curve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metrics.csv"),
            "epoch,lr,loss,loss_ce,loss_scd,train_acc,test_acc_net,images_per_s,seconds\n\
             1,0.1,2.0,1.5,0.5,40,50,100,10\n2,0.1,1.0,0.8,0.2,70,75,100,10\n\
             3,0.01,0.5,0.4,0.1,85,88,100,10\n",
        )
        .unwrap();
        run_plots(dir.path()).unwrap();
        for f in ["loss.png", "accuracy.png"] {
            let img = image::open(dir.path().join(f)).unwrap().to_rgb8();
            // The plot and the legend column to its right (the longest label: "test net").
            let (w, h) = img.dimensions();
            assert_eq!(h, 560);
            assert!(w >= 900 + 48 + 7 * 5, "{w}");
            // Three loss lines (or two accuracy lines) and the legend: each line's colour is
            // present (also in the legend column), and the picture is not blank.
            let colors: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
            let wanted = if f == "loss.png" { 3 } else { 2 };
            for i in 0..wanted {
                let c = Palette99::pick(i).to_rgba();
                assert!(colors.contains(&[c.0, c.1, c.2]), "{f}: line {i} missing");
                let legend =
                    (900..w).any(|x| (0..h).any(|y| img.get_pixel(x, y).0 == [c.0, c.1, c.2]));
                assert!(legend, "{f}: legend entry {i} missing");
            }
            let dark = img.pixels().filter(|p| p.0.iter().all(|&v| v < 64)).count();
            assert!(dark > 2000, "{f}: {dark} dark pixels (axes and text)");
        }
    }
}
