//! NIfTI reading and writing: exact round trips for every datatype and file kind, header geometry rules
//! (sform, qform, pixdim), and one test per kind of bad input.

mod common;

use candle_core::{Device, Tensor};
use common::{f32_bytes, RawHeader};
use nalgebra::{Matrix3, Matrix4, Rotation3, Vector3};
use regsh::image::io::{self, load, load_with_meta, save, save_with, GeometrySource, SaveOptions};
use regsh::image::{DataType, Grid, Image};
use regsh::Error;

/// An oblique, anisotropic, left-handed grid: x flipped, rotated 10 deg about z then 20 deg about x,
/// spacing 2 x 2 x 3 mm.
fn oblique_grid(shape: [usize; 3]) -> Grid {
    let r = Rotation3::from_axis_angle(&Vector3::x_axis(), 20f64.to_radians())
        * Rotation3::from_axis_angle(&Vector3::z_axis(), 10f64.to_radians());
    let d: Matrix3<f64> = r.matrix() * Matrix3::from_diagonal(&Vector3::new(-1.0, 1.0, 1.0));
    Grid::new(shape, [2.0, 2.0, 3.0], [5.25, -6.5, 7.125], d).unwrap()
}

/// Values that exercise a datatype's whole range.
fn values_for(dtype: DataType, n: usize) -> Vec<f64> {
    let pool: Vec<f64> = match dtype {
        DataType::Float32 => vec![0.0, -1.5, 3.25e-7, 1.0e30, -7.0e-30, 0.1f32 as f64, 12345.678f32 as f64],
        DataType::Float64 => vec![0.1, std::f64::consts::PI, 1e-300, -1e300, 2.0f64.powi(60) + 1.0e3, -0.0, 7.0],
        d => {
            let (lo, hi) = d.integer_range().unwrap();
            vec![lo, hi, 0.0, 1.0, (lo + hi).div_euclid(2.0), hi - 1.0, lo + 1.0]
        }
    };
    (0..n).map(|i| pool[(i * 7 + i / 3) % pool.len()]).collect()
}

fn image_with(values: Vec<f64>, channels: usize, grid: Grid, dtype: DataType) -> Image {
    let [z, y, x] = grid.zyx();
    let t = Tensor::from_vec(values, (channels, z, y, x), &Device::Cpu).unwrap();
    Image::new(t, grid, dtype).unwrap()
}

#[test]
fn round_trip_is_exact_for_every_datatype_and_file_kind() {
    let dir = tempfile::tempdir().unwrap();
    let grid = oblique_grid([5, 4, 3]);
    for (name, dtype) in regsh::image::dtype::DATA_TYPES {
        let values = values_for(dtype, grid.num_voxels());
        let img = image_with(values.clone(), 1, grid.clone(), dtype);
        for ext in ["nii", "nii.gz", "hdr", "hdr.gz"] {
            let path = dir.path().join(format!("rt_{name}.{ext}"));
            save(&img, &path).unwrap();
            let (back, meta) = load_with_meta(&path).unwrap();
            assert_eq!(meta.disk_dtype, dtype, "{name}.{ext}");
            assert_eq!(back.dtype(), dtype, "{name}.{ext}");
            let got = back.to_vec_f64().unwrap();
            for (i, (a, b)) in values.iter().zip(&got).enumerate() {
                let want = if dtype == DataType::Float32 { *a as f32 as f64 } else { *a };
                assert_eq!(want.to_bits(), b.to_bits(), "{name}.{ext} voxel {i}: wrote {want}, read {b}");
            }
            // Geometry: the header stores f32; the loaded affine is the f32 rounding of ours, exactly.
            let (a, b) = (img.grid().voxel_to_world(), back.grid().voxel_to_world());
            for (x, y) in a.iter().zip(b.iter()) {
                assert_eq!((*x as f32) as f64, *y, "{name}.{ext} affine");
            }
            assert_eq!(meta.geometry, GeometrySource::Sform);
            // A second round trip changes nothing at all.
            let path2 = dir.path().join(format!("rt2_{name}.{ext}"));
            save(&back, &path2).unwrap();
            let again = load(&path2).unwrap();
            assert_eq!(again.grid(), back.grid(), "{name}.{ext} second round trip");
        }
    }
}

