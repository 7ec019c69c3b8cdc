//! A run's learning curves as a PNG: loss and accuracy per epoch for the training, validation and
//! test sets, side by side.
//!
//! Text is rendered with DejaVu Sans embedded in the binary (`assets/DejaVuSans.ttf`, licence in
//! `assets/DEJAVU-LICENSE.txt`) through plotters' `ab_glyph` feature, so the machine that trains
//! needs neither fontconfig nor any installed font: servers and containers often have neither.

use std::fs::{self, File};
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, ImageError};
use plotters::backend::BitMapBackend;
use plotters::chart::ChartBuilder;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::drawing::{DrawingArea, IntoDrawingArea};
use plotters::element::{Circle, PathElement};
use plotters::series::LineSeries;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{BLACK, Color, FontStyle, IntoFont, RGBColor, TextStyle, WHITE, register_font};

use crate::error::{Error, Result};
use crate::metrics::{EpochRecord, Score};

/// Size of the image in pixels: two panels of about 600×400 under the title and legend, wide
/// enough for a few hundred epochs to stay distinguishable.
pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 500;

/// The family every text style asks for. plotters' own default styles also ask for "sans-serif",
/// so registering the embedded font under this name covers any text drawn with them. Other
/// pictures (`stride-viz`) draw their text with it too, after [`register_embedded_font`].
pub const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The colours of matplotlib's default cycle, which readers of training curves know: blue for
/// training, orange for validation, green for test.
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const VALIDATION_COLOR: RGBColor = RGBColor(255, 127, 14);
const TEST_COLOR: RGBColor = RGBColor(44, 160, 44);

/// Draws loss (left panel) and accuracy in percent (right panel) per epoch for train, validation
/// and test (each series only when present), with title, axis labels, a legend, to a PNG at `path`
/// (width×height 1200×500).
///
/// Non-finite values (a diverged epoch) are left out rather than stretching the axes to infinity.
/// The file is written to `path` with ".tmp" appended and then renamed over `path`, so a viewer
/// that reloads the image after every epoch never sees a half-written file.
pub fn plot_curves(records: &[EpochRecord], title: &str, path: &Path) -> Result<()> {
    if records.is_empty() {
        return Err(Error::Plot {
            path: path.to_path_buf(),
            message: "there are no epochs to plot (the run has not finished one yet)".to_string(),
        });
    }
    register_embedded_font().map_err(|message| Error::Plot { path: path.to_path_buf(), message })?;

    let mut records: Vec<&EpochRecord> = records.iter().collect();
    records.sort_by_key(|r| r.epoch);
    let series = [
        ("train", TRAIN_COLOR, records.iter().map(|r| (r.epoch, Some(r.train))).collect::<Vec<_>>()),
        ("validation", VALIDATION_COLOR, records.iter().map(|r| (r.epoch, r.validation)).collect()),
        ("test", TEST_COLOR, records.iter().map(|r| (r.epoch, r.test)).collect()),
    ];
    let curves = |value: fn(&Score) -> f64| -> Vec<Curve> {
        series
            .iter()
            .filter(|(_, _, scores)| scores.iter().any(|(_, s)| s.is_some()))
            .map(|&(name, color, ref scores)| Curve {
                name,
                color,
                points: scores
                    .iter()
                    .filter_map(|&(epoch, s)| Some((epoch as f64, value(&s?))))
                    .filter(|(_, v)| v.is_finite())
                    .collect(),
            })
            .collect()
    };
    let loss = curves(|s| s.loss);
    let accuracy = curves(|s| 100.0 * s.accuracy);
    let first = records[0].epoch;
    let last = records[records.len() - 1].epoch;
    // Markers show single measurements (a one-epoch run, a test score at the end) but merge into
    // a thick smear over hundreds of epochs.
    let marker = match records.len() {
        0..=30 => 4,
        31..=80 => 3,
        _ => 2,
    };

    let mut pixels = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    let panels = [
        Panel {
            caption: "Loss",
            label: "cross-entropy loss",
            curves: loss,
            bounds: (0.0, f64::INFINITY),
            // A fifth of the value: a loss that barely moves is shown as flat, not as noise.
            min_span: |magnitude| (0.2 * magnitude).max(1e-3),
        },
        Panel {
            caption: "Accuracy",
            label: "accuracy (%)",
            curves: accuracy,
            bounds: (0.0, 100.0),
            min_span: |_| 2.0,
        },
    ];
    draw(&mut pixels, title, (first, last), marker, &panels)
        .map_err(|message| Error::Plot { path: path.to_path_buf(), message })?;
    write_png(path, &pixels)
}

