//! Powell and L-BFGS: known minima of test functions, the effect of per-parameter scales, the non-finite
//! guard and the cancel flag; then rigid registration of a real image moved by a known transform.

mod common;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use regsh::error::Result;
use regsh::optim::{lbfgs, powell, Criterion, LbfgsOptions, PowellOptions, Stop};

/// The chained Rosenbrock function `sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2`; minimum 0 at all ones.
fn rosenbrock(x: &[f64]) -> f64 {
    x.windows(2).map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2)).sum()
}

/// Its gradient.
fn rosenbrock_grad(x: &[f64]) -> Vec<f64> {
    let mut g = vec![0.0; x.len()];
    for i in 0..x.len() - 1 {
        let r = x[i + 1] - x[i] * x[i];
        g[i] += -400.0 * x[i] * r - 2.0 * (1.0 - x[i]);
        g[i + 1] += 200.0 * r;
    }
    g
}

fn starts() -> Vec<Vec<f64>> {
    vec![vec![-1.2, 1.0], vec![0.0; 10]]
}

#[test]
fn lbfgs_reaches_the_rosenbrock_minimum() {
    for x0 in starts() {
        let opts = LbfgsOptions { gtol: 1e-10, ftol: 0.0, max_iterations: 1000, ..Default::default() };
        let r = lbfgs(|x: &[f64]| Ok((rosenbrock(x), rosenbrock_grad(x))), &x0, &opts).unwrap();
        eprintln!(
            "lbfgs rosenbrock {}-D: {} evaluations, {} iterations, {}",
            x0.len(),
            r.evaluations,
            r.iterations,
            r.stop
        );
        assert!(r.x.iter().all(|v| (v - 1.0).abs() < 1e-6), "{}-D: {:?}", x0.len(), r.x);
        assert!(r.stop.is_converged(), "{}", r.stop);
        assert_eq!(r.history.len(), r.iterations + 1);
        assert!(r.history.windows(2).all(|w| w[1] <= w[0]), "each accepted step lowers f");
    }
}

#[test]
fn powell_reaches_the_rosenbrock_minimum() {
    for x0 in starts() {
        let opts = PowellOptions { xtol: 1e-8, ftol: 1e-14, max_evals: 100_000, ..Default::default() };
        let r = powell(|x: &[f64]| Ok(rosenbrock(x)), &x0, &opts).unwrap();
        eprintln!(
            "powell rosenbrock {}-D: {} evaluations, {} iterations, {}",
            x0.len(),
            r.evaluations,
            r.iterations,
            r.stop
        );
        assert!(r.x.iter().all(|v| (v - 1.0).abs() < 1e-4), "{}-D: {:?}", x0.len(), r.x);
        assert!(r.stop.is_converged(), "{}", r.stop);
    }
}

/// A coupled quadratic `q` in a translation (mm, optimum 250 mm) and a rotation (radians, optimum 0.03),
/// each measured in its natural unit (100 mm, 0.01 rad), seen through `1 - exp(-q / 8)` so that, like a
/// similarity measure, it is bounded and flat far from the optimum. Value and gradient.
fn badly_scaled(x: &[f64]) -> (f64, Vec<f64>) {
    let (u, v) = ((x[0] - 250.0) / 100.0, (x[1] - 0.03) / 0.01);
    let q = u * u + v * v + u * v;
    let e = (-q / 8.0).exp();
    (1.0 - e, vec![e / 8.0 * (2.0 * u + v) / 100.0, e / 8.0 * (2.0 * v + u) / 0.01])
}