#[test]
fn saved_qform_agrees_with_sform() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_with(vec![1.0; 60], 1, oblique_grid([5, 4, 3]), DataType::Float32);
    let path = dir.path().join("q.nii");
    save(&img, &path).unwrap();
    let h = nifti::NiftiHeader::from_file(&path).unwrap();
    assert_eq!((h.sform_code, h.qform_code), (2, 1));
    let zooms = [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64];
    let q = io::qform_matrix(
        [h.quatern_b, h.quatern_c, h.quatern_d],
        h.pixdim[0],
        zooms,
        [h.quatern_x, h.quatern_y, h.quatern_z],
    );
    let d = q - img.grid().voxel_to_world();
    assert!(d.iter().all(|v| v.abs() < 1e-5), "qform differs from sform by {d}");
}

#[test]
fn channels_round_trip_as_fourth_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let grid = oblique_grid([3, 2, 2]);
    let values: Vec<f64> = (0..3 * 12).map(|v| v as f64 * 0.5).collect();
    let img = image_with(values.clone(), 3, grid, DataType::Float32);
    let path = dir.path().join("c.nii.gz");
    save(&img, &path).unwrap();
    let (back, meta) = load_with_meta(&path).unwrap();
    assert_eq!(meta.dims, vec![3, 2, 2, 3]);
    assert_eq!(back.channels(), 3);
    assert_eq!(back.to_vec_f64().unwrap(), values);
    // Channel 1, voxel (2, 1, 0) is flat index 1 * 12 + (0 * 2 + 1) * 3 + 2 = 17.
    assert_eq!(back.value_at(1, [2, 1, 0]).unwrap(), 17.0 * 0.5);
}

#[test]
fn voxel_order_is_x_fastest_as_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let h = RawHeader::new([3, 2, 2], 16, 32);
    let path = dir.path().join("order.nii");
    let v: Vec<f32> = (0..12).map(|x| x as f32).collect();
    h.write_nii(&path, &f32_bytes(&v));
    let img = load(&path).unwrap();
    assert_eq!(img.data().dims(), &[1, 2, 2, 3]);
    // On disk voxel (i, j, k) is at i + 3 j + 6 k.
    assert_eq!(img.value_at(0, [2, 0, 0]).unwrap(), 2.0);
    assert_eq!(img.value_at(0, [0, 1, 0]).unwrap(), 3.0);
    assert_eq!(img.value_at(0, [1, 1, 1]).unwrap(), 10.0);
}

#[test]
fn scl_slope_and_inter_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = RawHeader::new([2, 2, 1], 4, 16); // int16
    h.scl_slope = 0.5;
    h.scl_inter = -3.0;
    let raw: Vec<u8> = [-4i16, 0, 7, 100].iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = dir.path().join("s.nii");
    h.write_nii(&path, &raw);
    let img = load(&path).unwrap();
    assert_eq!(img.to_vec_f64().unwrap(), vec![-5.0, -3.0, 0.5, 47.0]);
    assert_eq!(img.dtype(), DataType::Float32, "scaled values save as float32 by default");
}

fn header_affine(h: &RawHeader) -> (Matrix4<f64>, GeometrySource) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.nii");
    let n: usize = h.dim[1..4].iter().map(|&d| d as usize).product();
    h.write_nii(&path, &f32_bytes(&vec![0.0; n]));
    let (img, meta) = load_with_meta(&path).unwrap();
    (img.grid().voxel_to_world(), meta.geometry)
}

