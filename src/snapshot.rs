//! Pictures of a registration: three orthogonal slices of the fixed, moving and warped images, a
//! checkerboard (and optionally an edge overlay) of fixed and warped, and the loss curve per pyramid
//! level, in one PNG (`regsh snapshot`).
//!
//! # What the picture shows
//!
//! Rows, top to bottom: **axial** (the world plane `z = p_z`), **coronal** (`y = p_y`) and **sagittal**
//! (`x = p_x`) slices through a world point `p` (mm, RAS; default: the fixed grid's centre, see
//! [`Grid::centre`]). The planes are world-axis planes (RAS), which are the fixed image's own slice planes
//! when its grid is axis-aligned (as NIfTI templates are); their in-plane extent is the bounding box of the
//! fixed grid's voxel centres.
//!
//! Columns, left to right: **fixed**, **moving**, **warped** (only when given), a **checkerboard** of
//! fixed and warped (of fixed and moving when no warped image is given; squares of
//! [`SnapshotOptions::checker_mm`], the top-left square shows fixed), and, with
//! [`SnapshotOptions::edges`], the **edges of fixed** drawn in red ([`EDGE_COLOUR`]) on the warped (or
//! moving) image. Every panel is sampled at the same world points, trilinearly, zero outside the image,
//! channel 0 only: the moving image is shown where it lies in world space *before* registration, the warped
//! one where it lies after, so a perfect registration makes the warped column look like the fixed one.
//!
//! **Orientation: neurological convention.** Axial and coronal panels have the subject's left on the
//! viewer's left (columns run towards +x, Right); axial panels have anterior at the top, coronal and
//! sagittal panels superior at the top; sagittal panels have anterior on the right (columns run towards
//! +y). Pixels are square in millimetres: [`SnapshotOptions::pixel_mm`] (default: the fixed grid's smallest
//! spacing) along both panel axes, so panels keep the physical aspect ratio.
//!
//! **Intensity window, per image:** the 1st to 99th percentile of the image's finite non-zero voxels
//! (channel 0, whole volume; nearest-rank percentiles: the value at sorted position
//! `round(q * (n - 1))`), mapped linearly to grey levels 0-255 and clamped ([`window`], [`grey`]).
//!
//! **Layout** (pixels, see [`Layout`]): every cell is `cell_width = max(width of the axial, coronal and
//! sagittal panels)` wide; a panel is centred horizontally in its cell (offset `(cell_width - w) / 2`,
//! rounded down); row heights are the panels' heights (axial: the y extent, coronal and sagittal: the z
//! extent); `gap` pixels of black separate cells and surround the picture. Panel sizes along a world axis
//! are `floor(extent / pixel_mm + 1e-6) + 1` pixels, pixel centres at `min + k * pixel_mm`.
//!
//! **Loss strip** (only when losses are given): below the panels, full width less the gaps, `loss_height`
//! pixels tall on a dark background ([`STRIP_BACKGROUND`]). Levels (every level of every stage, in the
//! order given) are concatenated left to right, each with a width proportional to its number of
//! iterations, separated by 1-pixel grey lines ([`SEPARATOR_COLOUR`]); level `l` is drawn in
//! [`LEVEL_COLOURS`]`[l % 8]`, and **each level is scaled to its own min / max** (the loss values of
//! different pyramid levels are not comparable, and a shared axis would flatten the fine levels), lower
//! loss lower in the strip. Non-finite losses are left out.
//!
//! No text is drawn (no fonts are available offline); the order above is the legend.

use std::path::{Path, PathBuf};

