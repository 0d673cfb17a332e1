//! `regsh snapshot` on real images: layout sizes, windowed values at known world points, world-space
//! placement (a whole-voxel translation shifts the moving panel by that many pixels, neurological
//! orientation), checkerboard identity, the loss strip, atomic writes and the command line.

mod common;

use std::process::Command;

use image::{Rgb, RgbImage};
use regsh::image::io::load;
use regsh::image::{Grid, Image};
use regsh::snapshot::{
    losses_from_report, save_snapshot, snapshot, Column, Layout, SnapshotOptions, View, LEVEL_COLOURS,
};
use regsh::Error;

fn avg(name: &str) -> Image {
    load(common::data(&format!("avg152/{name}.nii"))).unwrap()
}

/// The 1st / 99th nearest-rank percentiles of the non-zero voxels, by a full sort.
fn window_by_sort(img: &Image) -> (f64, f64) {
    let mut v: Vec<f64> = img.to_vec_f64().unwrap().into_iter().filter(|x| *x != 0.0).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64 - 1.0;
    // Values are stored as f32 in the picture's sampling.
    (v[(0.01 * n).round() as usize] as f32 as f64, v[(0.99 * n).round() as usize] as f32 as f64)
}

fn windowed(v: f64, (lo, hi): (f64, f64)) -> u8 {
    (255.0 * ((v - lo) / (hi - lo)).clamp(0.0, 1.0)).round() as u8
}