fn assert_affine(a: &Matrix4<f64>, rows: [[f64; 4]; 3], tol: f64) {
    for r in 0..3 {
        for c in 0..4 {
            assert!(
                (a[(r, c)] - rows[r][c]).abs() <= tol,
                "affine[{r}][{c}] = {} expected {}\n{a}",
                a[(r, c)],
                rows[r][c]
            );
        }
    }
}

// Expected affines below were computed with nibabel 5 (Nifti1Header.get_best_affine), not with regsh.

#[test]
fn qform_only_header_oblique_with_negative_qfac() {
    let mut h = RawHeader::new([10, 12, 14], 16, 32);
    h.sform_code = 0;
    h.qform_code = 1;
    h.quatern = [0.1, 0.2, 0.3];
    h.pixdim[0] = -1.0;
    h.pixdim[1..4].copy_from_slice(&[2.0, 2.0, 3.0]);
    h.qoffset = [-10.0, 20.0, 30.0];
    let (a, src) = header_affine(&h);
    assert_eq!(src, GeometrySource::Qform);
    assert_affine(&a, QFORM_A, 1e-12);
}

#[test]
fn qform_identity_quaternion() {
    let mut h = RawHeader::new([8, 9, 10], 16, 32);
    h.sform_code = 0;
    h.qform_code = 1;
    h.pixdim[1..4].copy_from_slice(&[2.0, 2.0, 3.0]);
    h.qoffset = [1.0, 2.0, 3.0];
    let (a, _) = header_affine(&h);
    assert_affine(&a, [[2.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, 2.0], [0.0, 0.0, 3.0, 3.0]], 0.0);
}

#[test]
fn no_codes_fall_back_to_centred_pixdim_affine() {
    let mut h = RawHeader::new([10, 12, 14], 16, 32);
    h.sform_code = 0;
    h.qform_code = 0;
    h.pixdim[1..4].copy_from_slice(&[2.0, 2.0, 3.0]);
    let (a, src) = header_affine(&h);
    assert_eq!(src, GeometrySource::Pixdim);
    assert_affine(&a, [[-2.0, 0.0, 0.0, 9.0], [0.0, 2.0, 0.0, -11.0], [0.0, 0.0, 3.0, -19.5]], 0.0);
}

#[test]
fn sform_wins_over_qform_lsa() {
    let mut h = RawHeader::new([10, 12, 14], 16, 32);
    h.sform_code = 2;
    h.srow = [[0.0, 0.0, -2.0, 50.0], [-2.0, 0.0, 0.0, 60.0], [0.0, 3.0, 0.0, -70.0]];
    h.qform_code = 1;
    h.quatern = [0.1, 0.2, 0.3];
    h.pixdim[0] = -1.0;
    let (a, src) = header_affine(&h);
    assert_eq!(src, GeometrySource::Sform);
    assert_affine(&a, [[0.0, 0.0, -2.0, 50.0], [-2.0, 0.0, 0.0, 60.0], [0.0, 3.0, 0.0, -70.0]], 0.0);
}

#[test]
fn lsa_orientation_and_world_positions() {
    let mut h = RawHeader::new([10, 12, 14], 16, 32);
    h.srow = [[-2.0, 0.0, 0.0, 90.0], [0.0, 0.0, 3.0, -100.0], [0.0, 2.0, 0.0, -80.0]];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lsa.nii");
    h.write_nii(&path, &f32_bytes(&vec![0.0; 10 * 12 * 14]));
    let img = load(&path).unwrap();
    assert_eq!(img.grid().orientation(), "LSA");
    assert_eq!(img.grid().spacing(), [2.0, 2.0, 3.0]);
    assert_eq!(img.grid().index_to_world([3.0, 4.0, 5.0]), [84.0, -85.0, -72.0]);
}

// ---- bad input: one test per case, each a clear error and never a panic ----

fn err_of(path: &std::path::Path) -> Error {
    match load(path) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_file_is_not_found() {
    let e = err_of(std::path::Path::new("/nonexistent/dir/x.nii.gz"));
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
}

#[test]
fn directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("a.nii");
    std::fs::create_dir(&d).unwrap();
    assert!(matches!(err_of(&d), Error::IsDirectory { .. }));
    assert!(matches!(err_of(dir.path()), Error::IsDirectory { .. }));
}