use ::image::{ImageFormat, Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::image::io::{is_loaded_input, load};
use crate::image::trilinear::sample;
use crate::image::{Grid, Image};

/// Colours of pyramid levels in the loss strip (Okabe-Ito palette, no greys), RGB.
pub const LEVEL_COLOURS: [[u8; 3]; 8] = [
    [230, 159, 0],
    [86, 180, 233],
    [0, 158, 115],
    [240, 228, 66],
    [0, 114, 178],
    [213, 94, 0],
    [204, 121, 167],
    [153, 153, 255],
];

/// Colour of fixed-image edges in the edge-overlay column, RGB.
pub const EDGE_COLOUR: [u8; 3] = [255, 0, 0];
/// Background of the loss strip, RGB.
pub const STRIP_BACKGROUND: [u8; 3] = [24, 24, 24];
/// The 1-pixel vertical lines between levels in the loss strip, RGB.
pub const SEPARATOR_COLOUR: [u8; 3] = [110, 110, 110];

/// The slice orientations, in row order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The world plane `z = p_z`: columns towards +x (Right), rows towards -y (anterior at the top).
    Axial,
    /// The world plane `y = p_y`: columns towards +x (Right), rows towards -z (superior at the top).
    Coronal,
    /// The world plane `x = p_x`: columns towards +y (Anterior), rows towards -z (superior at the top).
    Sagittal,
}

impl View {
    /// Axial, coronal, sagittal: the rows of the picture, top to bottom.
    pub const ALL: [View; 3] = [View::Axial, View::Coronal, View::Sagittal];

    /// World axes (0 = x, 1 = y, 2 = z) along the panel's columns and rows, and the axis normal to it.
    fn axes(self) -> (usize, usize, usize) {
        match self {
            View::Axial => (0, 1, 2),
            View::Coronal => (0, 2, 1),
            View::Sagittal => (1, 2, 0),
        }
    }
}

/// What a column of the picture shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// The fixed image.
    Fixed,
    /// The moving image as it lies in world space before registration.
    Moving,
    /// The warped (registered) moving image.
    Warped,
    /// Checkerboard: fixed in the even squares (the top-left one), warped (or moving) in the odd ones.
    Checkerboard,
    /// Edges of the fixed image in [`EDGE_COLOUR`] over the warped (or moving) image.
    Edges,
}

/// Options of [`snapshot`].
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotOptions {
    /// World point (mm, RAS) the three planes pass through; `None`: the fixed grid's centre.
    pub point: Option<[f64; 3]>,
    /// Millimetres per pixel along both panel axes; `None`: the fixed grid's smallest spacing.
    pub pixel_mm: Option<f64>,
    /// Side of the checkerboard squares in mm (rounded to whole pixels, at least 1). Default 16.
    pub checker_mm: f64,
    /// Add the edge-overlay column. Default false.
    pub edges: bool,
    /// An edge is a pixel where the Sobel gradient magnitude of the windowed fixed panel (grey levels
    /// scaled to `[0, 1]`, Sobel kernel divided by 8, so units per pixel) is at least this. Default 0.25.
    pub edge_threshold: f64,
    /// Height of the loss strip in pixels. Default 100.
    pub loss_height: u32,
    /// Black border between and around panels, in pixels. Default 2.
    pub gap: u32,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            point: None,
            pixel_mm: None,
            checker_mm: 16.0,
            edges: false,
            edge_threshold: 0.25,
            loss_height: 100,
            gap: 2,
        }
    }
}

/// A rectangle of the picture, in pixels: top-left corner `(x, y)` (x to the right, y down) and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Where everything sits in the picture, and how panel pixels map to world points.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// The world point (mm, RAS) the planes pass through.
    pub point: [f64; 3],
    /// Millimetres per pixel (both panel axes).
    pub pixel_mm: f64,
    /// World coordinate (mm) of the first pixel centre along x, y, z (the smallest voxel-centre
    /// coordinate of the fixed grid).
    pub min: [f64; 3],
    /// Pixels along world x, y, z.
    pub pixels: [u32; 3],
    /// The columns, left to right.
    pub columns: Vec<Column>,
    /// Width of every cell (the widest of the three views' panels).
    pub cell_width: u32,
    /// `panels[row][column]`: rows in [`View::ALL`] order.
    pub panels: Vec<Vec<Rect>>,
    /// The loss strip, when losses are given.
    pub loss_strip: Option<Rect>,
    /// Picture width and height.
    pub width: u32,
    pub height: u32,
}

