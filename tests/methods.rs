//! Methods written in the DSL: a script measure equals the built-in it re-implements (value and
//! gradient through the warp) and registers as well; script objectives reach known minima; errors inside
//! a script function are reported against its own text.

mod common;

use candle_core::Var;
use regsh::diagnostics::render;
use regsh::image::io::load;
use regsh::image::resample::Padding;
use regsh::metrics::Metric;
use regsh::ops::SampleMode;
use regsh::session::Session;
use regsh::spatial::{warp_tensor, Linear, LinearKind};

fn session() -> Session {
    assert!(common::data("avg152/avg152T1.nii").is_file());
    Session::new().unwrap_or_else(|e| panic!("{}", render(&e, false, 100)))
}

fn eval(s: &mut Session, text: &str) -> rhai::Dynamic {
    s.eval("test", text).unwrap_or_else(|e| panic!("{}", render(&e, false, 100)))
}

/// Global NCC from tensor reductions, as a researcher would write it.
const SCRIPT_NCC: &str = "metric(|f, w| {
    let a = f - f.mean();
    let b = w - w.mean();
    (a * b).mean() / sqrt((a * a).mean() * (b * b).mean())
}, name=\"script_ncc\")";

/// The loss of `metric` at 12 affine parameters `p` (about the fixed grid's centre) warping `moving`
/// onto `fixed`, and its gradient with respect to the parameters, by autograd through the warp.
fn loss_and_grad(
    metric: &Metric,
    fixed: &regsh::image::Image,
    moving: &regsh::image::Image,
    p: &[f64],
) -> (f64, Vec<f64>) {
    let centre = fixed.grid().centre();
    let init = Linear::from_params(LinearKind::Affine, p, centre).unwrap();
    let var = Var::from_tensor(init.params()).unwrap();
    let t = Linear::new(LinearKind::Affine, var.as_tensor().clone(), centre).unwrap();
    let warped =
        warp_tensor(moving.data(), moving.grid(), &t, fixed.grid(), SampleMode::Linear, Padding::Zero).unwrap();
    let loss = metric.loss(fixed.data(), &warped, None).unwrap();
    let value = loss.to_dtype(candle_core::DType::F64).unwrap().to_scalar::<f64>().unwrap();
    let g = loss.backward().unwrap();
    let grad = g.get(var.as_tensor()).unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
    (value, grad)
}

#[test]
fn a_script_ncc_equals_the_built_in_in_value_and_gradient() {
    let mut s = session();
    let script = eval(&mut s, SCRIPT_NCC).try_cast::<Metric>().expect("a Metric");
    let builtin = Metric::new("ncc").unwrap();
    let t1 = load(common::data("avg152/avg152T1.nii")).unwrap();
    let t2 = load(common::data("avg152/avg152T2.nii")).unwrap();
    // A T1 / T2 pair under a non-trivial affine (mm, radians, scales, shears).
    let p = [3.0, -2.0, 1.5, 0.04, -0.03, 0.05, 1.03, 0.97, 1.01, 0.02, -0.01, 0.015];
    for (fixed, moving) in [(&t1, &t2), (&t2, &t1), (&t1, &t1)] {
        let (vs, gs) = loss_and_grad(&script, fixed, moving, &p);
        let (vb, gb) = loss_and_grad(&builtin, fixed, moving, &p);
        assert!((vs - vb).abs() < 1e-4, "loss {vs} vs built-in {vb}");
        let scale = gb.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        assert!(scale > 1e-4, "a gradient to compare: {gb:?}");
        for (i, (a, b)) in gs.iter().zip(&gb).enumerate() {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1e-2 * scale), "d loss / d p{i}: {a} vs built-in {b}");
        }
    }
    // And `measure` gives the NCC itself (not the loss).
    let v = eval(&mut s, &format!(
        "let m = {SCRIPT_NCC}; let t1 = load(\"data/avg152/avg152T1.nii\"); let t2 = load(\"data/avg152/avg152T2.nii\"); measure(m, t1, t2) - ncc(t1, t2)"
    ))
    .as_float()
    .unwrap();
    assert!(v.abs() < 1e-4, "measure differs from ncc by {v}");
}

