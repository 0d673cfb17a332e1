//! Line plots as PNG pictures: response functions of similarity measures (Sedghi et al. Fig. 2), loss
//! curves, any `y(x)` a script computes.
//!
//! # What the picture shows
//!
//! A white canvas of [`PlotOptions::width`] x [`PlotOptions::height`] pixels: the title on top, a framed
//! plot area with "nice" ticks (steps of 1, 2 or 5 times a power of ten) labelled on both axes and light
//! grid lines at them, the axis labels below and to the left, and a legend (one line per named curve, in
//! the curve's colour) in the plot area's top-right corner. Curves are drawn in [`CURVE_COLOURS`]
//! (`[i % 7]`), points joined by straight lines in the order given; each curve's best point (its maximum,
//! or its minimum when [`Curve::higher_is_better`] is false) is marked with a filled 5 x 5 square (the
//! peak of a response). Non-finite points are left out (the line breaks there).
//! With [`PlotOptions::normalize`] each curve is mapped to [0, 1] by its own minimum and maximum first
//! (curves of measures on different scales then share one axis). Text is drawn in the public-domain
//! 8 x 8 bitmap font of the `font8x8` crate (printable ASCII; other characters are drawn as `?`).

use ::image::{Rgb, RgbImage};

use crate::snapshot::{line, write_png, Rect};
use crate::{Error, Result};

/// Colours of curves in order (Okabe-Ito palette without yellow, then black), RGB.
pub const CURVE_COLOURS: [[u8; 3]; 7] =
    [[0, 114, 178], [213, 94, 0], [0, 158, 115], [204, 121, 167], [230, 159, 0], [86, 180, 233], [0, 0, 0]];

const GRID_COLOUR: [u8; 3] = [225, 225, 225];
const TEXT_COLOUR: [u8; 3] = [0, 0, 0];
/// Glyph size of the bitmap font, pixels.
const GLYPH: u32 = 8;

/// One curve: points `(x[i], y[i])`, a legend label (empty: not in the legend), and which way is better
/// (the marked point is the maximum, or the minimum when `higher_is_better` is false).
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// Abscissae, in the order the points are joined.
    pub x: Vec<f64>,
    /// Ordinates, one per abscissa.
    pub y: Vec<f64>,
    /// Mark the largest value (else the smallest).
    pub higher_is_better: bool,
}

/// How to draw a plot.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotOptions {
    /// Picture width, pixels (at least 200).
    pub width: u32,
    /// Picture height, pixels (at least 150).
    pub height: u32,
    /// Text above the plot area.
    pub title: String,
    /// Text below the x axis.
    pub x_label: String,
    /// Text left of the y axis (written horizontally above the tick labels).
    pub y_label: String,
    /// Map each curve to [0, 1] by its own minimum and maximum.
    pub normalize: bool,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            width: 640,
            height: 420,
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            normalize: false,
        }
    }
}

/// The "nice" tick values covering `[lo, hi]`: multiples of a step of 1, 2 or 5 times a power of ten,
/// about `target` of them; with the step.
pub fn ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let span = (hi - lo).abs().max(f64::MIN_POSITIVE);
    let raw = span / target.max(1) as f64;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|s| *s >= raw).unwrap_or(10.0 * p);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), step)
}