impl Layout {
    /// The layout of a picture of `columns` for a fixed image on `fixed`, with or without a loss strip.
    ///
    /// Errors: [`Error::InvalidArgument`] for a non-positive or non-finite `pixel_mm`, a non-finite point,
    /// or a picture larger than 16384 pixels on a side.
    pub fn new(fixed: &Grid, columns: Vec<Column>, with_losses: bool, opts: &SnapshotOptions) -> Result<Layout> {
        let point = opts.point.unwrap_or_else(|| fixed.centre());
        if point.iter().any(|v| !v.is_finite()) {
            return Err(Error::arg("snapshot", format!("the point must be finite, got {point:?}")));
        }
        let sp = fixed.spacing();
        let pixel_mm = opts.pixel_mm.unwrap_or_else(|| sp[0].min(sp[1]).min(sp[2]));
        if !(pixel_mm.is_finite() && pixel_mm > 0.0) {
            return Err(Error::arg("snapshot", format!("pixel size must be positive, got {pixel_mm} mm")));
        }
        // Bounding box of the voxel centres: the corner voxels' centres.
        let [nx, ny, nz] = fixed.shape().map(|n| n as f64 - 1.0);
        let (mut min, mut max) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
        for c in 0..8 {
            let ijk = [nx * (c & 1) as f64, ny * (c >> 1 & 1) as f64, nz * (c >> 2 & 1) as f64];
            let w = fixed.index_to_world(ijk);
            for a in 0..3 {
                min[a] = min[a].min(w[a]);
                max[a] = max[a].max(w[a]);
            }
        }
        let mut pixels = [0u32; 3];
        for a in 0..3 {
            let n = ((max[a] - min[a]) / pixel_mm + 1e-6).floor() + 1.0;
            if n > 16384.0 {
                return Err(Error::arg(
                    "snapshot",
                    format!("{n} pixels along axis {a} at {pixel_mm} mm per pixel: choose a larger pixel size"),
                ));
            }
            pixels[a] = n as u32;
        }
        let size = |v: View| {
            let (c, r, _) = v.axes();
            (pixels[c], pixels[r])
        };
        let cell_width = View::ALL.iter().map(|&v| size(v).0).max().unwrap_or(1);
        let gap = opts.gap;
        let ncol = columns.len() as u32;
        let width = ncol * cell_width + (ncol + 1) * gap;
        let mut panels = Vec::new();
        let mut y = gap;
        for v in View::ALL {
            let (w, h) = size(v);
            let row = (0..ncol)
                .map(|c| Rect { x: gap + c * (cell_width + gap) + (cell_width - w) / 2, y, width: w, height: h })
                .collect();
            panels.push(row);
            y += h + gap;
        }
        let loss_strip = with_losses.then(|| {
            let r = Rect { x: gap, y, width: width.saturating_sub(2 * gap).max(1), height: opts.loss_height.max(1) };
            y += r.height + gap;
            r
        });
        if width > 16384 || y > 16384 {
            return Err(Error::arg("snapshot", format!("picture of {width} x {y} pixels is too large")));
        }
        Ok(Layout { point, pixel_mm, min, pixels, columns, cell_width, panels, loss_strip, width, height: y })
    }

    /// World point (mm, RAS) at the centre of pixel `(col, row)` of a panel of `view`.
    pub fn world_of(&self, view: View, col: u32, row: u32) -> [f64; 3] {
        let (ca, ra, na) = view.axes();
        let mut w = [0.0; 3];
        w[ca] = self.min[ca] + col as f64 * self.pixel_mm;
        // Rows run downwards: from the largest coordinate (anterior / superior) at the top.
        w[ra] = self.min[ra] + (self.pixels[ra] - 1 - row) as f64 * self.pixel_mm;
        w[na] = self.point[na];
        w
    }