/// The grey values of a panel rectangle, row-major.
fn panel(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> Vec<Vec<u8>> {
    (0..h).map(|r| (0..w).map(|c| img.get_pixel(x + c, y + r)[0]).collect()).collect()
}

fn panel_at(img: &RgbImage, layout: &Layout, row: usize, col: usize) -> Vec<Vec<u8>> {
    let r = layout.panels[row][col];
    panel(img, r.x, r.y, r.width, r.height)
}

fn is_level_colour(p: &Rgb<u8>) -> Option<usize> {
    LEVEL_COLOURS.iter().position(|c| *c == p.0)
}

#[test]
fn picture_size_follows_the_documented_layout() {
    let (t1, t2) = (avg("avg152T1"), avg("avg152T2"));
    let opts = SnapshotOptions::default();
    // avg152: 91 x 109 x 91 at 2 mm. Cells are max(91, 109) = 109 wide; rows are 109 (axial: y), 91, 91
    // (z); gap 2; loss strip 100.
    let img = snapshot(&t1, &t2, Some(&t1), &[], &opts).unwrap();
    assert_eq!(img.dimensions(), (4 * 109 + 5 * 2, 109 + 91 + 91 + 4 * 2));
    let img = snapshot(&t1, &t2, None, &[vec![1.0, 0.5]], &opts).unwrap();
    assert_eq!(img.dimensions(), (3 * 109 + 4 * 2, 109 + 91 + 91 + 4 * 2 + 100 + 2));
    let with_edges = SnapshotOptions { edges: true, ..Default::default() };
    let img = snapshot(&t1, &t2, Some(&t1), &[vec![1.0]], &with_edges).unwrap();
    assert_eq!(img.dimensions(), (5 * 109 + 6 * 2, 109 + 91 + 91 + 4 * 2 + 100 + 2));
    // ICBM 2009a: 197 x 233 x 189 at 1 mm; a 2 mm pixel gives 99 x 117 x 95 pixels.
    let icbm = load(common::data("icbm152_2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).unwrap();
    let img = snapshot(&icbm, &t1, None, &[], &opts).unwrap();
    assert_eq!(img.dimensions(), (3 * 233 + 4 * 2, 233 + 189 + 189 + 4 * 2));
    let coarse = SnapshotOptions { pixel_mm: Some(2.0), ..Default::default() };
    let img = snapshot(&icbm, &t1, None, &[], &coarse).unwrap();
    assert_eq!(img.dimensions(), (3 * 117 + 4 * 2, 117 + 95 + 95 + 4 * 2));
}

#[test]
fn panel_pixels_are_windowed_fixed_values_at_their_world_points() {
    let path = common::data("icbm152_2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz");
    let icbm = load(&path).unwrap();
    let t2 = avg("avg152T2");
    let img = snapshot(&icbm, &t2, None, &[], &SnapshotOptions::default()).unwrap();
    let win = window_by_sort(&icbm);
    // The default point is the grid centre, voxel (98, 116, 94). The axial fixed panel is the first cell
    // (233 wide, gap 2) holding a 197-pixel panel centred: x0 = 2 + (233 - 197) / 2 = 20, y0 = 2. Columns
    // run with world x, rows against world y: the centre voxel sits at column 98, row 232 - 116 = 116.
    let expect = windowed(icbm.value_at(0, [98, 116, 94]).unwrap(), win);
    assert_eq!(img.get_pixel(20 + 98, 2 + 116).0, [expect; 3]);
    // Elsewhere on the axial plane: voxel (60, 150, 94) is at column 60, row 232 - 150 = 82.
    let expect = windowed(icbm.value_at(0, [60, 150, 94]).unwrap(), win);
    assert_eq!(img.get_pixel(20 + 60, 2 + 82).0, [expect; 3]);
    // Sagittal row (third), first cell: 233-wide panel at x0 = 2, y0 = 2 + 233 + 2 + 189 + 2 = 428;
    // columns run with y, rows against z: voxel (98, 40, 150) at column 40, row 188 - 150 = 38.
    let expect = windowed(icbm.value_at(0, [98, 40, 150]).unwrap(), win);
    assert_eq!(img.get_pixel(2 + 40, 428 + 38).0, [expect; 3]);
}

#[test]
fn checkerboard_of_fixed_with_itself_is_the_fixed_panel() {
    let (t1, t2) = (avg("avg152T1"), avg("avg152T2"));
    let opts = SnapshotOptions { edges: true, ..Default::default() };
    let img = snapshot(&t1, &t2, Some(&t1), &[], &opts).unwrap();
    let layout = Layout::new(
        t1.grid(),
        vec![Column::Fixed, Column::Moving, Column::Warped, Column::Checkerboard, Column::Edges],
        false,
        &opts,
    )
    .unwrap();
    for row in 0..3 {
        let fixed = panel_at(&img, &layout, row, 0);
        assert_eq!(panel_at(&img, &layout, row, 2), fixed, "warped panel, row {row}");
        assert_eq!(panel_at(&img, &layout, row, 3), fixed, "checkerboard panel, row {row}");
        assert_ne!(panel_at(&img, &layout, row, 1), fixed, "the T2 panel differs, row {row}");
    }
    // With T2 as warped, the checkerboard's top-left square (8 pixels at 2 mm) is fixed and the next
    // one along is T2.
    let img = snapshot(&t1, &t1, Some(&t2), &[], &opts).unwrap();
    let (f, m, c) = (panel_at(&img, &layout, 0, 0), panel_at(&img, &layout, 0, 2), panel_at(&img, &layout, 0, 3));
    for r in 40..48 {
        for x in 40..48 {
            assert_eq!(c[r][x], f[r][x]);
            assert_eq!(c[r][x + 8], m[r][x + 8]);
            assert_eq!(c[r + 8][x], m[r + 8][x]);
        }
    }
}

#[test]
fn a_whole_voxel_translation_shifts_the_moving_panel() {
    let t1 = avg("avg152T1");
    let g = t1.grid();
    // Moving: the same voxels 6 mm to the Right, 4 mm Posterior, 8 mm Superior (3, 2, 4 voxels).
    let d = [6.0, -4.0, 8.0];
    let o = g.origin();
    let shifted = Grid::new(g.shape(), g.spacing(), [o[0] + d[0], o[1] + d[1], o[2] + d[2]], g.direction()).unwrap();
    let moving = Image::new(t1.data().clone(), shifted, t1.dtype()).unwrap();
    let p = g.centre();
    let at = SnapshotOptions { point: Some(p), ..Default::default() };
    let before = SnapshotOptions { point: Some([p[0] - d[0], p[1] - d[1], p[2] - d[2]]), ..Default::default() };
    let a = snapshot(&t1, &moving, None, &[], &at).unwrap();
    let b = snapshot(&t1, &t1, None, &[], &before).unwrap();
    let layout = Layout::new(g, vec![Column::Fixed, Column::Moving, Column::Checkerboard], false, &at).unwrap();
    // (column shift, row shift) in pixels per view: columns follow +x (axial, coronal) or +y (sagittal),
    // rows follow -y (axial) or -z.
    let shifts: [(i64, i64); 3] = [(3, 2), (3, -4), (-2, -4)];
    for (row, (dc, dr)) in shifts.iter().enumerate() {
        let mv = panel_at(&a, &layout, row, 1);
        let fx = panel_at(&b, &layout, row, 0);
        let (h, w) = (mv.len() as i64, mv[0].len() as i64);
        let mut compared = 0;
        for r in 0..h {
            for c in 0..w {
                let (r0, c0) = (r - dr, c - dc);
                if (0..h).contains(&r0) && (0..w).contains(&c0) {
                    assert_eq!(mv[r as usize][c as usize], fx[r0 as usize][c0 as usize], "view {row} at ({c}, {r})");
                    compared += 1;
                }
            }
        }
        assert!(compared > (h * w) as usize / 2);
        // Pixels shifted in from outside the moving image are zero.
        let edge_r = if *dr > 0 { 0 } else { h - 1 };
        assert!(mv[edge_r as usize].iter().all(|&v| v == 0), "view {row}");
    }
}

#[test]
fn neurological_orientation_left_on_the_left_anterior_up_and_right() {
    let t1 = avg("avg152T1");
    let g = t1.grid().clone();
    // A bright 3-voxel cube centred on the world point (-50, 30, 40): subject's left, anterior, superior.
    let c = g.world_to_index([-50.0, 30.0, 40.0]).map(|v| v.round() as usize);
    let [nx, ny, _] = g.shape();
    let mut v = vec![0f32; g.num_voxels()];
    for k in c[2] - 1..=c[2] + 1 {
        for j in c[1] - 1..=c[1] + 1 {
            for i in c[0] - 1..=c[0] + 1 {
                v[(k * ny + j) * nx + i] = 100.0;
            }
        }
    }
    let blob = Image::from_vec(v, 1, g.clone()).unwrap();
    let opts = SnapshotOptions { point: Some([-50.0, 30.0, 40.0]), ..Default::default() };
    let img = snapshot(&t1, &blob, None, &[], &opts).unwrap();
    let layout = Layout::new(&g, vec![Column::Fixed, Column::Moving, Column::Checkerboard], false, &opts).unwrap();
    // x runs -90 .. 90, y -126 .. 90, z -72 .. 108 (voxel centres), 2 mm per pixel.
    // Axial: column (x + 90) / 2 = 20 (left half of 91), row (90 - y) / 2 = 30 (upper half of 109).
    // Coronal: column 20, row (108 - z) / 2 = 34. Sagittal: column (y + 126) / 2 = 78 (right half), row 34.
    let expected = [(20u32, 30u32), (20, 34), (78, 34)];
    for (row, (ec, er)) in expected.iter().enumerate() {
        let r = layout.panels[row][1];
        let bright: Vec<(u32, u32)> = (0..r.height)
            .flat_map(|y| (0..r.width).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(r.x + x, r.y + y)[0] == 255)
            .collect();
        assert_eq!(bright.len(), 9, "view {row}: a 3 x 3 square");
        let mean = |f: fn(&(u32, u32)) -> u32| bright.iter().map(f).sum::<u32>() / 9;
        assert_eq!((mean(|p| p.0), mean(|p| p.1)), (*ec, *er), "view {row}");
        let view = View::ALL[row];
        assert_eq!(layout.pixel_of(view, [-50.0, 30.0, 40.0]), Some((*ec, *er)));
        assert_eq!(layout.world_of(view, *ec, *er), [-50.0, 30.0, 40.0]);
    }
}

#[test]
fn the_loss_strip_has_level_colours_exactly_when_losses_are_given() {
    let (t1, t2) = (avg("avg152T1"), avg("avg152T2"));
    let opts = SnapshotOptions::default();
    let plain = snapshot(&t1, &t2, Some(&t1), &[], &opts).unwrap();
    assert!(plain.pixels().all(|p| is_level_colour(p).is_none()));
    // Three levels, strictly decreasing, on very different scales (as coarse and fine levels are).
    let losses = vec![
        (0..40).map(|i| -0.5 - 0.01 * i as f64).collect::<Vec<_>>(),
        (0..20).map(|i| 100.0 - i as f64).collect(),
        (0..10).map(|i| 1e-3 / (1.0 + i as f64)).collect(),
    ];
    let img = snapshot(&t1, &t2, Some(&t1), &losses, &opts).unwrap();
    let layout =
        Layout::new(t1.grid(), vec![Column::Fixed, Column::Moving, Column::Warped, Column::Checkerboard], true, &opts)
            .unwrap();
    let strip = layout.loss_strip.unwrap();
    assert_eq!((strip.y, strip.height), (109 + 91 + 91 + 4 * 2, 100));
    // The panels are unchanged by the strip.
    assert_eq!(panel(&img, 0, 0, plain.width(), plain.height()), panel(&plain, 0, 0, plain.width(), plain.height()));
    let mut xs = vec![Vec::new(); LEVEL_COLOURS.len()];
    for (x, y, p) in img.enumerate_pixels() {
        if let Some(l) = is_level_colour(p) {
            assert!(y >= strip.y && y < strip.y + strip.height, "level colour outside the strip at ({x}, {y})");
            xs[l].push((x, y));
        }
    }
    for (l, pts) in xs.iter().enumerate() {
        assert_eq!(!pts.is_empty(), l < 3, "level {l}");
    }
    // Each level is scaled to its own range: its first (largest) loss at the top, its last at the bottom
    // (2 pixels of margin), left to right in level order, widths proportional to the iterations.
    for (l, pts) in xs.iter().enumerate().take(3) {
        let top = pts.iter().map(|p| p.1).min().unwrap();
        let bottom = pts.iter().map(|p| p.1).max().unwrap();
        assert_eq!((top, bottom), (strip.y + 2, strip.y + strip.height - 3), "level {l}");
    }
    let span = |l: usize| (xs[l].iter().map(|p| p.0).min().unwrap(), xs[l].iter().map(|p| p.0).max().unwrap());
    assert!(span(0).1 < span(1).0 && span(1).1 < span(2).0);
    let (w0, w2) = (span(0).1 - span(0).0 + 1, span(2).1 - span(2).0 + 1);
    assert!((w0 as f64 / w2 as f64 - 4.0).abs() < 0.2, "widths {w0} and {w2}");
}

#[test]
fn writes_are_atomic_png_and_never_replace_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("t1.nii");
    std::fs::copy(common::data("avg152/avg152T1.nii"), &copy).unwrap();
    let t1 = load(&copy).unwrap();
    let opts = SnapshotOptions::default();
    let err = save_snapshot(&t1, &t1, None, &[], &opts, &copy).unwrap_err();
    assert!(matches!(err, Error::OverwriteInput { .. }), "{err}");
    let err = save_snapshot(&t1, &t1, None, &[], &opts, dir.path().join("out.jpg")).unwrap_err();
    assert!(err.to_string().contains(".png"), "{err}");
    let out = dir.path().join("out.png");
    let img = save_snapshot(&t1, &t1, None, &[], &opts, &out).unwrap();
    assert_eq!(image::open(&out).unwrap().to_rgb8(), img);
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names.len(), 2, "no temporary file left behind: {names:?}");
    assert!(snapshot(&t1, &t1, None, &[], &SnapshotOptions { pixel_mm: Some(0.0), ..Default::default() }).is_err());
    assert!(snapshot(
        &t1,
        &t1,
        None,
        &[],
        &SnapshotOptions { point: Some([f64::NAN, 0.0, 0.0]), ..Default::default() }
    )
    .is_err());
}

#[test]
fn report_losses_are_read_per_stage_and_level() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r_report.json");
    std::fs::write(
        &p,
        r#"{"stages": [{"levels": [{"losses": [3, 2, 1]}, {"losses": [0.5, null]}]}, {"levels": [{"losses": [-1]}]}]}"#,
    )
    .unwrap();
    let l = losses_from_report(&p).unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(l[0], vec![3.0, 2.0, 1.0]);
    assert!(l[1][0] == 0.5 && l[1][1].is_nan());
    assert_eq!(l[2], vec![-1.0]);
    std::fs::write(&p, r#"{"stages": []}"#).unwrap();
    assert!(losses_from_report(&p).unwrap_err().to_string().contains("levels"));
    assert!(matches!(losses_from_report(dir.path().join("none.json")), Err(Error::NotFound { .. })));
}

fn regsh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_regsh")).args(args).output().expect("run regsh")
}