#[test]
fn iso_with_a_script_ncc_recovers_a_known_affine_as_the_built_in_does() {
    let mut s = session();
    // The masked form: only brain voxels count (what iso passes as the third argument).
    let errors = eval(
        &mut s,
        "let my_ncc = metric(|f, w, m| {
            let n = m.sum();
            let a = (f - (f * m).sum() / n) * m;
            let b = (w - (w * m).sum() / n) * m;
            (a * b).sum() / sqrt((a * a).sum() * (b * b).sum())
        });
        let t1 = load(\"data/avg152/avg152T1.nii\");
        let brain = load(\"data/avg152/brainmask.nii\") > 0.5;
        assert(abs(measure(my_ncc, t1, load(\"data/avg152/avg152T2.nii\"), mask=brain)
            - ncc(t1, load(\"data/avg152/avg152T2.nii\"), mask=brain)) < 1e-4, \"masked values agree\");
        assert(abs(measure(my_ncc, t1, load(\"data/avg152/avg152T2.nii\"))
            - ncc(t1, load(\"data/avg152/avg152T2.nii\"))) < 1e-4, \"without a mask: every voxel\");
        let truth = affine([4.0, -3.0, 2.0, 0.05, -0.04, 0.03, 1.04, 0.97, 1.02, 0.0, 0.0, 0.0], about=t1);
        let moved = warp(t1, inverse(truth), t1);
        let start = displacement_error(affine(), truth, t1, mask=brain);
        let r = init(moved, t1, method=\"identity\") |> iso(my_ncc, scales=3, mask=brain);
        let b = init(moved, t1, method=\"identity\") |> iso(ncc, scales=3, mask=brain);
        [start, displacement_error(r.transform, truth, t1, mask=brain), displacement_error(b.transform, truth, t1, mask=brain)]",
    )
    .into_typed_array::<f64>()
    .unwrap();
    let (start, script, builtin) = (errors[0], errors[1], errors[2]);
    eprintln!("start {start:.3} mm, script NCC {script:.3} mm, built-in NCC {builtin:.3} mm");
    assert!(start > 5.0, "a real misalignment to recover: {start} mm");
    assert!(script < 0.3, "the script NCC ends {script} mm from the truth");
    assert!(builtin < 0.3, "the built-in ends {builtin} mm from the truth");
}

#[test]
fn a_combined_measure_registers_t2_onto_t1_and_a_script_measure_is_polished_by_lbfgs() {
    let mut s = session();
    let errors = eval(
        &mut s,
        "let t1 = load(\"data/avg152/avg152T1.nii\");
        let t2 = load(\"data/avg152/avg152T2.nii\");
        let brain = load(\"data/avg152/brainmask.nii\") > 0.5;
        let both = 0.5 * ncc + 0.5 * mi;
        assert(abs(measure(both, t1, t2) + 0.5 * ncc(t1, t2) + 0.5 * mi(t1, t2)) < 1e-4, \"the combined loss\");
        let truth = affine([4.0, -3.0, 2.0, 0.05, -0.04, 0.03, 1.04, 0.97, 1.02, 0.0, 0.0, 0.0], about=t1);
        let moved = warp(t2, inverse(truth), t1);
        let r = init(moved, t1, method=\"identity\") |> iso(both, scales=3);
        [displacement_error(affine(), truth, t1, mask=brain), displacement_error(r.transform, truth, t1, mask=brain)]",
    )
    .into_typed_array::<f64>()
    .unwrap();
    eprintln!("0.5 ncc + 0.5 mi: {:.3} mm -> {:.3} mm", errors[0], errors[1]);
    assert!(errors[0] > 5.0 && errors[1] < 1.0, "T2 onto T1 with 0.5 ncc + 0.5 mi: {errors:?}");

    // A script measure's polish: L-BFGS by autograd on the finest level's whole grid lowers the loss
    // Adam left (one level of 5 Adam iterations from a 3 mm shift).
    use regsh::optim::{iso_linear, IsoOptimizer, IsoOptions, Polish, Sampling, Schedule};
    let metric = eval(&mut s, SCRIPT_NCC).try_cast::<Metric>().unwrap();
    let t1 = load(common::data("avg152/avg152T1.nii")).unwrap();
    let fixed = regsh::image::smooth::smooth(&t1, [1.0; 3], regsh::image::smooth::SigmaUnit::Voxels).unwrap();
    let g = fixed.grid().clone();
    let init = Linear::from_params(LinearKind::Translation, &[3.0, -2.0, 0.0], g.centre()).unwrap();
    let mut opts = IsoOptions {
        schedule: Schedule::new(1, &[5], 0.5).unwrap(),
        metric,
        fixed_mask: None,
        convergence: (10, 1e-6),
        cancel: None,
        sampling: Sampling::Full,
        seed: 0,
        optimizer: IsoOptimizer::Adam,
        polish: None,
    };
    let plain = iso_linear(&fixed, &fixed, &init, &opts).unwrap();
    opts.polish = Some(Polish { points: 1, iterations: 20 });
    let polished = iso_linear(&fixed, &fixed, &init, &opts).unwrap();
    let p = polished.polish.clone().expect("a polish report");
    let shift = |r: &regsh::optim::IsoResult| {
        let v = r.transform.param_values().unwrap();
        (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
    };
    eprintln!(
        "adam alone {:.3} mm, with the polish {:.3} mm ({} evaluations)",
        shift(&plain),
        shift(&polished),
        p.losses.len()
    );
    assert!(shift(&polished) < 0.05 && shift(&polished) < shift(&plain), "{} vs {}", shift(&polished), shift(&plain));
}

#[test]
fn script_objectives_reach_known_minima() {
    let mut s = session();
    let r = eval(
        &mut s,
        "let rosenbrock = |p| { let x = p[0]; let y = p[1]; (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2 };
        let a = adam(lr=0.01).minimize(rosenbrock, [-1.0, 1.0], iterations=5000);
        let p = powell().minimize(rosenbrock, [-1.0, 1.0]);
        let l = lbfgs().minimize(rosenbrock, [-1.0, 1.0]);
        let g = sgd(lr=1e-3, momentum=0.9).minimize(rosenbrock, [-1.0, 1.0], iterations=20000);
        [a.x[0], a.x[1], p.x[0], p.x[1], l.x[0], l.x[1], g.x[0], g.x[1], a.loss.len(), a.iterations]",
    )
    .into_array()
    .unwrap();
    let f: Vec<f64> = r.iter().map(|d| d.as_float().or_else(|_| d.as_int().map(|i| i as f64)).unwrap()).collect();
    for (name, x, y) in [("adam", f[0], f[1]), ("powell", f[2], f[3]), ("lbfgs", f[4], f[5]), ("sgd", f[6], f[7])] {
        assert!((x - 1.0).abs() < 0.01 && (y - 1.0).abs() < 0.01, "{name} ends at ({x}, {y}), not (1, 1)");
    }
    assert_eq!((f[8], f[9]), (5000.0, 5000.0), "one loss per Adam iteration");
    // Weight decay pulls the minimum of (x - 2)^2 to 2 / (1 + wd / 2): the L2 penalty wd / 2 |x|^2.
    let x = eval(
        &mut s,
        "adam(lr=0.05, weight_decay=1.0).minimize(|x| ((x - 2.0) ** 2).sum(), [0.0], iterations=3000).x[0]",
    )
    .as_float()
    .unwrap();
    assert!((x - 2.0 / 1.5).abs() < 1e-3, "weight decay: {x}");
    // A tensor x0 gives a tensor x of its shape.
    let shape = eval(&mut s, "lbfgs().minimize(|x| ((x - 1.0) ** 2).sum(), zeros([2, 3])).x.shape")
        .into_typed_array::<i64>()
        .unwrap();
    assert_eq!(shape, vec![2, 3]);
}

#[test]
fn errors_in_script_functions_point_at_their_text_and_bad_results_are_named() {
    let mut s = session();
    let cases = [
        // An error inside the objective: the report points into the closure.
        ("adam().minimize(|x| {\n    x.no_such_method()\n}, [0.0])", "no_such_method"),
        // A number where a tensor is needed for a gradient.
        ("adam().minimize(|x| 1.0, [0.0])", "not a Tensor"),
        // A loss with several values.
        ("lbfgs().minimize(|x| x * 2.0, [0.0, 1.0])", "one value"),
        // A measure that returns a number (.item() cuts the gradient).
        ("let m = metric(|f, w| (f - w).mean().item()); let t1 = load(\"data/avg152/avg152T1.nii\"); measure(m, t1, t1)", "not a Tensor"),
        // The wrong number of parameters.
        ("metric(|f| f.mean())", "takes 1 arguments"),
        // A mask for a measure without a mask parameter.
        ("let m = metric(|f, w| (f - w).mean()); let t1 = load(\"data/avg152/avg152T1.nii\"); measure(m, t1, t1, mask=t1 > 0.5)", "takes none"),
        // Shapes that do not broadcast.
        ("tensor([1.0, 2.0]) + tensor([1.0, 2.0, 3.0])", "shape"),
        ("grad(tensor([1.0, 2.0]).sum(), tensor([1.0]))", "gets no gradient"),
        ("tensor([[1.0], [2.0, 3.0]])", "ragged"),
        ("zeros([2, 3]).reshape([4, -1])", "cannot reshape"),
        ("arange(3)[5]", "out of range"),
        // Sizes a small script must not allocate (a hang or an abort before).
        ("zeros([1000000, 1000000, 1000000])", "more than"),
        ("arange(0, 1, 1e-9)", "more than"),
        ("adam().minimize(|x| (x * x).sum(), [1.0], iterations=999999999999999)", "at most"),
        // A regularizer cannot be rewarded; a measure divided by zero.
        ("-(lncc + 0.1 * bending)", "negative weight"),
        ("regularizer(|u| u.mean(), weight=-1)", ">= 0"),
        ("ncc / 0", "division by zero"),
        ("register(load(\"data/avg152/avg152T1.nii\"), load(\"data/avg152/avg152T1.nii\"), metric=lncc + bending, regularizer=\"diffusion:1\", transform=\"syn\")", "give one"),
    ];
    for (text, want) in cases {
        let e = s.eval("bad", text).err().unwrap_or_else(|| panic!("`{text}` should fail"));
        let shown = render(&e, false, 200);
        assert!(shown.contains(want), "`{text}`: expected `{want}` in\n{shown}");
    }
    // Powers of negative bases by a constant exponent, as torch.
    assert_eq!(eval(&mut s, "(tensor([-2.0]) ** tensor(2.0)).item()").as_float().unwrap(), 4.0);
    // The closure's error is reported on the closure's line (line 2 of the first case).
    let e = s.eval("bad", cases[0].0).err().unwrap();
    let shown = render(&e, false, 200);
    assert!(shown.contains("[bad:2:7]"), "not reported on the closure's line:\n{shown}");
}

#[test]
fn a_measure_plus_a_regularizer_is_one_dense_objective_and_a_script_regularizer_equals_the_built_in() {
    let mut s = session();
    // Colin27 onto avg152 T1 at 2 mm (two brains: a real deformation), greedy SyN-like with LNCC.
    let v = eval(
        &mut s,
        "let t1 = load(\"data/avg152/avg152T1.nii\");
        let colin = resample(load(\"data/colin27/ch2.nii.gz\"), t1);
        let sp = 2.0;
        let my_diffusion = regularizer(|u| {
            let dx = (u.narrow(3, 1, u.shape[3] - 1) - u.narrow(3, 0, u.shape[3] - 1)) / sp;
            let dy = (u.narrow(2, 1, u.shape[2] - 1) - u.narrow(2, 0, u.shape[2] - 1)) / sp;
            let dz = (u.narrow(1, 1, u.shape[1] - 1) - u.narrow(1, 0, u.shape[1] - 1)) / sp;
            ((dx * dx).sum(dim=0).mean() + (dy * dy).sum(dim=0).mean() + (dz * dz).sum(dim=0).mean()) / 3.0
        }, name=\"my_diffusion\");
        let f = gaussian_filter(randn([3, 91, 109, 91], seed=2), 3.0) * 20.0;
        let same = penalty(my_diffusion, f, t1).item() - penalty(diffusion, f, t1).item();
        let run = |m| register(colin, t1, metric=m, transform=\"syn\", scales=2, iterations=[10, 5]);
        let rough = |r| jacobian_stats(jacobian(r.transform, t1)).std_log_det;
        let plain = run.call(lncc);
        let bent = run.call(lncc + 100.0 * bending);
        let a = run.call(lncc + 10.0 * diffusion);
        let b = run.call(lncc + 10.0 * my_diffusion);
        [same, rough.call(plain), rough.call(bent), rough.call(a), rough.call(b), displacement_error(a.transform, b.transform, t1)]",
    )
    .into_typed_array::<f64>()
    .unwrap();
    eprintln!("script - built-in diffusion {:.2e}; std log det: none {:.4}, 100 bending {:.4}, 10 diffusion {:.4}, 10 script diffusion {:.4}; built-in vs script fields {:.4} mm", v[0], v[1], v[2], v[3], v[4], v[5]);
    assert!(v[0].abs() < 1e-6, "the script diffusion differs from the built-in by {}", v[0]);
    assert!(v[2] < 0.7 * v[1], "bending did not smooth the field: {} vs {}", v[2], v[1]);
    assert!(v[3] < 0.7 * v[1] && v[4] < 0.7 * v[1], "diffusion did not smooth the field: {v:?}");
    assert!(v[5] < 0.1, "the script and built-in diffusion end {} mm apart", v[5]);
    // A regularizer belongs to dense stages: a linear registration with one is refused.
    let e = s
        .eval("bad", "let t1 = load(\"data/avg152/avg152T1.nii\"); init(t1, t1) |> iso(mi + diffusion, scales=1)")
        .expect_err("refused");
    assert!(render(&e, false, 200).contains("dense transforms"), "{}", render(&e, false, 200));
}

#[test]
fn train_takes_a_measure_written_in_the_dsl_as_its_loss() {
    let mut s = session();
    let losses = eval(
        &mut s,
        &format!(
            "let t1 = load(\"data/avg152/avg152T1.nii\");
            let m = {SCRIPT_NCC};
            let n = affine_net(input_size=16, channels=[4, 8], hidden=8, seed=1);
            let p = synthetic_pairs(t1, t1, translation=5.0, rotation=0.0, scale=0.0, shear=0.0);
            train(n, p, loss=m, epochs=2, steps=5).train_loss"
        ),
    )
    .into_typed_array::<f64>()
    .unwrap();
    // The loss is minus the NCC of the warped crop with the fixed one: in [-1, 0) for the same image
    // moved by up to 5 mm.
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| (-1.0..-0.5).contains(l)), "{losses:?}");
}

#[test]
fn sequential_networks_train_on_a_closure_loss_checkpoint_resume_and_say_what_is_wrong() {
    let mut s = session();
    // Least squares with weight decay λ: the minimizer of mean (w x + b - y)^2 + λ/2 (w^2 + b^2) for
    // y = 2x + 1 on x = 0, 0.25, .., 1.75 solves a 2 x 2 system (the normal equations plus λ I / 2 ...).
    // Here: SGD reaches it; compare with the closed form computed in f64.
    let xs: Vec<f64> = (0..8).map(|i| i as f64 / 4.0).collect();
    let n = xs.len() as f64;
    let lambda = 0.1;
    // d/dw: 2/n Σ (w x + b - y) x + λ w = 0; d/db: 2/n Σ (w x + b - y) + λ b = 0
    let (sx, sxx) = (xs.iter().sum::<f64>(), xs.iter().map(|x| x * x).sum::<f64>());
    let (sy, sxy) =
        (xs.iter().map(|x| 2.0 * x + 1.0).sum::<f64>(), xs.iter().map(|x| x * (2.0 * x + 1.0)).sum::<f64>());
    let (a11, a12, a22) = (2.0 * sxx / n + lambda, 2.0 * sx / n, 2.0 + lambda);
    let (r1, r2) = (2.0 * sxy / n, 2.0 * sy / n);
    let det = a11 * a22 - a12 * a12;
    let (w, b) = ((r1 * a22 - a12 * r2) / det, (a11 * r2 - a12 * r1) / det);
    let got = eval(
        &mut s,
        "let data = [];
        for i in 0..8 { let x = i / 4.0; data.push(#{x: tensor([x]), y: 2.0 * x + 1.0}); }
        let f = nn::sequential([nn::linear(1, 1)], seed=3);
        let r = train(f, data, loss=|net, b| ((net.forward(b.x).flatten() - b.y) ** 2).mean(),
                      optimizer=sgd(lr=0.1, momentum=0.5, weight_decay=0.1), epochs=100, batch=8);
        [f.weights[\"l0.weight\"].item(), f.weights[\"l0.bias\"].item(), r.stop]",
    )
    .into_array()
    .unwrap();
    let (gw, gb) = (got[0].as_float().unwrap(), got[1].as_float().unwrap());
    assert!((gw - w).abs() < 1e-4 && (gb - b).abs() < 1e-4, "weight decay: ({gw}, {gb}) vs closed form ({w}, {b})");
    assert!((w - 2.0).abs() > 0.05, "the decay moves the optimum off (2, 1): {w}");

    // Checkpoint after each epoch, resume to more epochs: the same weights as one run.
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("lin.safetensors").display().to_string().replace('\\', "/");
    let script = |epochs: usize, resume: bool| {
        format!(
            "let data = [];
            for i in 0..8 {{ let x = i / 4.0; data.push(#{{x: tensor([x]), y: 2.0 * x + 1.0}}); }}
            let f = nn::sequential([nn::linear(1, 1)], seed=3);
            let r = train(f, data, loss=|net, b| ((net.forward(b.x).flatten() - b.y) ** 2).mean(),
                          optimizer=adam(lr=0.05), epochs={epochs}, batch=2, seed=4, checkpoint=\"{ck}\", resume={resume});
            [f.weights[\"l0.weight\"].item(), r.steps]"
        )
    };
    let whole = eval(&mut s, &script(6, false)).into_array().unwrap();
    std::fs::remove_file(&ck).unwrap();
    let _ = eval(&mut s, &script(3, false));
    let resumed = eval(&mut s, &script(6, true)).into_array().unwrap();
    assert_eq!(resumed[1].as_int().unwrap(), 24, "4 steps per epoch, 6 epochs in all");
    let (a, b) = (whole[0].as_float().unwrap(), resumed[0].as_float().unwrap());
    assert!((a - b).abs() < 1e-6, "resumed {b} vs one run {a}");
    // A sequential network loads back as one, and is never the active registration network.
    let kind = eval(&mut s, &format!("let n = load_net(\"{ck}\"); n.kind")).into_string().unwrap();
    assert_eq!(kind, "sequential");

    let cases = [
        // A batch of another shape than the first layer takes: the layer is named.
        ("nn::sequential([nn::conv3d(2, 4)]).forward(zeros([1, 3, 8, 8, 8]))", "layer 0, nn::conv3d(2, 4, kernel=3)"),
        ("nn::sequential([nn::flatten(), nn::linear(5, 2)]).forward(zeros([2, 3]))", "(N, ..., 5)"),
        // Keyword arguments are checked.
        ("nn::conv3d(2, 4, kernal=3)", "did you mean `kernel`"),
        ("nn::dropout(1.5)", "[0, 1)"),
        ("nn::sequential([nn::relu(), 3])", "item 1 is an integer"),
        // A loss closure that returns a float, several values, or nothing of the weights.
        ("let n = nn::sequential([nn::linear(1, 1)]); train(n, [#{x: tensor([1.0])}], loss=|net, b| 1.0)", "not a Tensor"),
        ("let n = nn::sequential([nn::linear(1, 2)]); train(n, [#{x: tensor([1.0])}], loss=|net, b| net.forward(b.x))", "one-element"),
        ("let n = nn::sequential([nn::linear(1, 1), nn::linear(1, 1)]); train(n, [#{x: tensor([1.0])}], loss=|net, b| (b.x * 2.0).sum())", "no gradient"),
        ("let n = nn::sequential([nn::linear(1, 1)]); train(n, [#{x: tensor([1.0])}], loss=|net| 1.0)", "a loss takes (net, batch)"),
        // Weight decay gives every weight a gradient; the check is on the loss's own.
        ("let n = nn::sequential([nn::linear(1, 1), nn::linear(1, 1)]); train(n, [#{x: tensor([1.0])}], loss=|net, b| (b.x * 2.0).sum() + net.weights[\"l0.bias\"].sum(), optimizer=adam(weight_decay=0.1))", "no gradient to 3 of"),
        // Samples must agree; options must fit the data.
        ("let n = nn::sequential([nn::linear(1, 1)]); train(n, [#{x: tensor([1.0])}, #{x: tensor([1.0, 2.0])}], loss=|net, b| net.forward(b.x).sum())", "item 1, key `x` has shape [2]"),
        ("let n = nn::sequential([nn::linear(1, 1)]); train(n, [#{x: tensor([1.0])}], loss=|net, b| net.forward(b.x).sum(), lr=0.1, optimizer=adam())", "not lr= too"),
        ("let n = nn::sequential([nn::linear(1, 1)]); train(n, [#{x: tensor([1.0])}], loss=|net, b| net.forward(b.x).sum(), optimizer=lbfgs())", "first-order"),
        ("let n = nn::sequential([nn::linear(1, 1)]); train(n, [#{x: tensor([1.0])}], loss=ncc)", "needs a loss closure"),
        ("let n = nn::sequential([nn::linear(1, 1)]); let t1 = load(\"data/avg152/avg152T1.nii\"); train(n, pairs([[t1, t1]]))", "sequential network"),
        // A deep metric's network takes patch pairs; patches fit the image; the mask holds a voxel.
        ("deep_metric(nn::sequential([nn::conv3d(3, 4)]))", "a patch pair is 2"),
        ("let t1 = load(\"data/avg152/avg152T1.nii\"); measure(deep_metric(nn::sequential([nn::conv3d(2, 4)]), patch=200), t1, t1)", "does not fit"),
        ("let t1 = load(\"data/avg152/avg152T1.nii\"); patch_pairs(t1, t1, mask=t1 > 1e9)", "mask holds no voxel"),
        ("let t1 = load(\"data/avg152/avg152T1.nii\"); patch_pairs(t1, t1, patch=[5, 5])", "one side or three"),
        ("let n = nn::sequential([nn::linear(1, 1)]); let t1 = load(\"data/avg152/avg152T1.nii\"); train(n, pairs([[t1, t1]]), loss=|net, b| net.forward(tensor([[1.0]])).sum(), seed=2)", "take an array of samples"),
        // The seed-003 recipes (stdlib/deep_metric.rhai) check their arguments and keyword arguments.
        ("let t1 = load(\"data/avg152/avg152T1.nii\"); train_deep_metric([t1], [])", "arrays of images of the same, non-zero length"),
        ("let t1 = load(\"data/avg152/avg152T1.nii\"); train_deep_metric([t1], [t1], stage=[[1, 8]])", "did you mean `stages`"),
        ("let t1 = load(\"data/avg152/avg152T1.nii\"); train_deep_metric([t1], [t1], masks=[t1, t1])", "one fixed-grid mask per pair"),
        ("let t1 = load(\"data/avg152/avg152T1.nii\"); train_deep_metric([t1], [t1], registration_masks=t1)", "registration_masks must be an array"),
        ("deep_metric_net(widht=4)", "did you mean `width`"),
        ("let t1 = load(\"data/avg152/avg152T1.nii\"); response(ncc, t1, t1, axis=\"w\")", "one of x, y, z"),
        ("let t1 = load(\"data/avg152/avg152T1.nii\"); response(ncc, t1, t1, range=[5, -5])", "lo <= hi"),
        ("plot([], \"target/empty_plot.png\")", "no curves"),
        ("plot(#{x: [1.0, 2.0], y: [1.0]}, \"target/bad_plot.png\")", "2 x values but 1 y values"),
        ("plot(#{x: [1.0], y: [1.0]}, \"target/bad_plot.txt\")", "must be a .png"),
        // Not a registration network.
        ("use_net(nn::sequential([nn::relu()]))", "registration network"),
        ("let t1 = load(\"data/avg152/avg152T1.nii\"); net(t1, t1, model=nn::sequential([nn::relu()]))", "not a registration network"),
    ];
    for (text, want) in cases {
        let e = s.eval("bad", text).err().unwrap_or_else(|| panic!("`{text}` should fail"));
        let shown = render(&e, false, 200);
        assert!(shown.contains(want), "`{text}`: expected `{want}` in\n{shown}");
    }
    // A NaN loss stops training with the last finite weights.
    let stop = eval(
        &mut s,
        "let n = nn::sequential([nn::linear(1, 1)], seed=1);
        let w = n.weights[\"l0.weight\"].item();
        let r = train(n, [#{x: tensor([1.0])}], loss=|net, b| net.forward(b.x).sum() / 0.0 * 0.0, epochs=2);
        [r.stop, r.steps, n.weights[\"l0.weight\"].item() == w]",
    )
    .into_array()
    .unwrap();
    assert_eq!(stop[0].clone().into_string().unwrap(), "non-finite loss");
    assert_eq!(stop[1].as_int().unwrap(), 0);
    assert!(stop[2].as_bool().unwrap(), "the failing step is not applied");
}

#[test]
fn a_deep_metric_trained_on_pairs_shifted_by_a_known_amount_peaks_near_that_shift() {
    // Sedghi et al.'s bias experiment in small: patch pairs of avg152 T1 and T2 moved 6 mm along x
    // (the same world points), a 2-channel classifier trained on them with a closure cross-entropy, and
    // its summed log-likelihood ratio as a measure of T1 against T2 translated by s along x.
    let mut s = session();
    let out = eval(
        &mut s,
        "let t1 = load(\"data/avg152/avg152T1.nii\");
        let t2 = load(\"data/avg152/avg152T2.nii\");
        let brain = t1 > 0.3 * t1.max();
        fn shift(s, grid) { affine([s, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], about=grid) }
        let data = patch_pairs(t1, warp(t2, shift(6.0, t1), t1), patch=13, n=800, mask=brain, min_distance=4.0, seed=1);
        let c = nn::sequential([nn::conv3d(2, 8, kernel=3, stride=2), nn::leaky_relu(0.2),
                                nn::conv3d(8, 16, kernel=3, stride=2), nn::global_avg_pool(), nn::linear(16, 2)], seed=2);
        train(c, data, loss=|net, b| cross_entropy(net.forward(b.x), b.label), optimizer=adam(lr=0.01), epochs=20, batch=32);
        let m = deep_metric(c, patches=256, patch=13, seed=3);
        [-6.0, -3.0, 0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 12.0].map(|x| [x, measure(m, t1, warp(t2, shift(x, t1), t1), mask=brain)])",
    )
    .into_array()
    .unwrap();
    let r: Vec<(f64, f64)> = out
        .into_iter()
        .map(|p| {
            let p = p.into_array().unwrap();
            (p[0].as_float().unwrap(), p[1].as_float().unwrap())
        })
        .collect();
    let at = |x: f64| r.iter().find(|p| p.0 == x).unwrap().1;
    let peak = r.iter().cloned().fold((0.0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a }).0;
    assert!((3.0..=7.5).contains(&peak), "peak at {peak} mm, trained at 6: {r:?}");
    assert!(at(6.0) > at(0.0) && at(0.0) > at(-6.0), "the response rises towards +6 mm: {r:?}");
}
