//! Tests on the real images fetched by `scripts/fetch-data.sh` (see README). Expected shapes, affines,
//! world positions and voxel values were read with nibabel 5.4 (`img.shape`, `img.affine`,
//! `img.get_fdata()`), independently of regsh.

mod common;

use common::{correlation, data};
use regsh::image::io::{load, load_with_meta, save, GeometrySource};
use regsh::image::resample::{resample, Interpolation, Padding};
use regsh::image::smooth::pyramid;
use regsh::image::DataType;

struct Expect {
    file: &'static str,
    shape: [usize; 3],
    dtype: DataType,
    affine: [[f64; 4]; 3],
    orientation: &'static str,
    /// (voxel, nibabel get_fdata value)
    values: [([usize; 3], f64); 2],
    /// world mm of the last corner voxel (shape - 1)
    last_world: [f64; 3],
}

const LAS2: [[f64; 4]; 3] = [[-2.0, 0.0, 0.0, 90.0], [0.0, 2.0, 0.0, -126.0], [0.0, 0.0, 2.0, -72.0]];
const ICBM: [[f64; 4]; 3] = [[1.0, 0.0, 0.0, -98.0], [0.0, 1.0, 0.0, -134.0], [0.0, 0.0, 1.0, -72.0]];
const COLIN: [[f64; 4]; 3] = [[1.0, 0.0, 0.0, -90.0], [0.0, 1.0, 0.0, -125.0], [0.0, 0.0, 1.0, -71.0]];
const CT: [[f64; 4]; 3] =
    [[1.0, 0.0, 0.0, -100.802734375], [0.0, 1.0, 0.0, 81.697265625], [0.0, 0.0, 1.0, 1126.800048828125]];

fn table() -> Vec<Expect> {
    let avg = |file, v1, v2| Expect {
        file,
        shape: [91, 109, 91],
        dtype: DataType::Uint8,
        affine: LAS2,
        orientation: "LAS",
        values: [([10, 20, 30], v1), ([45, 54, 45], v2)],
        last_world: [-90.0, 90.0, 108.0],
    };
    let icbm = |file, v2| Expect {
        file,
        shape: [197, 233, 189],
        dtype: DataType::Uint8,
        affine: ICBM,
        orientation: "RAS",
        values: [([10, 20, 30], 0.0), ([98, 116, 94], v2)],
        last_world: [98.0, 98.0, 116.0],
    };
    let colin = |file, v2| Expect {
        file,
        shape: [181, 217, 181],
        dtype: DataType::Uint8,
        affine: COLIN,
        orientation: "RAS",
        values: [([10, 20, 30], 0.0), ([90, 108, 90], v2)],
        last_world: [90.0, 91.0, 109.0],
    };
    vec![
        avg("avg152/avg152T1.nii", 0.062745101749897, 0.4745098319835961),
        avg("avg152/avg152T2.nii", 0.02745098201557994, 0.6235294486396015),
        avg("avg152/avg152PD.nii", 0.0313725508749485, 0.7333333767019212),
        avg("avg152/grey.nii", 0.0, 0.3803921793587506),
        avg("avg152/white.nii", 0.0, 0.30196080217137933),
        avg("avg152/csf.nii", 0.0, 0.3176470776088536),
        avg("avg152/brainmask.nii", 0.0, 1.0000000591389835),
        icbm("icbm152_2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", 198.0),
        icbm("icbm152_2009a/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", 126.0),
        icbm("icbm152_2009a/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz", 124.0),
        colin("colin27/ch2.nii.gz", 33.0),
        colin("colin27/ch2bet.nii.gz", 33.0),
        colin("colin27/aal.nii.gz", 0.0),
        colin("colin27/brodmann.nii.gz", 0.0),
        Expect {
            file: "ct_brain/ct_brain_atlas_1mm.nii.gz",
            shape: [202, 202, 179],
            dtype: DataType::Int16,
            affine: CT,
            orientation: "RAS",
            values: [([10, 20, 30], 0.0), ([101, 101, 89], 38.0)],
            last_world: [100.197265625, 282.697265625, 1304.800048828125],
        },
    ]
}

#[test]
fn every_fetched_image_has_nibabels_shape_affine_and_values() {
    for e in table() {
        let (img, meta) = load_with_meta(data(e.file)).unwrap_or_else(|err| panic!("{}: {err}", e.file));
        let g = img.grid();
        assert_eq!(g.shape(), e.shape, "{}", e.file);
        assert_eq!(meta.disk_dtype, e.dtype, "{}", e.file);
        assert_eq!(meta.geometry, GeometrySource::Sform, "{}", e.file);
        assert_eq!(g.orientation(), e.orientation, "{}", e.file);
        let a = g.voxel_to_world();
        for r in 0..3 {
            for c in 0..4 {
                assert_eq!(a[(r, c)], e.affine[r][c], "{} affine[{r}][{c}]", e.file);
            }
        }
        let last = g.index_to_world(e.shape.map(|n| (n - 1) as f64));
        assert_eq!(last, e.last_world, "{} last voxel", e.file);
        for (ijk, want) in e.values {
            let got = img.value_at(0, ijk).unwrap();
            // Scaled uint8 data is held as f32: compare at f32 precision; unscaled data is exact.
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1e-6),
                "{} at {ijk:?}: {got} vs nibabel {want}",
                e.file
            );
        }
    }
}

