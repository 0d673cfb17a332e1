//! A coarse search over rotations before a linear registration, for a capture range beyond what a local
//! optimizer reaches from the centres of mass: a head tilted by 30 degrees, or a full head registered
//! onto a brain-only template, where gradient descent from the moments settles in a wrong pitch.
//!
//! As FSL FLIRT's start (Jenkinson & Smith 2001, "A global optimisation method for robust affine
//! registration of brain images", section 4: a search over rotations at 8 mm, each candidate's
//! translation optimized, the best few refined) and ANTs' `antsAI`: every rotation of a grid of Euler
//! angles about the fixed centre of mass (translation from the centres of mass) gets a short rigid
//! L-BFGS at a coarse level (about 8 mm voxels), the best few (and the unrotated one) a longer one there
//! and another at about 4 mm, where the lowest loss wins. Each level judges its candidates on one fixed
//! draw of sample points with the measure's fused point form, so their losses compare.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::iso::{fix_ranges, grid_radius, param_scales, registration_lbfgs};
use super::level::{level_mask, FusedLevel, PointSampler, Points};
use super::minimize::lbfgs_run;
use crate::error::{Error, Result};
use crate::image::smooth::pyramid;
use crate::image::Image;
use crate::metrics::Metric;
use crate::spatial::{Linear, LinearKind};

/// Settings of [`rotation_search`].
#[derive(Clone, Debug, PartialEq)]
pub struct RotationSearch {
    /// Angles tried about each axis (degrees, RAS x, y, z; every combination: `n^3` candidates).
    /// Default -30, -15, 0, 15, 30 (125 candidates).
    pub angles_deg: Vec<f64>,
    /// Voxel size of the screening level (mm; the fixed image downsampled by the nearest factor, at
    /// least 1, keeping 8 voxels per axis). Default 8 (FLIRT's coarsest level).
    pub level_mm: f64,
    /// Voxel size of the level that chooses among the kept candidates (mm). Default 4: at 8 mm alone a
    /// full head onto a brain-only template can prefer a wrong pose (measured: one of six Colin27 cases).
    pub select_mm: f64,
    /// Random sample points of each level's fixed draw (all voxels of a level when it has fewer).
    /// Default 5000.
    pub points: usize,
    /// L-BFGS iterations from every candidate. Default 4.
    pub screen_iterations: usize,
    /// Candidates with the lowest loss after the screen that are refined further (the unrotated one is
    /// always refined too). Default 4.
    pub keep: usize,
    /// L-BFGS iterations of the refinement, at the screening level and again at the selecting one.
    /// Default 30.
    pub iterations: usize,
    /// Seed of the sample points.
    pub seed: u64,
}

impl Default for RotationSearch {
    fn default() -> Self {
        RotationSearch {
            angles_deg: vec![-30.0, -15.0, 0.0, 15.0, 30.0],
            level_mm: 8.0,
            select_mm: 4.0,
            points: 5000,
            screen_iterations: 4,
            keep: 4,
            iterations: 30,
            seed: 0,
        }
    }
}

/// What [`rotation_search`] found.
#[derive(Clone, Debug)]
pub struct SearchReport {
    /// Candidates screened.
    pub candidates: usize,
    /// The unrotated candidate's loss after the same refinement as the winner's (NaN when the search
    /// was cancelled before it).
    pub start_loss: f64,
    /// The winner's loss (the measure's loss at the selecting level, on its fixed draw of points).
    pub loss: f64,
    /// The winner's starting rotation (degrees about x, y, z) before its refinement.
    pub angles_deg: [f64; 3],
    /// Downsampling factors of the screening and the selecting level (relative to the fixed image).
    pub factors: [f64; 2],
    pub seconds: f64,
}

/// One level of the search: the fused objective on a fixed draw of points.
fn search_level(
    metric: &Metric,
    fixed: &Image,
    moving: &Image,
    start: &Linear,
    fixed_mask: Option<&Image>,
    factor: f64,
    opts: &RotationSearch,
) -> Result<FusedLevel> {
    let fl = pyramid(fixed, &[factor], None)?.remove(0).image;
    let ml = pyramid(moving, &[factor], None)?.remove(0).image;
    let mask = fixed_mask.map(|m| level_mask(m, fl.grid())).transpose()?;
    let points = if opts.points < fl.grid().num_voxels() {
        Points::Once(PointSampler::new(fl.grid(), mask.as_ref(), opts.points, opts.seed)?)
    } else {
        Points::Grid
    };
    FusedLevel::new(metric, &fl, &ml, start, points, mask.as_ref())
}