    /// The panel pixel `(col, row)` whose centre is nearest to world point `p` (its in-plane coordinates),
    /// or `None` when that falls outside the panel.
    pub fn pixel_of(&self, view: View, p: [f64; 3]) -> Option<(u32, u32)> {
        let (ca, ra, _) = view.axes();
        let c = ((p[ca] - self.min[ca]) / self.pixel_mm).round();
        let r = (self.pixels[ra] - 1) as f64 - ((p[ra] - self.min[ra]) / self.pixel_mm).round();
        let ok = |v: f64, n: u32| v >= 0.0 && v < n as f64;
        (ok(c, self.pixels[ca]) && ok(r, self.pixels[ra])).then_some((c as u32, r as u32))
    }
}

/// The intensity window of an image: the 1st and 99th percentiles of its finite non-zero voxels (channel
/// 0; nearest rank: the value at sorted position `round(q * (n - 1))`). `(0, 0)` when there are none.
///
/// Errors: tensor-backend errors.
pub fn window(image: &Image) -> Result<(f64, f64)> {
    let mut v: Vec<f32> = channel0(image)?.into_iter().filter(|x| x.is_finite() && *x != 0.0).collect();
    if v.is_empty() {
        return Ok((0.0, 0.0));
    }
    let n = v.len();
    let rank = |q: f64| (q * (n - 1) as f64).round() as usize;
    let (lo_i, hi_i) = (rank(0.01), rank(0.99));
    let hi = *v.select_nth_unstable_by(hi_i, f32::total_cmp).1;
    let lo = *v[..=hi_i].select_nth_unstable_by(lo_i, f32::total_cmp).1;
    Ok((lo as f64, hi as f64))
}

/// Grey level of `v` in the window `(lo, hi)`: `round(255 * clamp((v - lo) / (hi - lo), 0, 1))`; for an
/// empty window (`hi <= lo`, e.g. a mask whose non-zero voxels are all equal), 255 where `v >= lo` and
/// `v != 0`, else 0. Non-finite values are 0.
pub fn grey(v: f64, (lo, hi): (f64, f64)) -> u8 {
    if !v.is_finite() {
        return 0;
    }
    if hi <= lo {
        return if v >= lo && v != 0.0 { 255 } else { 0 };
    }
    (255.0 * ((v - lo) / (hi - lo)).clamp(0.0, 1.0)).round() as u8
}

/// Channel 0 of an image as f32, `(Z, Y, X)` order.
fn channel0(image: &Image) -> Result<Vec<f32>> {
    let mut v = image.to_vec_f32()?;
    v.truncate(image.grid().num_voxels());
    Ok(v)
}

/// An image ready for sampling: channel 0, its grid matrices and window.
struct Source {
    values: Vec<f32>,
    shape: [usize; 3],
    world_to_voxel: nalgebra::Matrix4<f64>,
    window: (f64, f64),
}

impl Source {
    fn new(image: &Image) -> Result<Source> {
        Ok(Source {
            values: channel0(image)?,
            shape: image.grid().shape(),
            world_to_voxel: image.grid().world_to_voxel(),
            window: window(image)?,
        })
    }

    /// Trilinear value at world point `w` (zero outside). Indices within 1e-6 of an integer are snapped,
    /// so voxel centres are sampled exactly whatever the rounding of the grid matrices.
    fn sample(&self, w: [f64; 3]) -> f64 {
        let p = crate::image::grid::apply(&self.world_to_voxel, w).map(|v| {
            let r = v.round();
            if (v - r).abs() < 1e-6 {
                r
            } else {
                v
            }
        });
        sample(&self.values, self.shape, p, false) as f64
    }