/// One line of a panel: the finite values of one data set.
struct Curve {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One of the two charts, and what its y axis shows.
struct Panel {
    caption: &'static str,
    label: &'static str,
    curves: Vec<Curve>,
    /// Values cannot go below or above these (loss ≥ 0, accuracy within 0-100%), so the padding
    /// around the data does not show impossible values.
    bounds: (f64, f64),
    /// The smallest span of the y axis, given the largest magnitude shown, so that a flat or
    /// one-epoch curve still gets a scale.
    min_span: fn(f64) -> f64,
}

fn draw(
    pixels: &mut [u8],
    title: &str,
    epochs: (usize, usize),
    marker: u32,
    panels: &[Panel; 2],
) -> std::result::Result<(), String> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let body = if title.is_empty() {
        root.clone()
    } else {
        root.titled(title, (FONT, 26)).map_err(|e| e.to_string())?
    };
    let (legend, body) = body.split_vertically(30);
    // Both panels show the same series, so one legend serves both.
    let mut series: Vec<(&str, RGBColor)> = Vec::new();
    for curve in panels.iter().flat_map(|p| &p.curves) {
        if !series.iter().any(|&(name, _)| name == curve.name) {
            series.push((curve.name, curve.color));
        }
    }
    draw_legend(&legend, &series)?;
    let (left, right) = body.split_horizontally(WIDTH / 2);
    draw_panel(&left, epochs, marker, &panels[0])?;
    draw_panel(&right, epochs, marker, &panels[1])?;
    root.present().map_err(|e| e.to_string())
}

