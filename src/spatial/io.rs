//! Transform files other tools read and write.
//!
//! - **ITK text transforms** (`.tfm`, `.txt`): `#Insight Transform File V1.0`. Written as
//!   `AffineTransform_double_3_3` with the 9 matrix entries and 3 translations as `Parameters` and the
//!   centre as `FixedParameters`. Read: `AffineTransform`, `MatrixOffsetTransformBase`,
//!   `TranslationTransform`, `Euler3DTransform`, `VersorRigid3DTransform`, `Similarity3DTransform`,
//!   `ScaleVersor3DTransform`, `IdentityTransform` (double or float), and `CompositeTransform` files.
//! - **ANTs `.mat`**: the MATLAB v4 file ANTs writes (`AffineTransform_double_3_3` and `fixed`), read and
//!   written.
//! - **Displacement fields** (`.nii`, `.nii.gz`): 5-D `(x, y, z, 1, 3)` float32, intent vector (1007),
//!   vectors in mm, as ITK and ANTs write them.
//!
//! ITK and ANTs work in **LPS** (x to the Left, y Posterior); regsh in RAS. Files hold LPS; conversion
//! flips the x and y components (`F = diag(-1, -1, 1)`: `A_ras = F A_lps F`, `b_ras = F b_lps`).
//! All these files map **fixed-space points to moving-space points**.

use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use nalgebra::{Matrix3, Matrix4, Quaternion, UnitQuaternion, Vector3};

use super::{Composite, Ddf, Linear, LinearKind, Transform};
use crate::error::{Error, Result};
use crate::image::io::{load_with_meta, save_with, SaveOptions};
use crate::image::{DataType, Image};

const F: [f64; 3] = crate::image::grid::RAS_TO_LPS;

/// Converts a 4x4 world matrix between RAS and LPS (the map is its own inverse).
pub fn flip_ras_lps(m: &Matrix4<f64>) -> Matrix4<f64> {
    let f = Matrix4::from_diagonal(&nalgebra::Vector4::new(F[0], F[1], F[2], 1.0));
    f * m * f
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.into(), source }
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::arg("transform file", format!("{}: {}", path.display(), reason.into()))
}

/// Writes `contents` atomically: a temporary file in the same directory, then a rename.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    crate::outputs::write_bytes_atomically(path, contents)
}

/// Writes a linear world map (RAS 4x4, fixed -> moving) as an ITK `AffineTransform_double_3_3` about
/// `centre` (RAS mm). Errors: [`Error::Io`].
pub fn write_itk_affine(path: &Path, m: &Matrix4<f64>, centre: [f64; 3]) -> Result<()> {
    let l = flip_ras_lps(m);
    let c = Vector3::new(F[0] * centre[0], F[1] * centre[1], F[2] * centre[2]);
    let a: Matrix3<f64> = l.fixed_view::<3, 3>(0, 0).into();
    let off = Vector3::new(l[(0, 3)], l[(1, 3)], l[(2, 3)]);
    // ITK: x' = A (x - c) + c + t, so t = off - c + A c.
    let t = off - c + a * c;
    let mut params: Vec<String> = Vec::new();
    for r in 0..3 {
        for col in 0..3 {
            params.push(fmt(a[(r, col)]));
        }
    }
    params.extend(t.iter().map(|v| fmt(*v)));
    let fixed: Vec<String> = c.iter().map(|v| fmt(*v)).collect();
    let text = format!(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\nParameters: {}\nFixedParameters: {}\n",
        params.join(" "),
        fixed.join(" ")
    );
    write_atomic(path, text.as_bytes())
}

/// Shortest text that reads back as the same f64.
fn fmt(v: f64) -> String {
    let v = if v == 0.0 { 0.0 } else { v };
    format!("{v:?}")
}