    /// The windowed grey panel of `view`, row-major `(rows, cols)`.
    fn panel(&self, layout: &Layout, view: View, rect: &Rect) -> Vec<u8> {
        let mut out = Vec::with_capacity((rect.width * rect.height) as usize);
        for r in 0..rect.height {
            for c in 0..rect.width {
                out.push(grey(self.sample(layout.world_of(view, c, r)), self.window));
            }
        }
        out
    }
}

/// Edge mask of a grey panel: Sobel magnitude (kernel / 8, grey scaled to `[0, 1]`) >= `threshold`;
/// border pixels use the nearest inside pixel (clamped).
fn edges(g: &[u8], w: usize, h: usize, threshold: f64) -> Vec<bool> {
    let at = |c: isize, r: isize| -> f64 {
        let c = c.clamp(0, w as isize - 1) as usize;
        let r = r.clamp(0, h as isize - 1) as usize;
        g[r * w + c] as f64 / 255.0
    };
    let mut out = vec![false; w * h];
    for r in 0..h as isize {
        for c in 0..w as isize {
            let gx = (at(c + 1, r - 1) + 2.0 * at(c + 1, r) + at(c + 1, r + 1))
                - (at(c - 1, r - 1) + 2.0 * at(c - 1, r) + at(c - 1, r + 1));
            let gy = (at(c - 1, r + 1) + 2.0 * at(c, r + 1) + at(c + 1, r + 1))
                - (at(c - 1, r - 1) + 2.0 * at(c, r - 1) + at(c + 1, r - 1));
            out[r as usize * w + c as usize] = (gx * gx + gy * gy).sqrt() / 8.0 >= threshold;
        }
    }
    out
}

/// The picture (see the module documentation for the layout, orientation, windows and loss strip).
///
/// `fixed`, `moving` and `warped` are `(C, Z, Y, X)` images on any grids (channel 0 is shown); the planes
/// and pixel grid come from `fixed`'s grid. `losses[l]` are the losses of pyramid level `l` in iteration
/// order (all stages' levels concatenated); an empty slice (or only empty levels) draws no strip.
///
/// Errors: [`Error::InvalidArgument`] for a bad point, pixel size or checker size (see [`Layout::new`]);
/// tensor-backend errors.
pub fn snapshot(
    fixed: &Image,
    moving: &Image,
    warped: Option<&Image>,
    losses: &[Vec<f64>],
    opts: &SnapshotOptions,
) -> Result<RgbImage> {
    if !(opts.checker_mm.is_finite() && opts.checker_mm > 0.0) {
        return Err(Error::arg("snapshot", format!("checker size must be positive, got {} mm", opts.checker_mm)));
    }
    let mut columns = vec![Column::Fixed, Column::Moving];
    if warped.is_some() {
        columns.push(Column::Warped);
    }
    columns.push(Column::Checkerboard);
    if opts.edges {
        columns.push(Column::Edges);
    }
    let has_losses = losses.iter().any(|l| !l.is_empty());
    let layout = Layout::new(fixed.grid(), columns, has_losses, opts)?;
    let block = ((opts.checker_mm / layout.pixel_mm).round() as u32).max(1);
    let (sf, sm) = (Source::new(fixed)?, Source::new(moving)?);
    let sw = warped.map(Source::new).transpose()?;
    let mut img = RgbImage::new(layout.width, layout.height);
    for (row, view) in View::ALL.iter().enumerate() {
        let rects = &layout.panels[row];
        let rect = rects[0];
        let (w, h) = (rect.width as usize, rect.height as usize);
        let f = sf.panel(&layout, *view, &rect);
        let m = sm.panel(&layout, *view, &rect);
        let after = match &sw {
            Some(s) => s.panel(&layout, *view, &rect),
            None => m.clone(),
        };
        let fixed_edges = opts.edges.then(|| edges(&f, w, h, opts.edge_threshold));
        for (col, kind) in layout.columns.iter().enumerate() {
            let r = rects[col];
            for y in 0..r.height {
                for x in 0..r.width {
                    let i = (y * r.width + x) as usize;
                    let rgb = match kind {
                        Column::Fixed => [f[i]; 3],
                        Column::Moving => [m[i]; 3],
                        Column::Warped => [after[i]; 3],
                        Column::Checkerboard => {
                            if (x / block + y / block) % 2 == 0 {
                                [f[i]; 3]
                            } else {
                                [after[i]; 3]
                            }
                        }
                        Column::Edges => match &fixed_edges {
                            Some(e) if e[i] => EDGE_COLOUR,
                            _ => [after[i]; 3],
                        },
                    };
                    img.put_pixel(r.x + x, r.y + y, Rgb(rgb));
                }
            }
        }
    }
    if let Some(strip) = layout.loss_strip {
        draw_losses(&mut img, &strip, losses);
    }
    Ok(img)
}

