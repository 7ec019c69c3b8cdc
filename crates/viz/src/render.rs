//! Drawing the pictures: tiles from numbers, grids of tiles with their numbers, panels side by
//! side with captions, colour scale bars, and the page around them (title, lines of
//! explanation), written as PNG.
//!
//! ```text
//! ┌──────────────────────────────────────┐
//! │ title                                │  what the picture shows (layer path, shapes, class)
//! │ lines                                │  how to read it (scales, numbering)
//! │            body                      │  a grid of tiles, or panels side by side
//! │     ▕low ░░▒▒▓▓██ high▏              │  the colour scale with its numbers
//! │          bar label                   │
//! └──────────────────────────────────────┘
//! ```
//!
//! Pixels are drawn here directly; text goes through plotters with the DejaVu Sans font embedded
//! in `stride-train` ([`stride_train::plot::register_embedded_font`]), so no installed font is
//! needed. Small tiles are enlarged by whole factors with nearest-neighbour sampling, so that a
//! 5×5 filter shows 25 crisp squares rather than a blur.

use std::path::Path;

use image::{ImageFormat, Rgb, RgbImage};
use plotters::backend::BitMapBackend;
use plotters::drawing::IntoDrawingArea;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{IntoFont, RGBColor, TextStyle};
use stride_tensor::Tensor;
use stride_train::plot::{FONT, register_embedded_font};

use crate::colormap::{ColorMap, normalize};
use crate::error::{Error, Result};

/// Font sizes in pixels.
pub const TITLE_SIZE: f64 = 20.0;
pub const LINE_SIZE: f64 = 14.0;
pub const LABEL_SIZE: f64 = 12.0;

/// Space around the page and between its parts.
const MARGIN: u32 = 16;
/// The widest a grid gets before its tiles are made smaller.
pub const MAX_GRID_WIDTH: u32 = 1600;
/// Tiles are enlarged until their longer side reaches this many pixels (when the grid allows).
pub const MIN_TILE: u32 = 56;
/// The widest space between tiles (between large tiles; small ones sit closer).
const MAX_GAP: u32 = 8;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([0, 0, 0]);
const SOFT_INK: Rgb<u8> = Rgb([70, 70, 70]);
const FRAME: Rgb<u8> = Rgb([160, 160, 160]);

/// Where a text's position is on the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    TopLeft,
    Top,
    TopRight,
    Left,
    Right,
}

/// The size of `text` in pixels at `size`.
pub fn text_size(text: &str, size: f64) -> Result<(u32, u32)> {
    register_embedded_font().map_err(Error::Render)?;
    let (w, h) = (FONT, size).into_font().box_size(text).map_err(|e| Error::Render(e.to_string()))?;
    Ok((w, h.max(size.ceil() as u32)))
}

/// Draws `text` onto `image` at `at`, `anchor` saying which point of the text that is.
pub fn draw_text(
    image: &mut RgbImage,
    text: &str,
    at: (i32, i32),
    size: f64,
    anchor: Anchor,
    color: Rgb<u8>,
) -> Result<()> {
    register_embedded_font().map_err(Error::Render)?;
    let (h, v) = match anchor {
        Anchor::TopLeft => (HPos::Left, VPos::Top),
        Anchor::Top => (HPos::Center, VPos::Top),
        Anchor::TopRight => (HPos::Right, VPos::Top),
        Anchor::Left => (HPos::Left, VPos::Center),
        Anchor::Right => (HPos::Right, VPos::Center),
    };
    // plotters puts the top of a "top"-anchored line about 0.25 em above the point (it aligns
    // the em box, not the glyphs); move it down so that the ink starts at the point.
    let at = match v {
        VPos::Top => (at.0, at.1 + (0.28 * size).round() as i32),
        _ => at,
    };
    let (width, height) = image.dimensions();
    let color = RGBColor(color[0], color[1], color[2]);
    let style = TextStyle::from((FONT, size).into_font()).color(&color).pos(Pos::new(h, v));
    // An `RgbImage` is exactly width·height·3 bytes, the buffer plotters draws into.
    let buffer: &mut [u8] = image;
    let area = BitMapBackend::with_buffer(buffer, (width, height)).into_drawing_area();
    area.draw_text(text, &style, at).map_err(|e| Error::Render(e.to_string()))?;
    area.present().map_err(|e| Error::Render(e.to_string()))
}