#[test]
fn world_positions_of_chosen_voxels_follow_the_sform() {
    // nibabel: img.affine @ [10, 20, 30, 1]
    let cases = [
        ("avg152/avg152T1.nii", [70.0, -86.0, -12.0]),
        ("icbm152_2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", [-88.0, -114.0, -42.0]),
        ("colin27/ch2.nii.gz", [-80.0, -105.0, -41.0]),
        ("ct_brain/ct_brain_atlas_1mm.nii.gz", [-90.802734375, 101.697265625, 1156.800048828125]),
    ];
    for (file, want) in cases {
        let g = load(data(file)).unwrap().grid().clone();
        assert_eq!(g.index_to_world([10.0, 20.0, 30.0]), want, "{file}");
        let back = g.world_to_index(want);
        assert!(back.iter().zip([10.0, 20.0, 30.0]).all(|(a, b)| (a - b).abs() < 1e-9), "{file}: {back:?}");
    }
}

#[test]
fn colin_qform_with_code_zero_is_ignored() {
    // ch2.nii.gz stores a 180-degree quaternion with qform_code 0: the sform (RAS) must win.
    let (img, meta) = load_with_meta(data("colin27/ch2.nii.gz")).unwrap();
    assert_eq!((meta.sform_code, meta.qform_code), (4, 0));
    assert_eq!(img.grid().orientation(), "RAS");
}

#[test]
fn real_images_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for (file, out) in [
        ("avg152/avg152T1.nii", "t1.nii"),
        ("colin27/aal.nii.gz", "aal.nii.gz"),
        ("ct_brain/ct_brain_atlas_1mm.nii.gz", "ct.hdr"),
    ] {
        let img = load(data(file)).unwrap();
        let path = dir.path().join(out);
        save(&img, &path).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.grid(), img.grid(), "{file}");
        assert_eq!(back.to_vec_f64().unwrap(), img.to_vec_f64().unwrap(), "{file}");
    }
    // Labels stay integers, every one of AAL's 116.
    let aal = load(data("colin27/aal.nii.gz")).unwrap();
    let (_, labels) = regsh::image::ops::one_hot(&aal, None).unwrap();
    assert_eq!(labels, (0..=116).collect::<Vec<i64>>());
}

#[test]
fn resampling_avg152_to_icbm_and_back_keeps_the_image() {
    let t1 = load(data("avg152/avg152T1.nii")).unwrap();
    let icbm = load(data("icbm152_2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).unwrap();
    let mask = load(data("avg152/brainmask.nii")).unwrap();
    let there = resample(&t1, icbm.grid(), Interpolation::Linear, Padding::Zero).unwrap();
    assert_eq!(there.grid().shape(), [197, 233, 189]);
    // World point (0, -18, 18) is avg152 voxel (45, 54, 45) and ICBM voxel (98, 116, 90): same value.
    let a = t1.value_at(0, [45, 54, 45]).unwrap();
    let b = there.value_at(0, [98, 116, 90]).unwrap();
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    let back = resample(&there, t1.grid(), Interpolation::Linear, Padding::Zero).unwrap();
    let (orig, round, m) = (t1.to_vec_f64().unwrap(), back.to_vec_f64().unwrap(), mask.to_vec_f64().unwrap());
    let inside: Vec<usize> = (0..m.len()).filter(|&i| m[i] > 0.5).collect();
    assert!(inside.len() > 100_000, "brain mask has {} voxels", inside.len());
    let x: Vec<f64> = inside.iter().map(|&i| orig[i]).collect();
    let y: Vec<f64> = inside.iter().map(|&i| round[i]).collect();
    let r = correlation(&x, &y);
    assert!(r > 0.99, "correlation inside the brain {r}");
}

#[test]
fn nearest_resampling_of_labels_keeps_label_values() {
    let aal = load(data("colin27/aal.nii.gz")).unwrap();
    let t1 = load(data("avg152/avg152T1.nii")).unwrap();
    let out = resample(&aal, t1.grid(), Interpolation::Nearest, Padding::Zero).unwrap();
    assert_eq!(out.dtype(), DataType::Uint8);
    let v = out.to_vec_f64().unwrap();
    assert!(v.iter().all(|x| x.fract() == 0.0 && (0.0..=116.0).contains(x)));
    let (_, labels) = regsh::image::ops::one_hot(&out, None).unwrap();
    assert!(labels.len() > 100, "only {} labels survive 2 mm resampling", labels.len());
}

#[test]
fn pyramid_of_icbm_keeps_world_extent() {
    let img = load(data("icbm152_2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).unwrap();
    let levels = pyramid(&img, &[16.0, 8.0, 4.0, 2.0, 1.0], None).unwrap();
    let shapes: Vec<[usize; 3]> = levels.iter().map(|l| l.image.grid().shape()).collect();
    assert_eq!(shapes, vec![[12, 15, 12], [25, 29, 24], [49, 58, 47], [99, 117, 95], [197, 233, 189]]);
    let corners = img.grid().corners();
    for l in &levels {
        for (a, b) in l.image.grid().corners().iter().zip(corners) {
            assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9), "factor {}: {a:?} vs {b:?}", l.factor);
        }
        // The mean intensity is nearly kept (smoothing and resampling conserve it away from the border).
        let (m0, m1) = (img.stats().unwrap().mean, l.image.stats().unwrap().mean);
        assert!((m0 - m1).abs() / m0 < 0.05, "factor {}: mean {m1} vs {m0}", l.factor);
    }
}