/// Draws the loss curves into `strip` (see the module documentation).
fn draw_losses(img: &mut RgbImage, strip: &Rect, losses: &[Vec<f64>]) {
    for y in strip.y..strip.y + strip.height {
        for x in strip.x..strip.x + strip.width {
            img.put_pixel(x, y, Rgb(STRIP_BACKGROUND));
        }
    }
    let levels: Vec<(usize, &Vec<f64>)> = losses.iter().enumerate().filter(|(_, l)| !l.is_empty()).collect();
    let total: usize = levels.iter().map(|(_, l)| l.len()).sum();
    let seps = levels.len().saturating_sub(1) as f64;
    let usable = (strip.width as f64 - seps).max(levels.len() as f64);
    let (top, bottom) = (strip.y as f64 + 2.0, (strip.y + strip.height) as f64 - 3.0);
    let bottom = bottom.max(top);
    let mut x0 = strip.x as f64;
    for (k, (l, vals)) in levels.iter().enumerate() {
        let w = (usable * vals.len() as f64 / total as f64).max(1.0);
        let x1 = x0 + w - 1.0;
        let colour = Rgb(LEVEL_COLOURS[l % LEVEL_COLOURS.len()]);
        let finite = vals.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let ypos = |v: f64| {
            if hi > lo {
                bottom - (v - lo) / (hi - lo) * (bottom - top)
            } else {
                (top + bottom) / 2.0
            }
        };
        let xpos = |i: usize| {
            if vals.len() > 1 {
                x0 + (x1 - x0) * i as f64 / (vals.len() - 1) as f64
            } else {
                (x0 + x1) / 2.0
            }
        };
        let mut prev: Option<(f64, f64)> = None;
        for (i, &v) in vals.iter().enumerate() {
            if !v.is_finite() {
                prev = None;
                continue;
            }
            let p = (xpos(i), ypos(v));
            line(img, strip, prev.unwrap_or(p), p, colour);
            prev = Some(p);
        }
        x0 = x1 + 1.0;
        if k + 1 < levels.len() {
            let sx = x0.round() as u32;
            for y in strip.y..strip.y + strip.height {
                if sx < strip.x + strip.width {
                    img.put_pixel(sx, y, Rgb(SEPARATOR_COLOUR));
                }
            }
            x0 += 1.0;
        }
    }
}