/// The series' names and colours in a centred row: above the panels rather than in a box inside
/// them, where it would hide whichever corner the curves pass through.
fn draw_legend(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    series: &[(&str, RGBColor)],
) -> std::result::Result<(), String> {
    const SAMPLE: i32 = 28;
    const GAP: i32 = 8;
    const SPACING: i32 = 32;
    let style = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut widths = Vec::with_capacity(series.len());
    for &(name, _) in series {
        widths.push(area.estimate_text_size(name, &style).map_err(|e| e.to_string())?.0 as i32);
    }
    let total =
        widths.iter().map(|w| SAMPLE + GAP + w).sum::<i32>() + SPACING * (widths.len() as i32 - 1).max(0);
    let (width, height) = area.dim_in_pixel();
    let (mut x, y) = ((width as i32 - total) / 2, height as i32 / 2);
    for (&(name, color), w) in series.iter().zip(widths) {
        area.draw(&PathElement::new(vec![(x, y), (x + SAMPLE, y)], color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        area.draw(&Circle::new((x + SAMPLE / 2, y), 4, color.filled())).map_err(|e| e.to_string())?;
        area.draw_text(name, &style, (x + SAMPLE + GAP, y)).map_err(|e| e.to_string())?;
        x += SAMPLE + GAP + w + SPACING;
    }
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    (first, last): (usize, usize),
    marker: u32,
    panel: &Panel,
) -> std::result::Result<(), String> {
    let x_axis = Ticked { scale: epoch_range(first, last).into(), ticks: epoch_ticks(first, last) };
    let y_range = value_range(panel.curves.iter().flat_map(|c| c.points.iter().map(|&(_, v)| v)), panel);
    let (y_ticks, decimals) = nice_ticks(&y_range, 8);
    let scientific = y_ticks.iter().any(|t| t.abs() >= 1e5);
    let y_axis = Ticked { scale: y_range.into(), ticks: y_ticks };
    let y_format = |v: &f64| if scientific { format!("{v:.1e}") } else { format!("{v:.decimals$}") };

    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, (FONT, 20))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_axis, y_axis)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(panel.label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&y_format)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .bold_line_style(BLACK.mix(0.12))
        .axis_style(BLACK.mix(0.6))
        .draw()
        .map_err(|e| e.to_string())?;

    for curve in &panel.curves {
        chart
            .draw_series(
                LineSeries::new(curve.points.iter().copied(), curve.color.filled().stroke_width(2))
                    .point_size(marker),
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A linear axis with ticks (labelled grid lines) exactly where we put them and no lighter lines
/// between: plotters' own choice puts ticks at fractional epochs and writes "80.0" for 80.
/// (plotters' `with_key_points` would place the ticks, but the result has no `f64` value
/// formatter, which drawing the mesh requires even when a label formatter is given.)
struct Ticked {
    scale: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.scale.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.scale.range()
    }
}

/// From the first to the last epoch, at least one epoch wide so a single epoch is not a
/// zero-width axis, with a little room on both sides so the end points' markers are not cut.
fn epoch_range(first: usize, last: usize) -> Range<f64> {
    let (lo, hi) = (first as f64, last.max(first.saturating_add(1)) as f64);
    let pad = 0.03 * (hi - lo);
    lo - pad..hi + pad
}

/// Whole epochs only (a fractional epoch means nothing), at most about ten of them: every epoch
/// for short runs, else the first epoch and the multiples of 2, 5, 10, 20, 50...
fn epoch_ticks(first: usize, last: usize) -> Vec<f64> {
    let last = last.max(first.saturating_add(1));
    let span = last - first;
    let mut scale = 1usize;
    let step = loop {
        if let Some(step) = [1, 2, 5].map(|m| m * scale).into_iter().find(|&step| span / step < 10) {
            break step;
        }
        scale = scale.saturating_mul(10);
    };
    let mut ticks = vec![first as f64];
    let next = (first / step).saturating_add(1).saturating_mul(step);
    ticks.extend((next..=last).step_by(step).map(|e| e as f64));
    // The first epoch and the next multiple can sit too close to read: keep the multiple.
    if ticks.len() > 2 && (ticks[1] - ticks[0]) < step as f64 / 2.0 {
        ticks.remove(0);
    }
    ticks
}

/// At most `max` ticks at multiples of 1, 2 or 5 times a power of ten within `range`, and the
/// decimals that write them all alike ("0.5, 1.0, 1.5" rather than "0.5, 1, 1.5").
fn nice_ticks(range: &Range<f64>, max: usize) -> (Vec<f64>, usize) {
    let span = range.end - range.start;
    if !(span > 0.0 && span.is_finite()) {
        return (Vec::new(), 0);
    }
    let raw = span / max as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].map(|m| m * magnitude).into_iter().find(|&s| s >= raw).unwrap_or(raw);
    let decimals = (-step.log10().floor()).clamp(0.0, 12.0) as usize;
    let (first, last) = ((range.start / step).ceil() as i64, (range.end / step).floor() as i64);
    ((first..=last).map(|k| k as f64 * step).collect(), decimals)
}

/// The finite values' range with some padding, kept within the panel's bounds.
fn value_range(values: impl Iterator<Item = f64>, panel: &Panel) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (floor, ceil) = panel.bounds;
    if lo > hi {
        // Nothing finite to show: an empty panel with a plain scale (0-1 loss, 0-100%).
        return floor..if ceil.is_finite() { ceil } else { floor + 1.0 };
    }
    let min_span = (panel.min_span)(lo.abs().max(hi.abs()));
    let pad = (0.06 * (hi - lo)).max((min_span - (hi - lo)) / 2.0);
    let (mut lo, mut hi) = ((lo - pad).max(floor), (hi + pad).min(ceil));
    // Values at a bound (100% accuracy) still get the whole span, on the other side.
    if hi - lo < min_span {
        if lo <= floor {
            hi = (lo + min_span).min(ceil);
        } else {
            lo = (hi - min_span).max(floor);
        }
    }
    lo..hi
}

/// Registers the embedded font with plotters under [`FONT`] once per process; plotters keeps it
/// in a global table, and every text it draws fails without it.
pub fn register_embedded_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()) {
        Ok(())
    } else {
        Err("the embedded font DejaVuSans.ttf could not be loaded".to_string())
    }
}

