//! Charts drawn with plotters, as SVG and PNG.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use serde::{Deserialize, Serialize};

use crate::{ReportError, Result};

/// DejaVu Sans, embedded so that rendering needs no system fonts (licence in `assets/`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (800, 520);

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font (checked by a test), so this cannot fail.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// Points joined by a line, in x order (e.g. a palette's accuracy-vs-FLOPs front).
    Line,
    /// Markers only (e.g. individually fine-tuned models, the paper's numbers).
    Scatter,
    /// Both.
    LineScatter,
}

/// One named series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub kind: SeriesKind,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series; points are drawn in the order given except for lines, which are sorted by x.
    pub fn new(name: impl Into<String>, kind: SeriesKind, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            kind,
            points,
        }
    }
}

/// A 2-D chart: title, axis titles (with units), series, optional log x axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
}

// Distinguishable on white, colour-blind friendly (Okabe-Ito).
const COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

impl Figure {
    /// A figure with no series yet.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: &str) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            series: Vec::new(),
        }
    }

    fn err(&self, msg: impl Into<String>) -> ReportError {
        ReportError::Figure {
            figure: self.title.clone(),
            msg: msg.into(),
        }
    }

    /// Axis ranges with 5% padding; errors when there is nothing finite to draw.
    fn ranges(&self) -> Result<((f64, f64), (f64, f64))> {
        let pts = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().copied())
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0))
        };
        if pts().next().is_none() {
            return Err(self.err(if self.log_x {
                "no finite point with x > 0 to draw on a log axis"
            } else {
                "no finite point to draw"
            }));
        }
        let fold = |f: fn(&(f64, f64)) -> f64| {
            pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(f(&p)), hi.max(f(&p)))
            })
        };
        let pad = |(lo, hi): (f64, f64), log: bool| {
            if log {
                let (a, b) = (lo.ln(), hi.ln());
                let m = ((b - a) * 0.05).max(0.05);
                ((a - m).exp(), (b + m).exp())
            } else {
                let m = ((hi - lo) * 0.05).max(hi.abs().max(1e-9) * 0.05);
                (lo - m, hi + m)
            }
        };
        Ok((pad(fold(|p| p.0), self.log_x), pad(fold(|p| p.1), false)))
    }

    /// Writes the figure as SVG.
    pub fn write_svg(&self, path: &Path) -> Result<()> {
        ensure_font();
        let ranges = self.ranges()?;
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        self.draw(root, ranges).map_err(|e| write_err(path, e))
    }

    /// Writes the figure as PNG.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        ensure_font();
        let ranges = self.ranges()?;
        let root = BitMapBackend::new(path, SIZE).into_drawing_area();
        self.draw(root, ranges).map_err(|e| write_err(path, e))
    }

    /// Writes `<stem>.svg` and `<stem>.png` in `dir`.
    pub fn write_both(&self, dir: &Path, stem: &str) -> Result<()> {
        self.write_svg(&dir.join(format!("{stem}.svg")))?;
        self.write_png(&dir.join(format!("{stem}.png")))
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: DrawingArea<DB, Shift>,
        ((x0, x1), (y0, y1)): ((f64, f64), (f64, f64)),
    ) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        if self.log_x {
            self.chart(&root, (x0..x1).log_scale(), y0..y1)?;
        } else {
            self.chart(&root, x0..x1, y0..y1)?;
        }
        root.present().map_err(|e| e.to_string())
    }

    fn chart<DB, X>(
        &self,
        root: &DrawingArea<DB, Shift>,
        x: X,
        y: std::ops::Range<f64>,
    ) -> std::result::Result<(), String>
    where
        DB: DrawingBackend,
        X: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
    {
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x, y)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(e)?;
        for (i, s) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let mut pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0))
                .collect();
            let line = matches!(s.kind, SeriesKind::Line | SeriesKind::LineScatter);
            let marks = matches!(s.kind, SeriesKind::Scatter | SeriesKind::LineScatter);
            if line {
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            let style = colour.stroke_width(2);
            if line {
                chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(e)?
                    .label(&s.name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
            }
            if marks {
                let anno = chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))
                    .map_err(e)?;
                if !line {
                    anno.label(&s.name)
                        .legend(move |(x, y)| Circle::new((x + 9, y), 4, colour.filled()));
                }
            }
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(e)?;
        Ok(())
    }
}

fn write_err(path: &Path, msg: String) -> ReportError {
    ReportError::Write {
        path: path.to_path_buf(),
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(log_x: bool) -> Figure {
        let mut f = Figure::new(
            "Accuracy vs FLOPs",
            "MFLOPs (multiply-adds)",
            "top-1 accuracy (%)",
        );
        f.log_x = log_x;
        f.series.push(Series::new(
            "TOFA palette",
            SeriesKind::LineScatter,
            vec![(30.0, 61.0), (10.0, 55.0), (60.0, 64.0)],
        ));
        f.series.push(Series::new(
            "fine-tuned",
            SeriesKind::Scatter,
            vec![(12.0, 54.0), (f64::NAN, 1.0)],
        ));
        f
    }

    #[test]
    fn embedded_font_is_valid() {
        assert!(register_font("test-family", FontStyle::Normal, FONT).is_ok());
    }

    #[test]
    fn writes_svg_and_png_with_labels_and_legend() {
        let dir = tempfile::tempdir().unwrap();
        for log_x in [false, true] {
            let f = fig(log_x);
            f.write_both(dir.path(), "f").unwrap();
            let svg = std::fs::read_to_string(dir.path().join("f.svg")).unwrap();
            for text in [
                "Accuracy vs FLOPs",
                "MFLOPs (multiply-adds)",
                "TOFA palette",
                "fine-tuned",
            ] {
                assert!(svg.contains(text), "svg lacks {text}");
            }
            let png = std::fs::read(dir.path().join("f.png")).unwrap();
            assert_eq!(&png[1..4], b"PNG");
            assert!(png.len() > 5_000, "png suspiciously small: {}", png.len());
        }
    }

    #[test]
    fn rendering_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        fig(false).write_svg(&dir.path().join("a.svg")).unwrap();
        fig(false).write_svg(&dir.path().join("b.svg")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a.svg")).unwrap(),
            std::fs::read(dir.path().join("b.svg")).unwrap()
        );
    }

    #[test]
    fn empty_figure_is_an_error_naming_it() {
        let mut f = fig(true);
        for s in &mut f.series {
            s.points = vec![(0.0, 1.0)];
        }
        let err = f
            .write_svg(&std::env::temp_dir().join("never.svg"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "figure `Accuracy vs FLOPs`: no finite point with x > 0 to draw on a log axis"
        );
    }
}