/// A `height × width` tile from values in [0, 1] (row-major) through a colour map.
pub fn tile(values: &[f32], height: usize, width: usize, map: ColorMap) -> RgbImage {
    RgbImage::from_fn(width as u32, height as u32, |x, y| map.at(values[y as usize * width + x as usize]))
}

/// A colour tile from three planes `[3, H, W]` of values in [0, 1] (R, G, B).
pub fn rgb_tile(planes: &[f32], height: usize, width: usize) -> RgbImage {
    let plane = height * width;
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let i = y as usize * width + x as usize;
        Rgb([0, 1, 2].map(|c| (255.0 * planes[c * plane + i].clamp(0.0, 1.0)).round() as u8))
    })
}

/// `image` at `width × height`: nearest-neighbour when enlarging (crisp pixels), a triangle filter
/// when shrinking (no aliasing).
pub fn resize(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        return image.clone();
    }
    let filter = if width >= image.width() && height >= image.height() {
        image::imageops::FilterType::Nearest
    } else {
        image::imageops::FilterType::Triangle
    };
    image::imageops::resize(image, width, height, filter)
}

/// Copies `src` into `dst` with its top-left corner at `(x, y)`, clipped to `dst`.
pub fn blit(dst: &mut RgbImage, src: &RgbImage, x: u32, y: u32) {
    for (sx, sy, pixel) in src.enumerate_pixels() {
        let (dx, dy) = (x + sx, y + sy);
        if dx < dst.width() && dy < dst.height() {
            dst.put_pixel(dx, dy, *pixel);
        }
    }
}

/// A one-pixel frame just outside the rectangle at `(x, y)` of `width × height`.
fn frame(image: &mut RgbImage, x: u32, y: u32, width: u32, height: u32) {
    let (x0, y0) = (x.saturating_sub(1), y.saturating_sub(1));
    let (x1, y1) = (x + width, y + height);
    for px in x0..=x1 {
        for py in [y0, y1] {
            if px < image.width() && py < image.height() {
                image.put_pixel(px, py, FRAME);
            }
        }
    }
    for py in y0..=y1 {
        for px in [x0, x1] {
            if px < image.width() && py < image.height() {
                image.put_pixel(px, py, FRAME);
            }
        }
    }
}

/// A number in at most about four significant digits: `0.0213`, `-1.5`, `2.4e-5`.
pub fn format_value(v: f32) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e4).contains(&a) {
        format!("{v:.2e}")
    } else {
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 4) as usize;
        let text = format!("{v:.decimals$}");
        if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
    }
}

/// The geometry of a grid of equal tiles: `columns × rows` cells of `tile_width × tile_height`
/// pixels, `gap` pixels apart, numbered row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub columns: u32,
    pub rows: u32,
    /// A tile's size on the picture (after enlarging or shrinking).
    pub tile_width: u32,
    pub tile_height: u32,
    /// White space between neighbouring tiles, wider for larger tiles.
    pub gap: u32,
}

impl Grid {
    /// About as many columns as rows (more columns for tall tiles, fewer for wide ones) for
    /// `count` tiles of `height × width` values, each shown at [`display_size`].
    pub fn square(count: usize, height: usize, width: usize) -> Grid {
        let count = count.max(1);
        let aspect = height.max(1) as f64 / width.max(1) as f64;
        let columns = ((count as f64 * aspect).sqrt().ceil() as usize).clamp(1, count);
        let rows = count.div_ceil(columns);
        Grid::with_shape(rows, columns, height, width)
    }

    /// `rows × columns` tiles of `height × width` values, each shown at [`display_size`].
    pub fn with_shape(rows: usize, columns: usize, height: usize, width: usize) -> Grid {
        let (tile_width, tile_height) = display_size(height, width, columns);
        let gap = match tile_width.min(tile_height) {
            0..12 => 2,
            12..32 => 4,
            _ => MAX_GAP,
        };
        Grid { columns: columns.max(1) as u32, rows: rows.max(1) as u32, tile_width, tile_height, gap }
    }