/// A straight line from `a` to `b` (pixel centres), clipped to `clip`: one pixel per step along the
/// longer axis.
pub(crate) fn line(img: &mut RgbImage, clip: &Rect, a: (f64, f64), b: (f64, f64), colour: Rgb<u8>) {
    let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as usize;
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = ((a.0 + (b.0 - a.0) * t).round(), (a.1 + (b.1 - a.1) * t).round());
        let inside = x >= clip.x as f64
            && y >= clip.y as f64
            && x < (clip.x + clip.width) as f64
            && y < (clip.y + clip.height) as f64;
        if inside {
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}

/// A picture of several images side by side: one column per image, the three orthogonal slices of
/// [`snapshot`] (rows axial, coronal, sagittal; neurological convention) through `opts.point` (default:
/// the first image's grid centre), the first image's grid giving the planes and pixels. A one-channel
/// image is drawn in grey in its own window ([`window`]); a multi-channel one (class probabilities,
/// such as X-CoReg's posterior segmentation) as its most probable channel at each pixel in
/// [`LEVEL_COLOURS`]`[k % 8]` (black outside the image).
///
/// Errors: no images; as [`Layout::new`]; tensor-backend errors.
pub fn montage(images: &[Image], opts: &SnapshotOptions) -> Result<RgbImage> {
    let first = images.first().ok_or_else(|| Error::arg("montage", "no images to draw"))?;
    let layout = Layout::new(first.grid(), vec![Column::Fixed; images.len()], false, opts)?;
    let mut img = RgbImage::new(layout.width, layout.height);
    for (col, im) in images.iter().enumerate() {
        if im.channels() == 1 {
            let src = Source::new(im)?;
            for (row, view) in View::ALL.iter().enumerate() {
                let r = layout.panels[row][col];
                let p = src.panel(&layout, *view, &r);
                for y in 0..r.height {
                    for x in 0..r.width {
                        img.put_pixel(r.x + x, r.y + y, Rgb([p[(y * r.width + x) as usize]; 3]));
                    }
                }
            }
            continue;
        }
        let data = im.to_vec_f32()?;
        let (shape, nv) = (im.grid().shape(), im.grid().num_voxels());
        let w2v = im.grid().world_to_voxel();
        for (row, view) in View::ALL.iter().enumerate() {
            let r = layout.panels[row][col];
            for y in 0..r.height {
                for x in 0..r.width {
                    let v = crate::image::grid::apply(&w2v, layout.world_of(*view, x, y));
                    let mut best: Option<(usize, f32)> = None;
                    for (k, channel) in data.chunks_exact(nv).enumerate() {
                        let s = sample(channel, shape, v, false);
                        if s > 0.0 && best.is_none_or(|(_, b)| s > b) {
                            best = Some((k, s));
                        }
                    }
                    let rgb = best.map_or([0; 3], |(k, _)| LEVEL_COLOURS[k % LEVEL_COLOURS.len()]);
                    img.put_pixel(r.x + x, r.y + y, Rgb(rgb));
                }
            }
        }
    }
    Ok(img)
}

/// Writes `img` as a PNG at `path`, atomically (a temporary file in the same directory, then a rename);
/// missing parent directories are created.
///
/// Errors: [`Error::OverwriteInput`] when `path` is a file this process loaded as an input image;
/// [`Error::InvalidArgument`] when `path` does not end in `.png`; [`Error::Io`] on write errors.
pub fn write_png(img: &RgbImage, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    if is_loaded_input(path) {
        return Err(Error::OverwriteInput { path: path.into() });
    }
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(Error::arg("snapshot", format!("{}: the output must be a .png file", path.display())));
    }
    crate::outputs::make_room(path)?;
    let dir = crate::outputs::parent_dir(path).to_path_buf();
    let mut tmp = tempfile::Builder::new()
        .prefix(".regsh-tmp")
        .suffix(".png")
        .tempfile_in(&dir)
        .map_err(|source| Error::Io { path: dir.clone(), source })?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        img.write_to(&mut w, ImageFormat::Png)
            .map_err(|e| Error::Io { path: path.into(), source: std::io::Error::other(e.to_string()) })?;
        std::io::Write::flush(&mut w).map_err(|source| Error::Io { path: path.into(), source })?;
    }
    tmp.persist(path).map_err(|e| Error::Io { path: path.into(), source: e.error })?;
    Ok(())
}