/// Searches rotations of `start` (any linear kind; its translation and centre are kept, its rotation is
/// the search's centre) for the rigid transform, fixed world mm to moving world mm, whose measure
/// `metric` (a measure with a fused point form: SSD, NCC, MI, NMI, CR; others are replaced by Parzen
/// MI) is lowest, inside `fixed_mask` when given: every candidate gets a short rigid L-BFGS at about
/// `level_mm`, the best `keep` (and the unrotated one) a longer one there and another at about
/// `select_mm`, whose loss chooses. Returns the winner as a rigid [`Linear`] about `start`'s centre,
/// with the report. Ctrl-C (`cancel`) ends the search early with the best candidate so far.
///
/// Errors: an empty angle list, a non-finite angle or zero points; a mask with no voxel on a search
/// level; a start given as a matrix ([`LinearKind::Matrix`], no rotation parameters to search); no
/// candidate with a finite loss (the images do not overlap); the measure's and the images'.
pub fn rotation_search(
    fixed: &Image,
    moving: &Image,
    start: &Linear,
    metric: &Metric,
    fixed_mask: Option<&Image>,
    opts: &RotationSearch,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<(Linear, SearchReport)> {
    let t0 = Instant::now();
    let finite = opts.angles_deg.iter().chain([&opts.level_mm, &opts.select_mm]).all(|a| a.is_finite());
    if opts.angles_deg.is_empty() || opts.points == 0 || !finite {
        return Err(Error::arg("rotation search", "needs finite angles and level sizes and at least one sample point"));
    }
    let rigid = rigid_of(start)?;
    let metric =
        if metric.has_point_form() && !metric.is_local() { metric.without_regularizer() } else { Metric::new("mi")? };
    let metric = fix_ranges(&metric, fixed, moving)?;
    // The levels: about `level_mm` and `select_mm` voxels, at least 8 voxels per axis.
    let g = fixed.grid();
    let mean_spacing = g.spacing().iter().sum::<f64>() / 3.0;
    let smallest = g.shape().into_iter().min().unwrap_or(1) as f64;
    let factor_of = |mm: f64| (mm / mean_spacing).round().clamp(1.0, (smallest / 8.0).max(1.0));
    let factors = [factor_of(opts.level_mm), factor_of(opts.select_mm)];
    let mut screen = search_level(&metric, fixed, moving, &rigid, fixed_mask, factors[0], opts)?;
    let mut select = if factors[1] != factors[0] {
        Some(search_level(&metric, fixed, moving, &rigid, fixed_mask, factors[1], opts)?)
    } else {
        None
    };
    let scales = param_scales(LinearKind::Rigid, grid_radius(g).max(1.0));
    let lbfgs = |iterations: usize| registration_lbfgs(&scales, iterations, cancel.clone());
    let x0 = rigid.param_values()?;
    let grid: Vec<[f64; 3]> = opts
        .angles_deg
        .iter()
        .flat_map(|&ax| opts.angles_deg.iter().flat_map(move |&ay| opts.angles_deg.iter().map(move |&az| [ax, ay, az])))
        .collect();
    // Ctrl-C ends the search with the best candidate so far.
    let mut cancelled = false;
    let mut screened = Vec::new();
    for angles in grid {
        let mut x = x0.clone();
        for a in 0..3 {
            x[3 + a] += angles[a].to_radians();
        }
        let run = lbfgs_run(&mut screen, &x, &lbfgs(opts.screen_iterations))?;
        screened.push((run.best, run.x, angles));
        if run.stop.is_cancelled() {
            cancelled = true;
            break;
        }
    }
    let candidates = screened.len();
    // Lowest loss first; non-finite losses (no overlap) last.
    screened.sort_by(|a, b| key(a.0).total_cmp(&key(b.0)));
    let unrotated = screened.iter().position(|c| c.2 == [0.0; 3]);
    let mut chosen: Vec<usize> = (0..opts.keep.max(1).min(candidates)).collect();
    if let Some(u) = unrotated.filter(|u| !chosen.contains(u)) {
        chosen.push(u);
    }
    let mut best: Option<(f64, Vec<f64>, [f64; 3])> = None;
    let mut start_loss = f64::NAN;
    for i in chosen {
        // After a cancel the remaining candidates' losses (of the screen) do not compare with the refined
        // ones: the best so far stands.
        if cancelled && best.is_some() {
            break;
        }
        let (screen_loss, x, angles) = &screened[i];
        let (mut loss, mut x) = (*screen_loss, x.clone());
        if !cancelled {
            let run = lbfgs_run(&mut screen, &x, &lbfgs(opts.iterations))?;
            cancelled |= run.stop.is_cancelled();
            (loss, x) = (run.best, run.x);
            if let (Some(level), false) = (select.as_mut(), cancelled) {
                let run = lbfgs_run(level, &x, &lbfgs(opts.iterations))?;
                cancelled |= run.stop.is_cancelled();
                (loss, x) = (run.best, run.x);
            }
        }
        if Some(i) == unrotated {
            start_loss = loss;
        }
        if loss.is_finite() && best.as_ref().is_none_or(|b| loss < b.0) {
            best = Some((loss, x, *angles));
        }
    }
    let Some((loss, x, angles)) = best else {
        return Err(Error::arg(
            "rotation search",
            "no candidate rotation gave a finite loss (do the images overlap after the initial alignment?)",
        ));
    };
    let t = Linear::from_params(LinearKind::Rigid, &x, rigid.centre())?;
    let report =
        SearchReport { candidates, start_loss, loss, angles_deg: angles, factors, seconds: t0.elapsed().as_secs_f64() };
    tracing::info!(
        "rotation search: {candidates} candidates at {}x, chosen at {}x: start ({:.0}, {:.0}, {:.0}) deg, loss {loss:.4} (unrotated {start_loss:.4}), {:.2} s",
        factors[0],
        factors[1],
        angles[0],
        angles[1],
        angles[2],
        report.seconds
    );
    Ok((t, report))
}

/// Sort key: the loss, non-finite ones after every finite one.
fn key(loss: f64) -> f64 {
    if loss.is_finite() {
        loss
    } else {
        f64::INFINITY
    }
}

/// The rigid part of `t` (translation, and rotation for kinds that have one) about its centre.
fn rigid_of(t: &Linear) -> Result<Linear> {
    if t.kind() == LinearKind::Matrix {
        return Err(Error::arg("rotation search", "a start given as a matrix has no rotation parameters to search"));
    }
    t.with_kind(LinearKind::Rigid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;

    /// A blob off-centre in a 24^3 volume of 4 mm voxels (a shape with no rotational symmetry).
    fn blob() -> Image {
        let n = 24;
        let g = Grid::axis_aligned([n; 3], [4.0; 3], [-48.0; 3]).unwrap();
        let v: Vec<f32> = (0..n * n * n)
            .map(|i| {
                let (x, y, z) = ((i % n) as f64, ((i / n) % n) as f64, (i / (n * n)) as f64);
                let d = ((x - 10.0) / 6.0).powi(2) + ((y - 13.0) / 4.0).powi(2) + ((z - 12.0) / 3.0).powi(2);
                let e = ((x - 15.0) / 2.0).powi(2) + ((y - 9.0) / 2.0).powi(2) + ((z - 12.0) / 2.0).powi(2);
                (100.0 * (-d).exp() + 60.0 * (-e).exp()) as f32
            })
            .collect();
        Image::from_vec(v, 1, g).unwrap()
    }

    #[test]
    fn bad_settings_and_a_matrix_start_are_errors() {
        let im = blob();
        let start = Linear::from_params(LinearKind::Rigid, &[0.0; 6], im.grid().centre()).unwrap();
        let mi = Metric::new("mi").unwrap();
        for opts in [
            RotationSearch { angles_deg: vec![], ..Default::default() },
            RotationSearch { points: 0, ..Default::default() },
            RotationSearch { angles_deg: vec![0.0, f64::NAN], ..Default::default() },
        ] {
            assert!(rotation_search(&im, &im, &start, &mi, None, &opts, None).is_err(), "{opts:?}");
        }
        let matrix = Linear::from_params(
            LinearKind::Matrix,
            &LinearKind::Matrix.identity_params().iter().map(|&v| v as f64).collect::<Vec<_>>(),
            [0.0; 3],
        )
        .unwrap();
        assert!(rotation_search(&im, &im, &matrix, &mi, None, &RotationSearch::default(), None).is_err());
    }

    #[test]
    fn a_rotation_on_the_search_grid_is_found() {
        // The blob rotated by 30 degrees about z (moving(x) = fixed(R x) about the centre): the search
        // starts from the unrotated pose and must end near R^-1, -30 degrees.
        let fixed = blob();
        let c = fixed.grid().centre();
        let r = Linear::from_params(LinearKind::Rigid, &[0.0, 0.0, 0.0, 0.0, 0.0, 30f64.to_radians()], c).unwrap();
        let moving = crate::spatial::warp(
            &fixed,
            &r,
            fixed.grid(),
            crate::spatial::WarpInterpolation::Linear,
            crate::image::resample::Padding::Zero,
        )
        .unwrap();
        let start = Linear::from_params(LinearKind::Rigid, &[0.0; 6], c).unwrap();
        let opts = RotationSearch { level_mm: 8.0, select_mm: 4.0, ..Default::default() };
        let (t, report) =
            rotation_search(&fixed, &moving, &start, &Metric::new("ssd").unwrap(), None, &opts, None).unwrap();
        let p = t.param_values().unwrap();
        assert!((p[5].to_degrees() + 30.0).abs() < 2.0, "rotation about z {} deg ({report:?})", p[5].to_degrees());
        assert!(p[3].to_degrees().abs() < 2.0 && p[4].to_degrees().abs() < 2.0, "{p:?}");
        assert_eq!(report.candidates, 125);
        assert!(report.loss <= report.start_loss, "{report:?}");
    }
}