    /// Width and height of the tiles with the gaps between them.
    pub fn size(&self) -> (u32, u32) {
        (
            self.columns * (self.tile_width + self.gap) - self.gap,
            self.rows * (self.tile_height + self.gap) - self.gap,
        )
    }

    /// The top-left corner of tile `index` (row by row), relative to the grid's corner.
    pub fn cell(&self, index: usize) -> (u32, u32) {
        let (row, column) = (index as u32 / self.columns, index as u32 % self.columns);
        (column * (self.tile_width + self.gap), row * (self.tile_height + self.gap))
    }
}

/// How big a `height × width` tile is drawn in a grid of `columns` columns: enlarged by the
/// smallest whole factor that makes its longer side at least [`MIN_TILE`] pixels, but never so
/// much that the grid grows wider than [`MAX_GRID_WIDTH`]; shrunk by a whole divisor when even its
/// own size is too wide. Returns `(width, height)`.
pub fn display_size(height: usize, width: usize, columns: usize) -> (u32, u32) {
    let (h, w) = (height.max(1) as u32, width.max(1) as u32);
    let columns = columns.max(1) as u32;
    let budget = (MAX_GRID_WIDTH / columns).saturating_sub(MAX_GAP).max(1);
    let wanted = MIN_TILE.div_ceil(h.max(w)).max(1);
    let allowed = budget / w;
    if allowed >= 1 {
        let scale = wanted.min(allowed);
        (w * scale, h * scale)
    } else {
        let divisor = w.div_ceil(budget);
        (w.div_ceil(divisor), h.div_ceil(divisor))
    }
}

/// How the tiles of a grid are numbered on the picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GridLabels {
    /// `0, 1, 2, …` row by row: under each tile where the number fits, otherwise at the start of
    /// each row.
    Index,
    /// A matrix: each row and each column numbered from 0, with a title for each (`filter`,
    /// `input channel`).
    Matrix { rows: String, columns: String },
}

/// The tiles (in order, each drawn at the grid's tile size) on a white image with their numbers.
pub fn render_grid(tiles: &[RgbImage], grid: &Grid, labels: &GridLabels) -> Result<RgbImage> {
    let (grid_width, grid_height) = grid.size();
    let number_width = |n: usize| text_size(&n.to_string(), LABEL_SIZE).map(|(w, _)| w);
    let label_height = LABEL_SIZE.ceil() as u32 + 4;
    let largest = tiles.len().saturating_sub(1);
    let (left, top, below) = match labels {
        GridLabels::Index => {
            if number_width(largest)? + 2 <= grid.tile_width {
                (0, 0, label_height)
            } else {
                let widest_row_start = largest - largest % grid.columns as usize;
                (number_width(widest_row_start)? + 6, 0, 0)
            }
        }
        GridLabels::Matrix { rows, .. } => {
            // The row title ("filter ↓") sits above the row numbers, in the same margin.
            let row_title = text_size(&format!("{rows} ↓"), LABEL_SIZE)?.0;
            let left = (number_width(grid.rows as usize)? + 6).max(row_title + 4);
            (left, 2 * label_height + 4, 0)
        }
    };
    let width = left + grid_width;
    let height = top + grid_height + grid.rows * below;
    let mut image = RgbImage::from_pixel(width.max(1), height.max(1), WHITE);
    let cell_height = grid.tile_height + grid.gap + below;
    let at = |index: usize| {
        let (x, _) = grid.cell(index);
        let row = index as u32 / grid.columns;
        (left + x, top + row * cell_height)
    };
    for (index, t) in tiles.iter().enumerate() {
        let (x, y) = at(index);
        blit(&mut image, &resize(t, grid.tile_width, grid.tile_height), x, y);
        frame(&mut image, x, y, grid.tile_width, grid.tile_height);
    }
    match labels {
        GridLabels::Index if below > 0 => {
            for index in 0..tiles.len() {
                let (x, y) = at(index);
                let centre = (x + grid.tile_width / 2) as i32;
                draw_text(
                    &mut image,
                    &index.to_string(),
                    (centre, (y + grid.tile_height + 3) as i32),
                    LABEL_SIZE,
                    Anchor::Top,
                    SOFT_INK,
                )?;
            }
        }
        GridLabels::Index => {
            for row in 0..grid.rows {
                let first = (row * grid.columns) as usize;
                if first >= tiles.len() {
                    break;
                }
                let y = (top + row * cell_height + grid.tile_height / 2) as i32;
                draw_text(
                    &mut image,
                    &first.to_string(),
                    (left as i32 - 5, y),
                    LABEL_SIZE,
                    Anchor::Right,
                    SOFT_INK,
                )?;
            }
        }
        GridLabels::Matrix { rows, columns } => {
            // Every k-th number, so that neighbours do not overlap.
            let every = |space: u32, needed: u32| needed.div_ceil(space.max(1)).max(1);
            let row_step = every(grid.tile_height + grid.gap, label_height);
            for row in (0..grid.rows).step_by(row_step as usize) {
                let y = (top + row * cell_height + grid.tile_height / 2) as i32;
                draw_text(
                    &mut image,
                    &row.to_string(),
                    (left as i32 - 5, y),
                    LABEL_SIZE,
                    Anchor::Right,
                    SOFT_INK,
                )?;
            }
            let column_step = every(grid.tile_width + grid.gap, number_width(grid.columns as usize)? + 6);
            for column in (0..grid.columns).step_by(column_step as usize) {
                let x = (left + column * (grid.tile_width + grid.gap) + grid.tile_width / 2) as i32;
                let y = (label_height + 2) as i32;
                draw_text(&mut image, &column.to_string(), (x, y), LABEL_SIZE, Anchor::Top, SOFT_INK)?;
            }
            draw_text(
                &mut image,
                &format!("{columns} →"),
                ((left + grid_width / 2) as i32, 0),
                LABEL_SIZE,
                Anchor::Top,
                INK,
            )?;
            draw_text(
                &mut image,
                &format!("{rows} ↓"),
                (0, label_height as i32 + 2),
                LABEL_SIZE,
                Anchor::TopLeft,
                INK,
            )?;
        }
    }
    Ok(image)
}