/// [`snapshot`], then [`write_png`] to `path`; returns the picture.
///
/// Errors: as both.
pub fn save_snapshot(
    fixed: &Image,
    moving: &Image,
    warped: Option<&Image>,
    losses: &[Vec<f64>],
    opts: &SnapshotOptions,
    path: impl AsRef<Path>,
) -> Result<RgbImage> {
    let img = snapshot(fixed, moving, warped, losses, opts)?;
    write_png(&img, path)?;
    Ok(img)
}

/// The per-level losses of a `regsh register` report (`PREFIX_report.json`): `stages[].levels[].losses`
/// in order, every stage's levels concatenated (a report with a top-level `levels` array is read the
/// same way). `null` entries (non-finite losses) become NaN.
///
/// Errors: [`Error::NotFound`] / [`Error::Io`] reading the file; [`Error::InvalidArgument`] when it is not
/// JSON or has no `stages[].levels[].losses`.
pub fn losses_from_report(path: impl AsRef<Path>) -> Result<Vec<Vec<f64>>> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(Error::NotFound { path: path.into() });
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::arg("snapshot", format!("{}: not a JSON report: {e}", path.display())))?;
    let level_lists: Vec<&serde_json::Value> = match (v.get("stages"), v.get("levels")) {
        (Some(serde_json::Value::Array(stages)), _) => stages.iter().filter_map(|s| s.get("levels")).collect(),
        (_, Some(levels)) => vec![levels],
        _ => vec![],
    };
    let mut out = Vec::new();
    for levels in level_lists {
        for level in levels.as_array().into_iter().flatten() {
            if let Some(serde_json::Value::Array(ls)) = level.get("losses") {
                out.push(ls.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect());
            }
        }
    }
    if out.is_empty() {
        return Err(Error::arg(
            "snapshot",
            format!("{}: no stages[].levels[].losses in this report (is it a regsh register report?)", path.display()),
        ));
    }
    Ok(out)
}

/// Arguments of `regsh snapshot` (see the CLI help).
#[derive(Clone, Debug)]
pub struct SnapshotArgs {
    pub fixed: PathBuf,
    pub moving: PathBuf,
    pub warped: Option<PathBuf>,
    pub report: Option<PathBuf>,
    /// World point (mm, RAS) as given on the command line: three values.
    pub point: Option<Vec<f64>>,
    pub edges: bool,
    pub checker_mm: f64,
    pub output: PathBuf,
}

/// `regsh snapshot`: loads the images (and the report's losses), draws the picture and writes the PNG.
/// Returns the picture's size.
///
/// Errors: load errors; [`Error::InvalidArgument`] for a point that is not three numbers; as
/// [`losses_from_report`] and [`save_snapshot`]; as [`crate::outputs::prepare`] (checked before loading:
/// the output may not be an input).
pub fn run(a: &SnapshotArgs) -> Result<(u32, u32)> {
    let point = match &a.point {
        None => None,
        Some(p) if p.len() == 3 => Some([p[0], p[1], p[2]]),
        Some(p) => return Err(Error::arg("snapshot", format!("--point takes X,Y,Z (3 numbers), got {}", p.len()))),
    };
    let mut inputs = vec![a.fixed.as_path(), a.moving.as_path()];
    inputs.extend(a.warped.as_deref());
    inputs.extend(a.report.as_deref());
    crate::outputs::prepare(&[&a.output], &inputs)?;
    let fixed = load(&a.fixed)?;
    let moving = load(&a.moving)?;
    let warped = a.warped.as_ref().map(load).transpose()?;
    let losses = a.report.as_ref().map(losses_from_report).transpose()?.unwrap_or_default();
    let opts = SnapshotOptions { point, edges: a.edges, checker_mm: a.checker_mm, ..Default::default() };
    let img = save_snapshot(&fixed, &moving, warped.as_ref(), &losses, &opts, &a.output)?;
    Ok(img.dimensions())
}