/// A tick label with as many decimals as the step needs (none for whole steps); steps of 1e6 and more
/// or below 1e-4 in scientific notation, so labels stay short.
fn tick_label(v: f64, step: f64) -> String {
    if !(1e-4..1e6).contains(&step) {
        return format!("{v:.2e}");
    }
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    let s = format!("{v:.decimals$}");
    // "-0" reads as a bug on an axis.
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// Draws `text` with its top-left corner at `(x, y)`, clipped to the picture.
fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, colour: [u8; 3]) {
    use font8x8::UnicodeFonts;
    for (i, c) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(c).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    let (px, py) = (x + (i as i64) * GLYPH as i64 + col, y + row as i64);
                    if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                        img.put_pixel(px as u32, py as u32, Rgb(colour));
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> i64 {
    (s.chars().count() as u32 * GLYPH) as i64
}

/// The plot of `curves` (see the module docs for what it shows).
///
/// Errors: [`Error::InvalidArgument`] for no curves, a curve whose `x` and `y` differ in length, no
/// finite point at all, or a picture smaller than 200 x 150.
pub fn line_plot(curves: &[Curve], o: &PlotOptions) -> Result<RgbImage> {
    const OP: &str = "plot";
    if curves.is_empty() {
        return Err(Error::arg(OP, "no curves to plot"));
    }
    if o.width < 200 || o.height < 150 || o.width > 8192 || o.height > 8192 {
        return Err(Error::arg(
            OP,
            format!("a picture of 200 x 150 to 8192 x 8192 pixels, got {} x {}", o.width, o.height),
        ));
    }
    let mut data = Vec::with_capacity(curves.len());
    for (i, c) in curves.iter().enumerate() {
        if c.x.len() != c.y.len() {
            return Err(Error::arg(OP, format!("curve {i}: {} x values but {} y values", c.x.len(), c.y.len())));
        }
        let mut y = c.y.clone();
        if o.normalize {
            let fin = y.iter().copied().filter(|v| v.is_finite());
            let (lo, hi) = fin.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
            let span = if hi > lo { hi - lo } else { 1.0 };
            y.iter_mut().for_each(|v| *v = (*v - lo) / span);
        }
        data.push((c.x.clone(), y));
    }
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let points: Vec<(f64, f64)> =
        data.iter().flat_map(|(x, y)| x.iter().copied().zip(y.iter().copied())).filter(finite).collect();
    if points.is_empty() {
        return Err(Error::arg(OP, "no finite point to plot"));
    }
    let range = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = points.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        // A flat range gets room around it; a little margin keeps the extremes off the frame.
        let pad = if hi > lo { 0.04 * (hi - lo) } else { lo.abs().max(1.0) * 0.5 };
        (lo - pad, hi + pad)
    };
    let (x_lo, x_hi) = range(|p| p.0);
    let (y_lo, y_hi) = range(|p| p.1);
    let (xt, xs) = ticks(x_lo, x_hi, 8);
    let (yt, ys) = ticks(y_lo, y_hi, 6);
    let y_labels: Vec<String> = yt.iter().map(|v| tick_label(*v, ys)).collect();
    // At most half the picture for the y tick labels (longer ones are clipped on the left).
    let left = (16 + y_labels.iter().map(|s| text_width(s)).max().unwrap_or(0) as u32).min(o.width / 2);
    let area = Rect { x: left, y: 32, width: o.width - left - 16, height: o.height - 32 - 44 };
    let px = |x: f64| area.x as f64 + (x - x_lo) / (x_hi - x_lo) * (area.width - 1) as f64;
    let py = |y: f64| (area.y + area.height - 1) as f64 - (y - y_lo) / (y_hi - y_lo) * (area.height - 1) as f64;

    let mut img = RgbImage::from_pixel(o.width, o.height, Rgb([255, 255, 255]));
    let full = Rect { x: 0, y: 0, width: o.width, height: o.height };
    let (top, bottom) = (area.y as f64, (area.y + area.height - 1) as f64);
    let (lft, rgt) = (area.x as f64, (area.x + area.width - 1) as f64);
    for (v, s) in xt.iter().map(|v| (*v, tick_label(*v, xs))) {
        let x = px(v).round();
        line(&mut img, &area, (x, top), (x, bottom), Rgb(GRID_COLOUR));
        line(&mut img, &full, (x, bottom), (x, bottom + 4.0), Rgb(TEXT_COLOUR));
        text(&mut img, x as i64 - text_width(&s) / 2, bottom as i64 + 7, &s, TEXT_COLOUR);
    }
    for (v, s) in yt.iter().zip(&y_labels) {
        let y = py(*v).round();
        line(&mut img, &area, (lft, y), (rgt, y), Rgb(GRID_COLOUR));
        line(&mut img, &full, (lft - 4.0, y), (lft, y), Rgb(TEXT_COLOUR));
        text(&mut img, lft as i64 - 6 - text_width(s), y as i64 - 4, s, TEXT_COLOUR);
    }
    for (a, b) in [
        ((lft, top), (rgt, top)),
        ((lft, bottom), (rgt, bottom)),
        ((lft, top), (lft, bottom)),
        ((rgt, top), (rgt, bottom)),
    ] {
        line(&mut img, &full, a, b, Rgb(TEXT_COLOUR));
    }
    for (i, (x, y)) in data.iter().enumerate() {
        let colour = Rgb(CURVE_COLOURS[i % CURVE_COLOURS.len()]);
        let pts: Vec<Option<(f64, f64)>> =
            x.iter().zip(y).map(|(&a, &b)| finite(&(a, b)).then(|| (px(a), py(b)))).collect();
        for w in pts.windows(2) {
            if let (Some(a), Some(b)) = (w[0], w[1]) {
                line(&mut img, &area, a, b, colour);
            }
        }
        let sign = if curves[i].higher_is_better { 1.0 } else { -1.0 };
        let best =
            x.iter().zip(y).filter(|p| finite(&(*p.0, *p.1))).max_by(|a, b| (sign * a.1).total_cmp(&(sign * b.1)));
        if let Some((&bx, &by)) = best {
            let (cx, cy) = (px(bx).round(), py(by).round());
            for d in -2..=2 {
                let d = d as f64;
                line(&mut img, &area, (cx - 2.0, cy + d), (cx + 2.0, cy + d), colour);
            }
        }
    }
    let mut ly = area.y as i64 + 6;
    for (i, c) in curves.iter().enumerate().filter(|(_, c)| !c.label.is_empty()) {
        let colour = CURVE_COLOURS[i % CURVE_COLOURS.len()];
        let x = (area.x + area.width) as i64 - 10 - text_width(&c.label) - 20;
        line(&mut img, &area, (x as f64, ly as f64 + 3.0), (x as f64 + 14.0, ly as f64 + 3.0), Rgb(colour));
        line(&mut img, &area, (x as f64, ly as f64 + 4.0), (x as f64 + 14.0, ly as f64 + 4.0), Rgb(colour));
        text(&mut img, x + 20, ly, &c.label, colour);
        ly += 12;
    }
    text(&mut img, (o.width as i64 - text_width(&o.title)) / 2, 8, &o.title, TEXT_COLOUR);
    let xl = area.x as i64 + (area.width as i64 - text_width(&o.x_label)) / 2;
    text(&mut img, xl, o.height as i64 - 14, &o.x_label, TEXT_COLOUR);
    text(&mut img, 4, 20, &o.y_label, TEXT_COLOUR);
    Ok(img)
}