/// Pictures side by side, each with a caption above it, aligned at the top.
pub fn side_by_side(panels: &[(&str, RgbImage)]) -> Result<RgbImage> {
    const SPACING: u32 = 24;
    let caption_height = LINE_SIZE.ceil() as u32 + 6;
    let mut widths = Vec::with_capacity(panels.len());
    for (caption, picture) in panels {
        widths.push(picture.width().max(text_size(caption, LINE_SIZE)?.0));
    }
    let width = widths.iter().sum::<u32>() + SPACING * (panels.len() as u32).saturating_sub(1);
    let height = caption_height + panels.iter().map(|(_, p)| p.height()).max().unwrap_or(0);
    let mut image = RgbImage::from_pixel(width.max(1), height.max(1), WHITE);
    let mut x = 0;
    for ((caption, picture), w) in panels.iter().zip(widths) {
        let centre = x + w / 2;
        draw_text(&mut image, caption, (centre as i32, 0), LINE_SIZE, Anchor::Top, INK)?;
        let left = centre - picture.width() / 2;
        blit(&mut image, picture, left, caption_height);
        frame(&mut image, left, caption_height, picture.width(), picture.height());
        x += w + SPACING;
    }
    Ok(image)
}

/// A horizontal colour scale: the map from `low` to `high` with their values written under the
/// ends (and 0 under its place, when 0 is inside), and `label` saying what the colour measures.
#[derive(Debug, Clone, PartialEq)]
pub struct ColourBar {
    pub map: ColorMap,
    pub low: f32,
    pub high: f32,
    pub label: String,
    /// Words for the ends instead of the numbers (`"tile min"`, `"tile max"`).
    pub end_words: Option<(String, String)>,
}

const BAR_WIDTH: u32 = 320;
const BAR_HEIGHT: u32 = 14;

impl ColourBar {
    fn height() -> u32 {
        BAR_HEIGHT + 4 + LABEL_SIZE.ceil() as u32 + 4 + LINE_SIZE.ceil() as u32 + 4
    }