/// One transform of an ITK file, as a RAS world matrix (fixed -> moving).
fn itk_matrix(path: &Path, kind: &str, p: &[f64], fixed: &[f64]) -> Result<Matrix4<f64>> {
    let base = kind.split('_').next().unwrap_or(kind);
    if p.iter().chain(fixed).any(|v| !v.is_finite()) {
        return Err(bad(path, format!("{kind} has non-finite parameters")));
    }
    let need = |n: usize| -> Result<()> {
        if p.len() < n {
            Err(bad(path, format!("{kind} needs {n} parameters, found {}", p.len())))
        } else {
            Ok(())
        }
    };
    let c = Vector3::new(
        fixed.first().copied().unwrap_or(0.0),
        fixed.get(1).copied().unwrap_or(0.0),
        fixed.get(2).copied().unwrap_or(0.0),
    );
    let versor = |v: &[f64]| -> Matrix3<f64> {
        let w = (1.0 - v[0] * v[0] - v[1] * v[1] - v[2] * v[2]).max(0.0).sqrt();
        UnitQuaternion::from_quaternion(Quaternion::new(w, v[0], v[1], v[2])).to_rotation_matrix().into_inner()
    };
    let (a, t): (Matrix3<f64>, Vector3<f64>) = match base {
        "AffineTransform" | "MatrixOffsetTransformBase" => {
            need(12)?;
            (Matrix3::from_row_slice(&p[..9]), Vector3::new(p[9], p[10], p[11]))
        }
        "TranslationTransform" => {
            need(3)?;
            (Matrix3::identity(), Vector3::new(p[0], p[1], p[2]))
        }
        "IdentityTransform" => (Matrix3::identity(), Vector3::zeros()),
        "Euler3DTransform" => {
            need(6)?;
            let (rx, ry, rz) = (p[0], p[1], p[2]);
            let x = nalgebra::Rotation3::from_axis_angle(&Vector3::x_axis(), rx).into_inner();
            let y = nalgebra::Rotation3::from_axis_angle(&Vector3::y_axis(), ry).into_inner();
            let z = nalgebra::Rotation3::from_axis_angle(&Vector3::z_axis(), rz).into_inner();
            // ITK's default order is Z X Y (ComputeZYX off); the 4th fixed parameter turns on Z Y X.
            let zyx = fixed.get(3).copied().unwrap_or(0.0) != 0.0;
            let r = if zyx { z * y * x } else { z * x * y };
            (r, Vector3::new(p[3], p[4], p[5]))
        }
        "VersorRigid3DTransform" => {
            need(6)?;
            (versor(&p[..3]), Vector3::new(p[3], p[4], p[5]))
        }
        "Similarity3DTransform" => {
            need(7)?;
            (versor(&p[..3]) * p[6], Vector3::new(p[3], p[4], p[5]))
        }
        "ScaleVersor3DTransform" => {
            need(9)?;
            // ITK's ComputeMatrix: the versor's rotation with (scale - 1) added on the diagonal.
            let mut m = versor(&p[..3]);
            for a in 0..3 {
                m[(a, a)] += p[6 + a] - 1.0;
            }
            (m, Vector3::new(p[3], p[4], p[5]))
        }
        other => return Err(bad(path, format!("unsupported ITK transform type {other}"))),
    };
    let off = c + t - a * c;
    let mut l = Matrix4::identity();
    l.fixed_view_mut::<3, 3>(0, 0).copy_from(&a);
    l[(0, 3)] = off[0];
    l[(1, 3)] = off[1];
    l[(2, 3)] = off[2];
    Ok(flip_ras_lps(&l))
}

/// Reads an ITK text transform file. A single linear transform comes back as a [`Linear`] (kind
/// `Matrix`, with the file's centre converted to RAS); a `CompositeTransform` file as a [`Composite`] in
/// point order (ITK applies the last listed transform first).
///
/// Errors: [`Error::NotFound`], [`Error::Io`], [`Error::InvalidArgument`] for a malformed file or an
/// unsupported transform type.
pub fn read_itk_tfm(path: &Path) -> Result<Arc<dyn Transform>> {
    if !path.exists() {
        return Err(Error::NotFound { path: path.into() });
    }
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    if !text.trim_start().starts_with("#Insight Transform File") {
        return Err(bad(path, "not an ITK transform file (no '#Insight Transform File' line)"));
    }
    let mut items: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let parse = |rest: &str| -> Result<Vec<f64>> {
            rest.split_whitespace()
                .map(|w| w.parse::<f64>().map_err(|_| bad(path, format!("bad number `{w}`"))))
                .collect()
        };
        if let Some(rest) = line.strip_prefix("Transform:") {
            items.push((rest.trim().to_string(), Vec::new(), Vec::new()));
        } else if let Some(rest) = line.strip_prefix("Parameters:") {
            let last = items.last_mut().ok_or_else(|| bad(path, "Parameters before Transform"))?;
            last.1 = parse(rest)?;
        } else if let Some(rest) = line.strip_prefix("FixedParameters:") {
            let last = items.last_mut().ok_or_else(|| bad(path, "FixedParameters before Transform"))?;
            last.2 = parse(rest)?;
        }
    }
    let items: Vec<_> = items.into_iter().filter(|(k, _, _)| !k.starts_with("CompositeTransform")).collect();
    if items.is_empty() {
        return Err(bad(path, "no transform in the file"));
    }
    let mut ts: Vec<Arc<dyn Transform>> = Vec::new();
    for (kind, p, fixed) in &items {
        if !kind.ends_with("_3_3") {
            return Err(bad(path, format!("only 3-D transforms are supported, found {kind}")));
        }
        let m = itk_matrix(path, kind, p, fixed)?;
        let c = [
            F[0] * fixed.first().copied().unwrap_or(0.0),
            F[1] * fixed.get(1).copied().unwrap_or(0.0),
            F[2] * fixed.get(2).copied().unwrap_or(0.0),
        ];
        ts.push(Arc::new(Linear::from_matrix(LinearKind::Matrix, &m, c)?));
    }
    if ts.len() == 1 {
        return Ok(ts.remove(0));
    }
    ts.reverse();
    Ok(Arc::new(Composite::new(ts)))
}