#[test]
fn truncated_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.nii");
    std::fs::write(&p, &RawHeader::new([2, 2, 2], 16, 32).bytes()[..200]).unwrap();
    let e = err_of(&p);
    assert!(matches!(e, Error::MalformedNifti { .. }) && e.to_string().contains("truncated header"), "{e}");
}

#[test]
fn truncated_data_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.nii");
    RawHeader::new([4, 4, 4], 16, 32).write_nii(&p, &f32_bytes(&[1.0; 10]));
    let e = err_of(&p);
    assert!(e.to_string().contains("truncated data"), "{e}");
}

#[test]
fn truncated_gzip_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("f.nii.gz");
    save(&Image::full(1.5, 1, Grid::axis_aligned([20, 20, 20], [1.0; 3], [0.0; 3]).unwrap()).unwrap(), &full).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.nii.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(&cut);
    assert!(matches!(e, Error::MalformedNifti { .. }), "{e}");
}

#[test]
fn wrong_magic_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.nii");
    let mut h = RawHeader::new([2, 2, 2], 16, 32);
    h.magic = *b"abc\0";
    h.write_nii(&p, &f32_bytes(&[0.0; 8]));
    let e = err_of(&p);
    assert!(e.to_string().contains("wrong magic"), "{e}");
}

#[test]
fn nifti2_is_not_supported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n2.nii");
    let mut b = vec![0u8; 560];
    b[..4].copy_from_slice(&540i32.to_le_bytes());
    b[4..8].copy_from_slice(b"n+2\0");
    std::fs::write(&p, b).unwrap();
    let e = err_of(&p);
    assert!(matches!(e, Error::Nifti2Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("NIfTI-2"));
}

#[test]
fn zero_dimension_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.nii");
    RawHeader::new([4, 0, 4], 16, 32).write_nii(&p, &[]);
    assert!(matches!(err_of(&p), Error::InvalidDimensions { .. }));
}

#[test]
fn negative_dimension_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n.nii");
    RawHeader::new([4, -3, 4], 16, 32).write_nii(&p, &[]);
    let e = err_of(&p);
    assert!(matches!(e, Error::InvalidDimensions { .. }) && e.to_string().contains("-3"), "{e}");
    let mut h = RawHeader::new([4, 4, 4], 16, 32);
    h.dim[0] = 9;
    h.write_nii(&p, &[]);
    assert!(matches!(err_of(&p), Error::InvalidDimensions { .. }));
}

#[test]
fn unsupported_datatype_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.nii");
    RawHeader::new([2, 2, 2], 32, 64).write_nii(&p, &[0u8; 64]); // complex64
    let e = err_of(&p);
    assert!(matches!(e, Error::UnsupportedDatatype { code: 32, .. }) && e.to_string().contains("complex64"), "{e}");
}

#[test]
fn non_positive_pixdim_with_qform_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.nii");
    let mut h = RawHeader::new([2, 2, 2], 16, 32);
    h.sform_code = 0;
    h.qform_code = 1;
    h.pixdim[2] = -1.0;
    h.write_nii(&p, &f32_bytes(&[0.0; 8]));
    assert!(matches!(err_of(&p), Error::InvalidGrid(_)));
}

#[test]
fn nan_and_inf_voxels_load_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nan.nii");
    let v = [1.0, f32::NAN, 3.0, f32::INFINITY, -2.0, 0.0, f32::NEG_INFINITY, 4.0];
    RawHeader::new([2, 2, 2], 16, 32).write_nii(&p, &f32_bytes(&v));
    let img = load(&p).unwrap();
    let st = img.stats().unwrap();
    assert_eq!((st.min, st.max, st.non_finite), (-2.0, 4.0, 3));
    assert!((st.mean - 1.2).abs() < 1e-12);
    // They cannot be stored in an integer type: a clear error, and nothing is written.
    let out = dir.path().join("nan_u8.nii");
    let e = save_with(&img, &out, &SaveOptions { dtype: Some(DataType::Uint8), ..Default::default() }).unwrap_err();
    assert!(matches!(e, Error::Cast { .. }), "{e}");
    assert!(!out.exists());
    // And regsh info reports them.
    let info = regsh::info::ImageInfo::read(&p).unwrap();
    assert_eq!(info.stats.non_finite, 3);
}