    fn end_texts(&self) -> (String, String) {
        self.end_words.clone().unwrap_or_else(|| (format_value(self.low), format_value(self.high)))
    }

    fn width(&self) -> Result<u32> {
        let (low, high) = self.end_texts();
        let ends = text_size(&low, LABEL_SIZE)?.0 + text_size(&high, LABEL_SIZE)?.0;
        Ok((BAR_WIDTH + ends + 16).max(text_size(&self.label, LINE_SIZE)?.0))
    }

    /// Draws the bar centred on `centre_x`, its top at `y`.
    fn draw(&self, image: &mut RgbImage, centre_x: u32, y: u32) -> Result<()> {
        let x0 = centre_x.saturating_sub(BAR_WIDTH / 2);
        for dx in 0..BAR_WIDTH {
            let colour = self.map.at(dx as f32 / (BAR_WIDTH - 1) as f32);
            for dy in 0..BAR_HEIGHT {
                if x0 + dx < image.width() && y + dy < image.height() {
                    image.put_pixel(x0 + dx, y + dy, colour);
                }
            }
        }
        frame(image, x0, y, BAR_WIDTH, BAR_HEIGHT);
        let (low, high) = self.end_texts();
        let middle = (y + BAR_HEIGHT / 2) as i32;
        draw_text(image, &low, (x0 as i32 - 6, middle), LABEL_SIZE, Anchor::Right, INK)?;
        draw_text(image, &high, ((x0 + BAR_WIDTH) as i32 + 6, middle), LABEL_SIZE, Anchor::Left, INK)?;
        let below = y + BAR_HEIGHT + 4;
        if self.end_words.is_none() && self.low < 0.0 && self.high > 0.0 {
            let zero = x0 + ((-self.low / (self.high - self.low)) * (BAR_WIDTH - 1) as f32).round() as u32;
            for dy in 0..4 {
                if zero < image.width() && y + BAR_HEIGHT + dy < image.height() {
                    image.put_pixel(zero, y + BAR_HEIGHT + dy, INK);
                }
            }
            draw_text(image, "0", (zero as i32, below as i32), LABEL_SIZE, Anchor::Top, INK)?;
        }
        let label_y = below + LABEL_SIZE.ceil() as u32 + 4;
        draw_text(image, &self.label, (centre_x as i32, label_y as i32), LINE_SIZE, Anchor::Top, SOFT_INK)
    }
}

/// A whole picture: a title, lines that say how to read it, the body, and a colour scale.
#[derive(Debug, Clone)]
pub struct Figure {
    pub title: String,
    pub lines: Vec<String>,
    pub body: RgbImage,
    pub bar: Option<ColourBar>,
}

impl Figure {
    /// The page: everything centred, with margins, on white.
    pub fn render(&self) -> Result<RgbImage> {
        let title = text_size(&self.title, TITLE_SIZE)?;
        let mut width = self.body.width().max(title.0);
        for line in &self.lines {
            width = width.max(text_size(line, LINE_SIZE)?.0);
        }
        if let Some(bar) = &self.bar {
            width = width.max(bar.width()?);
        }
        let title_height = TITLE_SIZE.ceil() as u32 + 8;
        let line_height = LINE_SIZE.ceil() as u32 + 6;
        let bar_height = if self.bar.is_some() { ColourBar::height() + MARGIN } else { 0 };
        let page_width = width + 2 * MARGIN;
        let body_top = MARGIN + title_height + line_height * self.lines.len() as u32 + MARGIN / 2;
        let page_height = body_top + self.body.height() + MARGIN + bar_height;
        let mut page = RgbImage::from_pixel(page_width, page_height, WHITE);
        let centre = page_width / 2;
        draw_text(&mut page, &self.title, (centre as i32, MARGIN as i32), TITLE_SIZE, Anchor::Top, INK)?;
        for (i, line) in self.lines.iter().enumerate() {
            let y = MARGIN + title_height + i as u32 * line_height;
            draw_text(&mut page, line, (centre as i32, y as i32), LINE_SIZE, Anchor::Top, SOFT_INK)?;
        }
        blit(&mut page, &self.body, centre - self.body.width() / 2, body_top);
        if let Some(bar) = &self.bar {
            bar.draw(&mut page, centre, body_top + self.body.height() + MARGIN)?;
        }
        Ok(page)
    }
}