#[test]
fn scales_make_a_badly_scaled_problem_cheap() {
    let good = Some(vec![100.0, 0.01]);
    // Within 1e-6 of the optimum in natural units (0.1 um and 1e-8 rad).
    let close = |x: &[f64]| ((x[0] - 250.0) / 100.0).abs() < 1e-6 && ((x[1] - 0.03) / 0.01).abs() < 1e-6;

    let popts = |scales| PowellOptions { scales, xtol: 1e-7, ftol: 1e-14, max_evals: 20_000, ..Default::default() };
    let unit = powell(|x: &[f64]| Ok(badly_scaled(x).0), &[0.0, 0.0], &popts(None)).unwrap();
    let scaled = powell(|x: &[f64]| Ok(badly_scaled(x).0), &[0.0, 0.0], &popts(good.clone())).unwrap();
    eprintln!(
        "powell, badly scaled: {} evaluations with unit scales ({}), {} with scales ({})",
        unit.evaluations, unit.stop, scaled.evaluations, scaled.stop
    );
    assert!(close(&scaled.x), "{:?}", scaled.x);
    // Powell's line minimizations do not depend on a direction's length, only its first bracketing step
    // and the tolerances do: the gain is real but moderate (about 1.9x measured).
    assert!(3 * unit.evaluations >= 5 * scaled.evaluations, "{} vs {}", unit.evaluations, scaled.evaluations);

    let lopts = |scales| LbfgsOptions { scales, gtol: 1e-8, ftol: 0.0, max_iterations: 5000, ..Default::default() };
    let unit = lbfgs(|x: &[f64]| Ok(badly_scaled(x)), &[0.0, 0.0], &lopts(None)).unwrap();
    let scaled = lbfgs(|x: &[f64]| Ok(badly_scaled(x)), &[0.0, 0.0], &lopts(good)).unwrap();
    eprintln!(
        "lbfgs, badly scaled: {} evaluations with unit scales ({}), {} with scales ({})",
        unit.evaluations, unit.stop, scaled.evaluations, scaled.stop
    );
    assert!(close(&scaled.x), "{:?}", scaled.x);
    assert_eq!(scaled.stop, Stop::Converged(Criterion::Gradient));
    // The gradient of a badly scaled problem is a poor direction until the memory has learnt the
    // curvature: about 4x measured.
    assert!(unit.evaluations >= 3 * scaled.evaluations, "{} vs {}", unit.evaluations, scaled.evaluations);
}

/// `(x0 - 3)^2 + (x1 - 1)^2`, NaN where `x0 > 2`: the best finite point is (2, 1) with f = 1.
fn nan_beyond_two(x: &[f64]) -> (f64, Vec<f64>) {
    if x[0] > 2.0 {
        return (f64::NAN, vec![f64::NAN; 2]);
    }
    ((x[0] - 3.0).powi(2) + (x[1] - 1.0).powi(2), vec![2.0 * (x[0] - 3.0), 2.0 * (x[1] - 1.0)])
}

#[test]
fn non_finite_values_keep_the_best_finite_point() {
    // The lowest finite value the objective ever returned, to compare with what the optimizer reports.
    let lowest = Cell::new(f64::INFINITY);
    let record = |x: &[f64]| {
        let (f, g) = nan_beyond_two(x);
        if f.is_finite() && f < lowest.get() {
            lowest.set(f);
        }
        Ok((f, g))
    };

    let r = powell(|x: &[f64]| record(x).map(|v| v.0), &[-4.0, 5.0], &PowellOptions::default()).unwrap();
    eprintln!("powell with a NaN region: {} evaluations, {}", r.evaluations, r.stop);
    assert!(r.non_finite > 0 || r.stop == Stop::NonFinite, "{}", r.stop);
    assert!(r.non_finite > 0);
    assert_eq!(r.fval, lowest.get());
    assert_eq!(nan_beyond_two(&r.x).0, r.fval);
    assert!((r.x[0] - 2.0).abs() < 1e-3 && (r.x[1] - 1.0).abs() < 1e-3, "{:?}", r.x);

    lowest.set(f64::INFINITY);
    let r = lbfgs(record, &[-4.0, 5.0], &LbfgsOptions::default()).unwrap();
    eprintln!("lbfgs with a NaN region: {} evaluations, {}, at {:?}", r.evaluations, r.stop, r.x);
    assert!(r.non_finite > 0 || r.stop == Stop::NonFinite, "{}", r.stop);
    assert!(r.non_finite > 0);
    assert_eq!(r.fval, lowest.get());
    assert_eq!(nan_beyond_two(&r.x).0, r.fval);
    // A gradient method stops at the edge of the region (where the gradient still points out of it),
    // not necessarily at the constrained minimum (2, 1).
    assert!((r.x[0] - 2.0).abs() < 1e-3, "{:?}", r.x);
    assert!(r.fval < nan_beyond_two(&[-4.0, 5.0]).0 / 10.0);

    // A non-finite start: nothing to improve on.
    let r = lbfgs(|x: &[f64]| Ok(nan_beyond_two(x)), &[3.0, 0.0], &LbfgsOptions::default()).unwrap();
    assert_eq!((r.stop, r.evaluations, r.x.clone()), (Stop::NonFinite, 1, vec![3.0, 0.0]));
    assert!(r.fval.is_nan());
    let r = powell(|x: &[f64]| Ok(nan_beyond_two(x).0), &[3.0, 0.0], &PowellOptions::default()).unwrap();
    assert_eq!((r.stop, r.evaluations, r.x.clone()), (Stop::NonFinite, 1, vec![3.0, 0.0]));
}