/// Encodes the RGB pixels as PNG next to `path` and renames the file into place.
fn write_png(path: &Path, pixels: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = encode_png(&tmp, path, pixels)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io("write", path, e)));
    if written.is_err() {
        // Best effort: a leftover .tmp is harmless, and the error above is the one to report.
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn encode_png(tmp: &Path, path: &Path, pixels: &[u8]) -> Result<()> {
    let file = File::create(tmp).map_err(|e| Error::io("write", path, e))?;
    let mut out = BufWriter::new(file);
    PngEncoder::new(&mut out).write_image(pixels, WIDTH, HEIGHT, ExtendedColorType::Rgb8).map_err(
        |e| match e {
            ImageError::IoError(e) => Error::io("write", path, e),
            e => Error::Plot { path: path.to_path_buf(), message: format!("cannot encode the PNG: {e}") },
        },
    )?;
    out.into_inner().map_err(|e| Error::io("write", path, e.into_error()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, train: (f64, f64), validation: Option<(f64, f64)>) -> EpochRecord {
        let score = |(loss, accuracy)| Score { loss, accuracy };
        EpochRecord {
            epoch,
            lr: 0.01,
            train: score(train),
            validation: validation.map(score),
            test: None,
            seconds: 1.0,
            images_per_second: 1000.0,
        }
    }

    fn pixels_of(image: &image::RgbImage, color: RGBColor) -> usize {
        image.pixels().filter(|p| p.0 == [color.0, color.1, color.2]).count()
    }

    #[test]
    fn three_epochs_draw_every_series_on_a_1200_by_500_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let mut records = vec![
            record(1, (1.9, 0.35), Some((1.6, 0.45))),
            record(2, (1.1, 0.62), Some((1.0, 0.66))),
            record(3, (0.7, 0.78), Some((0.8, 0.74))),
        ];
        records[2].test = Some(Score { loss: 0.82, accuracy: 0.73 });
        plot_curves(&records, "resnet on cifar10", &path).unwrap();

        let image = image::open(&path).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
        for color in [TRAIN_COLOR, VALIDATION_COLOR, TEST_COLOR] {
            assert!(pixels_of(&image, color) > 50, "{color:?} is missing");
        }
        let distinct: std::collections::HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
        assert!(distinct.len() > 20, "only {} colours: is the text drawn?", distinct.len());
        assert!(!dir.path().join("curves.png.tmp").exists());
    }

    #[test]
    fn one_epoch_and_non_finite_values_still_plot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        // A title wider than the image is cut at its edges, not a panic.
        plot_curves(&[record(1, (2.3, 0.1), None)], &"one epoch ".repeat(40), &path).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        assert!(pixels_of(&image, TRAIN_COLOR) > 20);
        assert_eq!(pixels_of(&image, VALIDATION_COLOR), 0);

        let records = [
            record(1, (2.3, 0.1), Some((f64::NAN, 0.2))),
            record(2, (f64::INFINITY, f64::NAN), Some((f64::NAN, f64::NEG_INFINITY))),
            record(3, (f64::MAX, 7.0), Some((-f64::MAX, -1.0))),
        ];
        plot_curves(&records, "", &path).unwrap();
    }

    #[test]
    fn no_epochs_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let err = plot_curves(&[], "empty", &path).unwrap_err();
        assert!(matches!(&err, Error::Plot { path: p, .. } if *p == path), "{err:?}");
        assert!(err.to_string().contains("no epochs"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("curves.png");
        let err = plot_curves(&[record(1, (2.3, 0.1), None)], "run", &path).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn epoch_ticks_are_whole_and_few() {
        assert_eq!(epoch_ticks(1, 1), [1.0, 2.0]);
        assert_eq!(epoch_ticks(1, 3), [1.0, 2.0, 3.0]);
        assert_eq!(epoch_ticks(1, 10), (1..=10).map(f64::from).collect::<Vec<_>>());
        let long = epoch_ticks(1, 200);
        assert!(long.len() <= 11 && long.iter().all(|t| t.fract() == 0.0), "{long:?}");
        assert_eq!(long.last(), Some(&200.0));
    }
}