/// The picture a network sees, from its normalised input `[1, C, H, W]` or `[C, H, W]`: each
/// channel back to [0, 1] with the normalisation's `mean` and `std` (one value, or one per
/// channel; empty for none), grey for one channel, colour for three, the channels' mean otherwise.
pub fn input_picture(input: &Tensor, mean: &[f32], std: &[f32]) -> Result<RgbImage> {
    let dims = input.dims();
    let [c, h, w] = match *dims {
        [1, c, h, w] | [c, h, w] => [c, h, w],
        _ => {
            return Err(Error::Invalid(format!(
                "a picture is drawn from a [1, C, H, W] or [C, H, W] tensor, got {}",
                input.shape()
            )));
        }
    };
    let plane = h * w;
    let mut pixels = input.data().to_vec();
    for (ch, values) in pixels.chunks_exact_mut(plane).enumerate() {
        let m = if mean.is_empty() { 0.0 } else { mean[ch % mean.len()] };
        let s = if std.is_empty() { 1.0 } else { std[ch % std.len()] };
        for v in values {
            *v = (*v * s + m).clamp(0.0, 1.0);
        }
    }
    Ok(match c {
        3 => rgb_tile(&pixels, h, w),
        _ => {
            let grey: Vec<f32> =
                (0..plane).map(|i| (0..c).map(|ch| pixels[ch * plane + i]).sum::<f32>() / c as f32).collect();
            tile(&grey, h, w, ColorMap::Gray)
        }
    })
}

/// `picture` enlarged by a whole factor until its longer side is at least `min` pixels.
pub fn enlarge(picture: &RgbImage, min: u32) -> RgbImage {
    let longer = picture.width().max(picture.height()).max(1);
    let scale = min.div_ceil(longer).max(1);
    resize(picture, picture.width() * scale, picture.height() * scale)
}

/// A heat map drawn over a picture: `values` (row-major, the picture's size, in [0, 1] for the
/// colour map) mixed with the picture's grey by `opacity` (0: only the picture, 1: only the heat).
pub fn overlay(picture: &RgbImage, values: &[f32], map: ColorMap, opacity: f32) -> RgbImage {
    let width = picture.width() as usize;
    RgbImage::from_fn(picture.width(), picture.height(), |x, y| {
        let p = picture.get_pixel(x, y).0;
        let grey = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
        let heat = map.at(values[y as usize * width + x as usize]).0;
        Rgb(heat.map(|h| (opacity * h as f32 + (1.0 - opacity) * grey).round() as u8))
    })
}

/// A `height × width` map of values drawn through `map` with `lo` and `hi` at its ends.
pub fn heat_tile(values: &[f32], height: usize, width: usize, lo: f32, hi: f32, map: ColorMap) -> RgbImage {
    tile(&normalize(values, lo, hi), height, width, map)
}