#[test]
fn unknown_extension_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.mgz");
    std::fs::write(&p, b"hello").unwrap();
    assert!(matches!(err_of(&p), Error::MalformedNifti { .. }));
    let img = Image::full(0.0, 1, Grid::axis_aligned([2, 2, 2], [1.0; 3], [0.0; 3]).unwrap()).unwrap();
    assert!(matches!(save(&img, &p), Err(Error::UnknownExtension { .. })));
}

// ---- writing is atomic and never replaces an input unless asked ----

#[test]
fn inputs_are_not_overwritten_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.nii.gz");
    let g = Grid::axis_aligned([3, 3, 3], [1.0; 3], [0.0; 3]).unwrap();
    save(&Image::full(2.0, 1, g.clone()).unwrap(), &p).unwrap();
    let before = std::fs::read(&p).unwrap();
    let img = load(&p).unwrap();
    let e = save(&img, &p).unwrap_err();
    assert!(matches!(e, Error::OverwriteInput { .. }), "{e}");
    assert_eq!(std::fs::read(&p).unwrap(), before);
    let other = Image::full(5.0, 1, g).unwrap();
    save_with(&other, &p, &SaveOptions { overwrite_input: true, ..Default::default() }).unwrap();
    assert_eq!(load(&p).unwrap().stats().unwrap().max, 5.0);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn failed_write_leaves_existing_output_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.nii");
    let g = Grid::axis_aligned([2, 2, 2], [1.0; 3], [0.0; 3]).unwrap();
    save(&Image::full(1.0, 1, g.clone()).unwrap(), &p).unwrap();
    let before = std::fs::read(&p).unwrap();
    let big = Image::full(1000.0, 1, g).unwrap();
    let e = save_with(&big, &p, &SaveOptions { dtype: Some(DataType::Uint8), ..Default::default() }).unwrap_err();
    assert!(matches!(e, Error::Cast { .. }));
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

/// nibabel's affine for the header of `qform_only_header_oblique_with_negative_qfac`.
const QFORM_A: [[f64; 4]; 3] = [
    [1.4799999666213983, -1.0328342557035766, -1.2928342402849922, -10.0],
    [1.1928342604719482, 1.599999970197677, 0.19641709555557982, 20.0],
    [-0.6218894804103061, 0.6109447565964305, -2.699999991059303, 30.0],
];

#[test]
fn absurd_header_values_are_errors_not_overflows() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.nii");
    // 7 dimensions of 32767 voxels overflow any voxel count.
    let mut h = RawHeader::new([32767, 32767, 32767], 16, 32);
    h.dim = [7, 32767, 32767, 32767, 32767, 32767, 32767, 32767];
    h.write_nii(&p, &[]);
    assert!(matches!(load(&p), Err(Error::InvalidDimensions { .. })));
    let mut h = RawHeader::new([2, 2, 2], 16, 32);
    h.vox_offset = 1e30;
    h.write_nii(&p, &f32_bytes(&[0.0; 8]));
    assert!(matches!(load(&p), Err(Error::MalformedNifti { .. })));
    // A non-finite slope is ignored (with a warning), not applied.
    let mut h = RawHeader::new([2, 2, 2], 16, 32);
    h.scl_slope = f32::NAN;
    h.write_nii(&p, &f32_bytes(&[1.0; 8]));
    assert_eq!(load(&p).unwrap().to_vec_f64().unwrap(), vec![1.0; 8]);
}