// ---- ANTs .mat (MATLAB level 4) ----

fn mat4_var(name: &str, values: &[f64]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0i32, values.len() as i32, 1, 0, name.len() as i32 + 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    for v in values {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// Writes a linear world map (RAS, fixed -> moving) as ANTs' `.mat` (MATLAB v4:
/// `AffineTransform_double_3_3` and `fixed`, LPS). Errors: [`Error::Io`].
pub fn write_ants_mat(path: &Path, m: &Matrix4<f64>, centre: [f64; 3]) -> Result<()> {
    let l = flip_ras_lps(m);
    let c = Vector3::new(F[0] * centre[0], F[1] * centre[1], F[2] * centre[2]);
    let a: Matrix3<f64> = l.fixed_view::<3, 3>(0, 0).into();
    let off = Vector3::new(l[(0, 3)], l[(1, 3)], l[(2, 3)]);
    let t = off - c + a * c;
    let mut p: Vec<f64> = (0..3).flat_map(|r| (0..3).map(move |col| a[(r, col)])).collect();
    p.extend(t.iter());
    let mut bytes = mat4_var("AffineTransform_double_3_3", &p);
    bytes.extend(mat4_var("fixed", c.as_slice()));
    write_atomic(path, &bytes)
}

/// Reads ANTs' `.mat` affine (MATLAB v4, little-endian, double or float).
/// Errors: [`Error::NotFound`], [`Error::Io`], [`Error::InvalidArgument`] for a malformed file.
pub fn read_ants_mat(path: &Path) -> Result<Arc<dyn Transform>> {
    if !path.exists() {
        return Err(Error::NotFound { path: path.into() });
    }
    let b = std::fs::read(path).map_err(io_err(path))?;
    let mut pos = 0usize;
    let mut params: Option<(String, Vec<f64>)> = None;
    let mut fixed = vec![0.0; 3];
    while pos + 20 <= b.len() {
        let h: Vec<i32> = (0..5)
            .map(|i| i32::from_le_bytes([b[pos + 4 * i], b[pos + 4 * i + 1], b[pos + 4 * i + 2], b[pos + 4 * i + 3]]))
            .collect();
        let (ty, rows, cols, imag, namelen) = (h[0], h[1], h[2], h[3], h[4]);
        if !(0..10000).contains(&ty) || rows < 0 || cols < 0 || imag != 0 || !(1..256).contains(&namelen) {
            return Err(bad(path, "not a MATLAB v4 file as ANTs writes it (big-endian or unsupported layout)"));
        }
        pos += 20;
        let end = pos + namelen as usize;
        if end > b.len() {
            return Err(bad(path, "truncated"));
        }
        let name = String::from_utf8_lossy(&b[pos..end - 1]).to_string();
        pos = end;
        let n = (rows as usize)
            .checked_mul(cols as usize)
            .filter(|n| *n <= 1 << 20)
            .ok_or_else(|| bad(path, "implausible matrix size"))?;
        let prec = (ty / 10) % 10;
        let size = match prec {
            0 => 8,
            1 => 4,
            _ => return Err(bad(path, format!("variable {name}: unsupported MATLAB precision {prec}"))),
        };
        if pos + n * size > b.len() {
            return Err(bad(path, "truncated"));
        }
        let vals: Vec<f64> = (0..n)
            .map(|i| {
                let s = &b[pos + i * size..pos + (i + 1) * size];
                if size == 8 {
                    f64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
                } else {
                    f32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f64
                }
            })
            .collect();
        pos += n * size;
        if name == "fixed" {
            fixed = vals;
        } else if name.contains("Transform") {
            params = Some((name, vals));
        }
    }
    let (kind, p) = params.ok_or_else(|| bad(path, "no transform variable in the file"))?;
    let m = itk_matrix(path, &kind, &p, &fixed)?;
    let c = [
        F[0] * fixed.first().copied().unwrap_or(0.0),
        F[1] * fixed.get(1).copied().unwrap_or(0.0),
        F[2] * fixed.get(2).copied().unwrap_or(0.0),
    ];
    Ok(Arc::new(Linear::from_matrix(LinearKind::Matrix, &m, c)?))
}

// ---- displacement fields ----

/// Writes a DDF as an ITK / ANTs displacement image: 5-D `(x, y, z, 1, 3)` float32, intent vector,
/// LPS components in mm, on the DDF's grid. Errors: those of [`save_with`].
pub fn save_displacement(ddf: &Ddf, path: &Path) -> Result<()> {
    let flip = Tensor::from_vec(F.map(|v| v as f32).to_vec(), (3, 1, 1, 1), ddf.field().device())?;
    let lps = ddf.field().broadcast_mul(&flip)?;
    let img = Image::new(lps, ddf.grid().clone(), DataType::Float32)?;
    save_with(&img, path, &SaveOptions { vector: true, ..Default::default() })
}

/// Reads an ITK / ANTs displacement image (3 vector components, LPS mm) as a [`Ddf`] in RAS.
/// Errors: load errors; [`Error::InvalidArgument`] when the image does not hold 3 components.
pub fn load_displacement(path: &Path) -> Result<Ddf> {
    let (img, meta) = load_with_meta(path)?;
    let vector_layout =
        meta.intent_code == crate::image::io::INTENT_VECTOR || (meta.dims.len() == 5 && meta.dims[3] == 1);
    if img.channels() != 3 || !vector_layout {
        return Err(bad(
            path,
            format!(
                "a displacement field is a vector image (x, y, z, 1, 3) or has the vector intent; this one has {} channel(s), dims {:?}, intent {}",
                img.channels(),
                meta.dims,
                meta.intent_code
            ),
        ));
    }
    let flip = Tensor::from_vec(F.map(|v| v as f32).to_vec(), (3, 1, 1, 1), img.data().device())?;
    let ras = crate::image::io::as_f32(img.data())?.broadcast_mul(&flip)?;
    Ddf::new(ras, img.grid().clone())
}

/// Loads a transform by file name: `.tfm` / `.txt` (ITK), `.mat` (ANTs), `.nii` / `.nii.gz`
/// (displacement field). `[path,1]` (as `antsApplyTransforms` writes it) loads the inverse.
///
/// Errors: as the readers; [`Error::InvalidArgument`] for an unknown extension.
pub fn load_transform(spec: &str) -> Result<Arc<dyn Transform>> {
    let s = spec.trim();
    let (path, invert) = match s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(inner) => {
            let mut parts = inner.splitn(2, ',');
            let p = parts.next().unwrap_or("").trim();
            let flag = parts.next().map(|f| f.trim()).unwrap_or("0");
            (p, flag == "1" || flag.eq_ignore_ascii_case("true"))
        }
        None => (s, false),
    };
    let p = Path::new(path);
    let lower = path.to_ascii_lowercase();
    let t: Arc<dyn Transform> = if lower.ends_with(".tfm") || lower.ends_with(".txt") {
        read_itk_tfm(p)?
    } else if lower.ends_with(".mat") {
        read_ants_mat(p)?
    } else if lower.ends_with(".nii") || lower.ends_with(".nii.gz") {
        Arc::new(load_displacement(p)?)
    } else {
        return Err(bad(p, "unknown transform file type (expected .tfm, .txt, .mat, .nii or .nii.gz)"));
    };
    if invert {
        t.inverse()
    } else {
        Ok(t)
    }
}

/// Saves a transform by file name: a linear one as `.tfm` / `.txt` (ITK) or `.mat` (ANTs), about
/// `centre`; a dense one as a displacement field `.nii` / `.nii.gz` sampled on `grid`. Missing parent
/// directories are created.
///
/// Errors: [`Error::InvalidArgument`] when the kind of file does not fit the transform or no grid is
/// given for a dense one; write errors.
pub fn save_transform(
    t: &dyn Transform,
    path: &Path,
    centre: [f64; 3],
    grid: Option<&crate::image::Grid>,
) -> Result<()> {
    let lower = path.to_string_lossy().to_ascii_lowercase();
    if lower.ends_with(".tfm") || lower.ends_with(".txt") || lower.ends_with(".mat") {
        let m = t
            .linear_matrix()?
            .ok_or_else(|| bad(path, "only linear transforms go to .tfm / .mat; use .nii.gz for dense ones"))?;
        return if lower.ends_with(".mat") {
            write_ants_mat(path, &m, centre)
        } else {
            write_itk_affine(path, &m, centre)
        };
    }
    if lower.ends_with(".nii") || lower.ends_with(".nii.gz") {
        let g = grid.ok_or_else(|| bad(path, "a displacement field needs a grid to be sampled on"))?;
        let world = t.world_points(g)?;
        let base = super::grid_points(g, world.device())?;
        let field = (world - base)?.permute((3, 0, 1, 2))?.contiguous()?;
        return save_displacement(&Ddf::new(field, g.clone())?, path);
    }
    Err(bad(path, "unknown transform file type (expected .tfm, .txt, .mat, .nii or .nii.gz)"))
}