/// Writes `image` as a PNG at `path`, which must end in `.png`.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(Error::Invalid(format!(
            "{}: pictures are written as PNG; give a file name ending in .png",
            path.display()
        )));
    }
    image
        .save_with_format(path, ImageFormat::Png)
        .map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tiles_are_enlarged_by_whole_factors_and_large_grids_shrink() {
        // A 5×5 filter: 12× (60 px), the first whole factor reaching 56.
        assert_eq!(display_size(5, 5, 8), (60, 60));
        assert_eq!(display_size(3, 3, 8), (57, 57));
        assert_eq!(display_size(28, 28, 3), (56, 56));
        assert_eq!(display_size(112, 112, 8), (112, 112), "never enlarged beyond need");
        // 1024 one-pixel maps in 32 columns: at most 1600/32 − 8 = 42 px each.
        assert_eq!(display_size(1, 1, 32), (42, 42));
        // 224-wide maps in 8 columns do not fit 1600 px: halved.
        assert_eq!(display_size(224, 224, 8), (112, 112));
    }

    #[test]
    fn grids_are_about_square_and_cells_are_where_the_size_says() {
        let g = Grid::square(6, 5, 5);
        assert_eq!((g.columns, g.rows), (3, 2));
        assert_eq!(g.gap, 8);
        assert_eq!(g.size(), (3 * 60 + 2 * 8, 2 * 60 + 8));
        assert_eq!(g.cell(0), (0, 0));
        assert_eq!(g.cell(4), (68, 68));
        let g = Grid::square(64, 3, 3);
        assert_eq!((g.columns, g.rows), (8, 8));
        assert_eq!(Grid::square(1, 7, 7).size(), (56, 56));
        // Wide tiles: fewer columns.
        let g = Grid::square(16, 2, 8);
        assert_eq!((g.columns, g.rows), (2, 8));
        let g = Grid::with_shape(6, 3, 5, 5);
        assert_eq!((g.columns, g.rows), (3, 6));
    }

    #[test]
    fn grid_labels_add_room_for_the_numbers() {
        let tiles = vec![RgbImage::from_pixel(5, 5, Rgb([255, 0, 0])); 6];
        let grid = Grid::square(6, 5, 5);
        let image = render_grid(&tiles, &grid, &GridLabels::Index).unwrap();
        let (w, h) = grid.size();
        assert_eq!(image.width(), w, "numbers under the tiles");
        assert_eq!(image.height(), h + 2 * (LABEL_SIZE.ceil() as u32 + 4));
        assert_eq!(*image.get_pixel(30, 30), Rgb([255, 0, 0]));
        assert!(image.pixels().any(|p| p.0 != [255, 0, 0] && p.0 != [255, 255, 255]), "text and frames");

        let matrix = GridLabels::Matrix { rows: "filter".into(), columns: "input channel".into() };
        let image = render_grid(&tiles, &Grid::with_shape(2, 3, 5, 5), &matrix).unwrap();
        assert!(image.width() > w && image.height() > 2 * 60);
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(-1.25), "-1.25");
        assert_eq!(format_value(0.021345), "0.0213");
        assert_eq!(format_value(123.456), "123.5");
        assert_eq!(format_value(2.4e-5), "2.40e-5");
        assert_eq!(format_value(12345.0), "1.23e4");
    }

    #[test]
    fn a_figure_has_room_for_its_title_lines_and_bar() {
        let body = RgbImage::from_pixel(100, 50, Rgb([0, 0, 255]));
        let bar = ColourBar {
            map: ColorMap::Diverging,
            low: -1.0,
            high: 2.0,
            label: "what the colour means".into(),
            end_words: None,
        };
        let figure = Figure { title: "a title".into(), lines: vec!["one line".into()], body, bar: Some(bar) };
        let page = figure.render().unwrap();
        assert!(page.width() >= BAR_WIDTH + 2 * MARGIN, "{:?}", page.dimensions());
        assert!(page.height() > 50 + 2 * MARGIN + ColourBar::height());
        assert!(page.pixels().any(|p| p.0 == [0, 0, 255]), "the body is drawn");
        assert!(page.pixels().any(|p| p.0 == [247, 247, 247]), "the bar is drawn");
    }

    #[test]
    fn input_pictures_undo_the_normalisation() {
        let grey = Tensor::new(vec![1, 1, 1, 2], vec![-1.0, 1.0]).unwrap();
        let image = input_picture(&grey, &[0.5], &[0.5]).unwrap();
        assert_eq!(image.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(image.get_pixel(1, 0).0, [255, 255, 255]);
        let colour = Tensor::new(vec![3, 1, 1], vec![1.0, 0.0, 0.0]).unwrap();
        assert_eq!(input_picture(&colour, &[], &[]).unwrap().get_pixel(0, 0).0, [255, 0, 0]);
        assert!(input_picture(&Tensor::zeros([4]).unwrap(), &[], &[]).is_err());
    }

    #[test]
    fn only_png_names_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let image = RgbImage::new(2, 2);
        save_png(&image, &dir.path().join("a.png")).unwrap();
        let err = save_png(&image, &dir.path().join("a.jpg")).unwrap_err().to_string();
        assert!(err.ends_with("pictures are written as PNG; give a file name ending in .png"), "{err}");
        let missing = dir.path().join("no").join("a.png");
        let err = save_png(&image, &missing).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot write {}", missing.display())), "{err}");
    }
}