#[test]
fn cancel_flag_stops_at_once() {
    let x0 = [-1.2, 1.0];
    let flag = Arc::new(AtomicBool::new(true));
    let r =
        powell(|x: &[f64]| Ok(rosenbrock(x)), &x0, &PowellOptions { cancel: Some(flag.clone()), ..Default::default() })
            .unwrap();
    assert_eq!((r.stop, r.evaluations, r.x.as_slice()), (Stop::Cancelled, 0, &x0[..]));
    assert!(r.fval.is_nan());
    let r = lbfgs(
        |x: &[f64]| Ok((rosenbrock(x), rosenbrock_grad(x))),
        &x0,
        &LbfgsOptions { cancel: Some(flag.clone()), ..Default::default() },
    )
    .unwrap();
    assert_eq!((r.stop, r.evaluations, r.x.as_slice()), (Stop::Cancelled, 0, &x0[..]));

    // Set during the run (as Ctrl-C would): no evaluation after it, and the best point so far is kept.
    flag.store(false, Ordering::Relaxed);
    let (count, lowest) = (Cell::new(0usize), Cell::new(f64::INFINITY));
    let f = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
        count.set(count.get() + 1);
        if count.get() == 7 {
            flag.store(true, Ordering::Relaxed);
        }
        lowest.set(lowest.get().min(rosenbrock(x)));
        Ok((rosenbrock(x), rosenbrock_grad(x)))
    };
    let r = lbfgs(&f, &x0, &LbfgsOptions { cancel: Some(flag.clone()), ..Default::default() }).unwrap();
    assert_eq!((r.stop, r.evaluations), (Stop::Cancelled, 7));
    assert_eq!(r.fval, lowest.get());
    assert!(r.fval < rosenbrock(&x0));

    flag.store(false, Ordering::Relaxed);
    count.set(0);
    lowest.set(f64::INFINITY);
    let r =
        powell(|x: &[f64]| f(x).map(|v| v.0), &x0, &PowellOptions { cancel: Some(flag.clone()), ..Default::default() })
            .unwrap();
    assert_eq!((r.stop, r.evaluations), (Stop::Cancelled, 7));
    assert_eq!(r.fval, lowest.get());
    assert!(r.fval < rosenbrock(&x0));
}

mod real_images {
    use std::time::Instant;