/// [`line_plot`], written as a PNG at `path` (atomically, see [`write_png`]); returns the picture.
///
/// Errors: as both.
pub fn save_plot(curves: &[Curve], o: &PlotOptions, path: impl AsRef<std::path::Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        return Err(Error::arg("plot", format!("{}: the output must be a .png file", path.display())));
    }
    let img = line_plot(curves, o)?;
    write_png(&img, path)?;
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        let (t, s) = ticks(-20.0, 20.0, 8);
        assert_eq!(s, 5.0);
        assert_eq!(t.first(), Some(&-20.0));
        assert_eq!(t.last(), Some(&20.0));
        let (t, s) = ticks(0.013, 0.087, 6);
        assert!((s - 0.02).abs() < 1e-12, "a 0.074 span in about 6 steps: {s}");
        assert_eq!(t.len(), 4, "0.02 to 0.08: {t:?}");
        assert_eq!(tick_label(-0.0, 1.0), "0");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(3e12, 1e12), "3.00e12");
        // Huge or tiny values still give a picture (short labels), not a panic.
        for y in [vec![1e300, 2e300], vec![1e-300, 2e-300], vec![-1e308, 1e308]] {
            let c = Curve { label: String::new(), x: vec![0.0, 1.0], y, higher_is_better: true };
            assert!(line_plot(&[c], &PlotOptions::default()).is_ok());
        }
    }

    #[test]
    fn a_curve_is_drawn_in_its_colour_with_its_peak_marked() {
        let x: Vec<f64> = (-10..=10).map(|v| v as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| -(v - 4.0) * (v - 4.0)).collect();
        let o = PlotOptions { title: "response".into(), x_label: "shift (mm)".into(), ..PlotOptions::default() };
        let img = line_plot(&[Curve { label: "a".into(), x, y, higher_is_better: true }], &o).unwrap();
        assert_eq!(img.dimensions(), (640, 420));
        let blue = Rgb(CURVE_COLOURS[0]);
        // The peak square: the topmost curve pixels are a 5-wide run.
        let (top_y, xs): (u32, Vec<u32>) = (0..img.height())
            .find_map(|y| {
                let xs: Vec<u32> = (0..img.width() - 120).filter(|&x| *img.get_pixel(x, y) == blue).collect();
                (!xs.is_empty()).then_some((y, xs))
            })
            .unwrap();
        assert_eq!(xs.len(), 5, "row {top_y}: {xs:?}");
        // The peak lies at x = 4: 14/20 of the way across the data's range.
        let area_left = xs[2] as f64; // centre of the marker
        assert!(area_left > 0.6 * 640.0 && area_left < 0.75 * 640.0, "{area_left}");
        assert!(line_plot(&[], &o).is_err());
        let bad = Curve { label: String::new(), x: vec![1.0], y: vec![], higher_is_better: true };
        assert!(line_plot(&[bad], &o).is_err());
        let nan = Curve { label: String::new(), x: vec![1.0], y: vec![f64::NAN], higher_is_better: true };
        assert!(line_plot(&[nan], &o).is_err());
    }
}