#[test]
fn cli_snapshot_of_a_registration_with_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let (f, m) = (common::data("avg152/avg152T1.nii"), common::data("avg152/avg152T2.nii"));
    let (f, m) = (f.to_str().unwrap(), m.to_str().unwrap());
    let prefix = dir.path().join("r");
    let out = regsh(&[
        "register",
        "--fixed",
        f,
        "--moving",
        m,
        "--metric",
        "mi",
        "--scales",
        "2",
        "--iterations",
        "6,4",
        "--out",
        prefix.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (warped, report) = (dir.path().join("r_warped.nii.gz"), dir.path().join("r_report.json"));
    let png = dir.path().join("snap.png");
    let args = [
        "snapshot",
        "--fixed",
        f,
        "--moving",
        m,
        "--warped",
        warped.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--point",
        "-10,-20,6",
        "-o",
        png.to_str().unwrap(),
    ];
    let out = regsh(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (4 * 109 + 5 * 2, 109 + 91 + 91 + 4 * 2 + 100 + 2));
    // Rigid then affine, two levels each: four level colours.
    let used: std::collections::BTreeSet<usize> = img.pixels().filter_map(is_level_colour).collect();
    assert_eq!(used.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    // The same picture as the library draws from the same inputs.
    let losses = losses_from_report(&report).unwrap();
    assert_eq!(losses.len(), 4);
    let opts = SnapshotOptions { point: Some([-10.0, -20.0, 6.0]), ..Default::default() };
    let lib = snapshot(&load(f).unwrap(), &load(m).unwrap(), Some(&load(&warped).unwrap()), &losses, &opts).unwrap();
    assert!(lib == img, "the CLI picture differs from the library's");
    // Bad input is a clean error.
    let out = regsh(&["snapshot", "--fixed", f, "--moving", m, "--point", "1,2", "-o", png.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("X,Y,Z"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = regsh(&["snapshot", "--fixed", f, "--moving", m, "--report", f, "-o", png.to_str().unwrap()]);
    assert!(!out.status.success());
}