    use candle_core::Tensor;
    use regsh::image::io::load;
    use regsh::image::ops::{pad, threshold};
    use regsh::image::resample::{resample, Interpolation, Padding};
    use regsh::image::smooth::{smooth, SigmaUnit};
    use regsh::image::Image;
    use regsh::metrics::evaluation::mean_displacement_error;
    use regsh::metrics::{Metric, OptionValue};
    use regsh::ops::SampleMode;
    use regsh::optim::{lbfgs, physical_shift_scales, powell, tensor_objective, LbfgsOptions, PowellOptions};
    use regsh::spatial::{warp, warp_tensor, Linear, LinearKind, Transform, WarpInterpolation};

    /// avg152 T1 smoothed and resampled to 4 mm (fixed), the same smoothed image moved by a known rigid
    /// transform about the grid centre (moving: `moving(T(x)) = fixed(x)`), the brain mask at 4 mm, and
    /// the truth `T` (6, -4, 3 mm; 5 degrees about z). The moving image stays at 2 mm (so interpolating
    /// it adds little blur: at 4 mm the blur, smallest where samples fall on voxel centres, pulls the
    /// optimum of tz = 0.76 voxels by 0.5 mm towards a whole voxel) on the original grid padded by
    /// 20 mm (so no content leaves its field of view, which would bias the optimum too).
    fn problem() -> (Image, Image, Image, Linear) {
        let t1 = load(super::common::data("avg152/avg152T1.nii")).unwrap();
        let g = t1.grid().downsampled(2.0).unwrap();
        let source = smooth(&t1, [0.85; 3], SigmaUnit::Voxels).unwrap();
        let fixed = resample(&source, &g, Interpolation::Linear, Padding::Zero).unwrap();
        let truth =
            Linear::from_params(LinearKind::Rigid, &[6.0, -4.0, 3.0, 0.0, 0.0, 5f64.to_radians()], g.centre()).unwrap();
        let padded = pad(&t1, [10; 3], [10; 3], 0.0).unwrap().grid().clone();
        let moving =
            warp(&source, truth.inverse().unwrap().as_ref(), &padded, WarpInterpolation::Linear, Padding::Zero)
                .unwrap();
        let brain = load(super::common::data("avg152/brainmask.nii")).unwrap();
        let mask = threshold(&resample(&brain, &g, Interpolation::Nearest, Padding::Zero).unwrap(), 0.5, f64::INFINITY)
            .unwrap();
        (fixed, moving, mask, truth)
    }

    /// The moving image warped onto the fixed grid by the rigid transform with parameters `p`.
    fn warped(moving: &Image, fixed: &Image, p: Tensor) -> regsh::Result<Tensor> {
        let t = Linear::new(LinearKind::Rigid, p, fixed.grid().centre())?;
        warp_tensor(moving.data(), moving.grid(), &t, fixed.grid(), SampleMode::Linear, Padding::Zero)
    }

    #[test]
    fn powell_recovers_a_rigid_transform_with_nmi() {
        let (fixed, moving, mask, truth) = problem();
        let g = fixed.grid().clone();
        let identity = Linear::identity(LinearKind::Rigid, g.centre());
        // Fixed Parzen ranges, so the bins do not move as the warped image changes.
        let mut nmi = Metric::new("nmi").unwrap();
        let (fs, ms) = (fixed.stats().unwrap(), moving.stats().unwrap());
        nmi.set("range_fixed", OptionValue::Range(fs.min, fs.max)).unwrap();
        nmi.set("range_moving", OptionValue::Range(ms.min, ms.max)).unwrap();
        let scales = physical_shift_scales(&identity, &g, 2.0).unwrap();
        let opts = PowellOptions { scales: Some(scales), xtol: 1e-2, ftol: 1e-7, ..Default::default() };
        let before = mean_displacement_error(&identity, &truth, &g, Some(&mask)).unwrap();
        let t0 = Instant::now();
        let f = |x: &[f64]| -> regsh::Result<f64> {
            let p = Tensor::from_vec(x.iter().map(|v| *v as f32).collect::<Vec<_>>(), 6, &candle_core::Device::Cpu)?;
            Ok(-nmi.value(fixed.data(), &warped(&moving, &fixed, p)?, None)?)
        };
        let r = powell(f, &[0.0; 6], &opts).unwrap();
        let est = Linear::from_params(LinearKind::Rigid, &r.x, g.centre()).unwrap();
        let err = mean_displacement_error(&est, &truth, &g, Some(&mask)).unwrap();
        eprintln!(
            "powell, -nmi at 4 mm: {before:.2} mm -> {err:.3} mm, {} evaluations, {} iterations, {:.1} s, {}; x = {:?}",
            r.evaluations,
            r.iterations,
            t0.elapsed().as_secs_f64(),
            r.stop,
            r.x
        );
        assert!(err < 0.5, "mean displacement error {err} mm");
        assert!(r.stop.is_converged(), "{}", r.stop);
    }

    #[test]
    fn lbfgs_recovers_a_rigid_transform_with_ncc() {
        let (fixed, moving, mask, truth) = problem();
        let g = fixed.grid().clone();
        let identity = Linear::identity(LinearKind::Rigid, g.centre());
        let ncc = Metric::new("ncc").unwrap();
        let scales = physical_shift_scales(&identity, &g, 2.0).unwrap();
        let opts = LbfgsOptions { scales: Some(scales), gtol: 1e-6, ftol: 1e-7, xtol: 1e-5, ..Default::default() };
        let t0 = Instant::now();
        let f = tensor_objective(identity.params(), |p: &Tensor| {
            ncc.loss(fixed.data(), &warped(&moving, &fixed, p.clone())?, None)
        });
        let r = lbfgs(f, &[0.0; 6], &opts).unwrap();
        let est = Linear::from_params(LinearKind::Rigid, &r.x, g.centre()).unwrap();
        let err = mean_displacement_error(&est, &truth, &g, Some(&mask)).unwrap();
        eprintln!(
            "lbfgs, -ncc at 4 mm: {err:.3} mm, {} evaluations, {} iterations, {:.1} s, {}; x = {:?}; losses {:?}",
            r.evaluations,
            r.iterations,
            t0.elapsed().as_secs_f64(),
            r.stop,
            r.x,
            r.history
        );
        assert!(err < 0.5, "mean displacement error {err} mm");
        assert!(r.stop.is_converged(), "{}", r.stop);
        assert!(r.history.windows(2).all(|w| w[1] <= w[0]), "each accepted step lowers the loss");
    }
}

#[test]
fn sampled_objective_gradient_matches_finite_differences_for_every_kind() {
    // The fused sampled loss as a function of the transform's parameters (world matrix, voxel maps,
    // chain rule) against central differences, on a smooth synthetic pair with anisotropic spacing.
    use regsh::image::{Grid, Image};
    use regsh::ops::point_metric::PointMeasure;
    use regsh::optim::sampled::{fixed_values, SampledObjective};
    use regsh::spatial::LinearKind;
    let g = Grid::new([20, 18, 16], [1.5, 2.0, 2.5], [-14.0, -17.0, -18.0], nalgebra::Matrix3::identity()).unwrap();
    let [nx, ny, nz] = g.shape();
    let vals: Vec<f32> = (0..nx * ny * nz)
        .map(|i| {
            let (x, y, z) = ((i % nx) as f32, ((i / nx) % ny) as f32, (i / (nx * ny)) as f32);
            (0.4 * x).sin() * (0.3 * y).cos() + 0.5 * (0.25 * z + 0.1 * x).sin()
        })
        .collect();
    let img = Image::from_vec(vals.clone(), 1, g.clone()).unwrap();
    let r = common::rand_vec(3 * 3000, 5);
    let points: Vec<f32> = r.iter().enumerate().map(|(i, u)| 3.0 + u * ([nx, ny, nz][i % 3] as f32 - 7.0)).collect();
    let samples = regsh::ops::point_metric::PointSamples { fixed: fixed_values(&vals, [nx, ny, nz], &points), points };
    let cases: [(LinearKind, Vec<f64>); 4] = [
        (LinearKind::Translation, vec![0.8, -0.6, 0.4]),
        (LinearKind::Rigid, vec![0.8, -0.6, 0.4, 0.03, -0.02, 0.04]),
        (LinearKind::Similarity, vec![0.8, -0.6, 0.4, 0.03, -0.02, 0.04, 1.02]),
        (LinearKind::Affine, vec![0.8, -0.6, 0.4, 0.03, -0.02, 0.04, 1.02, 0.98, 1.01, 0.01, -0.02, 0.015]),
    ];
    for measure in [PointMeasure::Mse, PointMeasure::Ncc] {
        for (kind, p) in &cases {
            let obj = SampledObjective::new(measure.clone(), &g, &img, *kind, g.centre()).unwrap();
            let (_, grad, inside) = obj.eval(p, &samples).unwrap();
            assert_eq!(inside, 3000, "{kind:?}: every point maps inside");
            let scale = grad.iter().fold(0f64, |m, v| m.max(v.abs()));
            for i in 0..p.len() {
                let h = if i < 3 { 1e-4 } else { 1e-6 };
                let (mut a, mut b) = (p.clone(), p.clone());
                a[i] += h;
                b[i] -= h;
                let fd = (obj.eval(&a, &samples).unwrap().0 - obj.eval(&b, &samples).unwrap().0) / (2.0 * h);
                assert!((fd - grad[i]).abs() < 5e-3 * scale, "{measure:?} {kind:?} d/dp{i}: {} vs {fd}", grad[i]);
            }
        }
    }
}

/// Adam's arithmetic on plain numbers (`AdamMoments`, which the dense fields' step and `AdamVec` use) and
/// its tensor twin (`Adam`, for network weights) give the same directions to the bit, step after step;
/// SGD with Nesterov momentum on vectors and on tensors take the same steps.
#[test]
fn adam_and_sgd_on_vectors_match_their_tensor_twins() {
    use candle_core::{Device, Tensor, Var};
    use regsh::optim::{Adam, AdamMoments, Optimizer, Sgd, SgdVec, VecOptimizer};
    let n = 257;
    let mut moments = AdamMoments::<f32>::new(n);
    let mut adam = Adam::new(1.0, vec![]);
    let mut dir = vec![0f32; n];
    for step in 0..6u64 {
        // Gradients of very different sizes, signs flipping between steps.
        let g: Vec<f32> = common::rand_vec(n, 40 + step)
            .iter()
            .enumerate()
            .map(|(i, v)| (2.0 * v - 1.0) * 10f32.powi(i as i32 % 9 - 6))
            .collect();
        moments.direction(&g, &mut dir);
        adam.tick();
        let t = adam.direction(0, &Tensor::from_vec(g, n, &Device::Cpu).unwrap()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(dir, t, "step {step}");
    }
    let x0: Vec<f64> = common::rand_vec(5, 7).iter().map(|v| *v as f64).collect();
    let mut x = x0.clone();
    let mut sgd = SgdVec::new(0.1, 0.9, true, vec![1.0; 5]).unwrap();
    let var = Var::from_vec(x0.clone(), 5, &Device::Cpu).unwrap();
    let mut twin = Sgd::new(0.1, 0.9, true, vec![]).unwrap();
    for _ in 0..4 {
        // f(x) = sum x_i^3 / 3: gradient x^2.
        let g: Vec<f64> = x.iter().map(|v| v * v).collect();
        sgd.step(&mut x, &g);
        let loss = (var.as_tensor().powf(3.0).unwrap() / 3.0).unwrap().sum_all().unwrap();
        twin.step(std::slice::from_ref(&var), &loss.backward().unwrap()).unwrap();
    }
    let t = var.as_tensor().to_vec1::<f64>().unwrap();
    for (a, b) in x.iter().zip(&t) {
        assert!((a - b).abs() < 1e-12, "{x:?} vs {t:?}");
    }
}
