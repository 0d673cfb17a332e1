//! NIfTI-1 reading and writing (`.nii`, `.nii.gz`, `.hdr`/`.img`, `.hdr.gz`/`.img.gz`).
//!
//! Reading validates the header before any data is touched (size, magic, dimensions, datatype, file
//! length), so a malformed file is a clear [`Error`], never a panic or a huge allocation. The world
//! geometry follows nibabel's `get_best_affine`: the sform when `sform_code > 0`, else the qform when
//! `qform_code > 0`, else the Analyze-style affine from pixdim (centred, x flipped). `scl_slope` /
//! `scl_inter` are applied (skipped when the slope is 0). Dimensions 4 to 7 become channels.
//!
//! Writing stores both the sform (code 2, exact affine) and the qform (code 1, its nearest rigid +
//! zooms form), `scl_slope` 1 and mm units; it goes to a temporary file in the target's directory, then
//! renames, so a failed write leaves nothing half-written; and it refuses to replace a file this process
//! loaded as an input unless asked.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Tensor};
use nalgebra::{Matrix3, Matrix4};
use ndarray::{Array, IxDyn};
use nifti::writer::WriterOptions;
use nifti::{IntoNdArray, NiftiHeader, NiftiObject, ReaderOptions, XForm};
use serde::Serialize;

use super::dtype::{check_castable, nifti_code_name, DataType};
use super::{Grid, Image};
use crate::error::{Error, Result};

/// Where a loaded image's world geometry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GeometrySource {
    /// `srow_x/y/z` (sform_code > 0).
    Sform,
    /// The quaternion, pixdim and qoffset (qform_code > 0, sform_code 0).
    Qform,
    /// Neither code set: pixdim scaling about the centre, x flipped (nibabel's fallback).
    Pixdim,
}

/// Header facts of a loaded file that are not part of the [`Image`] itself.
#[derive(Clone, Debug, Serialize)]
pub struct NiftiMeta {
    /// The file read.
    pub path: PathBuf,
    /// Datatype on disk.
    pub disk_dtype: DataType,
    /// Dimensions as NIfTI orders them (x, y, z[, t, ...]).
    pub dims: Vec<usize>,
    /// Which header fields gave the geometry.
    pub geometry: GeometrySource,
    pub sform_code: i16,
    pub qform_code: i16,
    pub scl_slope: f32,
    pub scl_inter: f32,
    /// The 80-byte description field.
    pub description: String,
    /// NIfTI intent code (1007 = vector, as in ITK / ANTs displacement fields).
    pub intent_code: i16,
}

/// Options of [`save_with`].
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// Datatype to write; `None` writes the image's own [`Image::dtype`].
    pub dtype: Option<DataType>,
    /// Allow replacing a file this process loaded as an input.
    pub overwrite_input: bool,
    /// Write the channels as a vector image: 5-D `(x, y, z, 1, C)` with intent 1007 (NIFTI_INTENT_VECTOR),
    /// the layout ITK and ANTs use for displacement fields. Otherwise channels are the 4th dimension.
    pub vector: bool,
}

/// NIfTI intent code of vector-valued images.
pub const INTENT_VECTOR: i16 = 1007;

/// Canonical paths of every file loaded so far: saving over one of them needs `overwrite_input`.
static LOADED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn remember_input(path: &Path) {
    if let Ok(p) = path.canonicalize() {
        if let Ok(mut g) = LOADED.lock() {
            g.get_or_insert_with(HashSet::new).insert(p);
        }
    }
}

fn is_input(path: &Path) -> bool {
    let Ok(p) = path.canonicalize() else { return false };
    LOADED.lock().map(|g| g.as_ref().is_some_and(|s| s.contains(&p))).unwrap_or(false)
}

/// Whether `path` names a file this process has loaded as an input image (compared as canonical paths),
/// which writers refuse to replace unless asked.
pub fn is_loaded_input(path: &Path) -> bool {
    is_input(path)
}

/// The kinds of file name regsh reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Nii,
    NiiGz,
    Hdr,
    HdrGz,
}

fn format_of(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    if name.ends_with(".nii.gz") {
        Some(Format::NiiGz)
    } else if name.ends_with(".nii") {
        Some(Format::Nii)
    } else if name.ends_with(".hdr.gz") || name.ends_with(".img.gz") {
        Some(Format::HdrGz)
    } else if name.ends_with(".hdr") || name.ends_with(".img") {
        Some(Format::Hdr)
    } else {
        None
    }
}

/// For a pair, the header path given either half; for a single file, itself.
fn header_path(path: &Path, fmt: Format) -> PathBuf {
    let s = path.to_string_lossy();
    match fmt {
        Format::Hdr if s.to_ascii_lowercase().ends_with(".img") => PathBuf::from(format!("{}.hdr", &s[..s.len() - 4])),
        Format::HdrGz if s.to_ascii_lowercase().ends_with(".img.gz") => {
            PathBuf::from(format!("{}.hdr.gz", &s[..s.len() - 7]))
        }
        _ => path.to_path_buf(),
    }
}

fn data_path(hdr: &Path, fmt: Format) -> PathBuf {
    let s = hdr.to_string_lossy();
    match fmt {
        Format::Hdr => PathBuf::from(format!("{}.img", &s[..s.len() - 4])),
        Format::HdrGz => PathBuf::from(format!("{}.img.gz", &s[..s.len() - 7])),
        _ => hdr.to_path_buf(),
    }
}

fn open(path: &Path) -> Result<File> {
    if !path.exists() {
        return Err(Error::NotFound { path: path.into() });
    }
    if path.is_dir() {
        return Err(Error::IsDirectory { path: path.into() });
    }
    File::open(path).map_err(|source| Error::Io { path: path.into(), source })
}

/// Reads the first 348 bytes of a (possibly gzipped) header file.
fn read_raw_header(path: &Path) -> Result<Vec<u8>> {
    let mut f = open(path)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|source| Error::Io { path: path.into(), source })?;
    let f = open(path)?;
    let mut reader: Box<dyn Read> =
        if n == 2 && magic == [0x1f, 0x8b] { Box::new(flate2::read::GzDecoder::new(f)) } else { Box::new(f) };
    let mut buf = Vec::with_capacity(348);
    reader
        .by_ref()
        .take(348)
        .read_to_end(&mut buf)
        .map_err(|e| Error::malformed(path, format!("cannot read the header: {e}")))?;
    if buf.len() < 348 {
        return Err(Error::malformed(path, format!("truncated header: {} bytes, a NIfTI-1 header has 348", buf.len())));
    }
    Ok(buf)
}

/// The checks made on the raw header before handing the file to the NIfTI reader.
struct Checked {
    nvox: usize,
    dtype: DataType,
    vox_offset: usize,
}

fn check_header(path: &Path, raw: &[u8], fmt: Format) -> Result<Checked> {
    let le = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let be = i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let little = match (le, be) {
        (348, _) => true,
        (_, 348) => false,
        (540, _) | (_, 540) => return Err(Error::Nifti2Unsupported { path: path.into() }),
        _ => return Err(Error::malformed(path, format!("not a NIfTI-1 header (sizeof_hdr is {le}, expected 348)"))),
    };
    let i16_at = |o: usize| {
        let b = [raw[o], raw[o + 1]];
        if little {
            i16::from_le_bytes(b)
        } else {
            i16::from_be_bytes(b)
        }
    };
    let f32_at = |o: usize| {
        let b = [raw[o], raw[o + 1], raw[o + 2], raw[o + 3]];
        if little {
            f32::from_le_bytes(b)
        } else {
            f32::from_be_bytes(b)
        }
    };
    let magic = &raw[344..348];
    if magic != b"n+1\0" && magic != b"ni1\0" {
        return Err(Error::malformed(
            path,
            format!(
                "wrong magic {:?}, expected \"n+1\" (single file) or \"ni1\" (header/image pair); Analyze 7.5 is not supported",
                String::from_utf8_lossy(magic).trim_end_matches('\0')
            ),
        ));
    }
    let single = magic == b"n+1\0";
    if single != matches!(fmt, Format::Nii | Format::NiiGz) {
        return Err(Error::malformed(
            path,
            format!("magic {:?} does not match the file name", String::from_utf8_lossy(&magic[..3])),
        ));
    }
    let dims: Vec<i64> = (0..8).map(|i| i16_at(40 + 2 * i) as i64).collect();
    let ndim = dims[0];
    if !(1..=7).contains(&ndim) {
        return Err(Error::InvalidDimensions {
            path: path.into(),
            dims,
            reason: "dim[0] must be between 1 and 7".into(),
        });
    }
    if let Some(bad) = dims[1..=ndim as usize].iter().find(|&&d| d <= 0) {
        return Err(Error::InvalidDimensions {
            path: path.into(),
            dims: dims.clone(),
            reason: format!("dimension {bad} is zero or negative"),
        });
    }
    let code = i16_at(70);
    let dtype = DataType::from_code(code).ok_or_else(|| Error::UnsupportedDatatype {
        path: path.into(),
        code,
        name: nifti_code_name(code),
    })?;
    let nvox = dims[1..=ndim as usize]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .filter(|n| n.checked_mul(8).is_some())
        .ok_or_else(|| Error::InvalidDimensions {
            path: path.into(),
            dims: dims.clone(),
            reason: "the voxel count overflows".into(),
        })?;
    let vox_offset = f32_at(108);
    if !(vox_offset.is_finite() && (0.0..=1e9).contains(&vox_offset)) {
        return Err(Error::malformed(path, format!("invalid vox_offset {vox_offset}")));
    }
    let vox_offset = if single { (vox_offset as usize).max(352) } else { vox_offset as usize };
    Ok(Checked { nvox, dtype, vox_offset })
}

/// Loads a NIfTI-1 image. See [`load_with_meta`].
pub fn load(path: impl AsRef<Path>) -> Result<Image> {
    Ok(load_with_meta(path)?.0)
}

/// Loads a NIfTI-1 image and the header facts that are not part of the image.
///
/// The tensor is `(C, Z, Y, X)`, `F32` (or `F64` where f32 would change a value; see [`crate::image`]).
/// NaN and infinite voxels are kept, and reported by a warning and by [`Image::stats`].
///
/// Errors: [`Error::NotFound`], [`Error::IsDirectory`], [`Error::Io`], [`Error::Nifti2Unsupported`],
/// [`Error::MalformedNifti`] (wrong magic, truncated header or data, a header the reader rejects),
/// [`Error::InvalidDimensions`], [`Error::UnsupportedDatatype`], [`Error::InvalidGrid`] (a singular
/// affine or non-positive pixdim).
pub fn load_with_meta(path: impl AsRef<Path>) -> Result<(Image, NiftiMeta)> {
    let path = path.as_ref();
    let fmt = format_of(path).ok_or_else(|| {
        if !path.exists() {
            Error::NotFound { path: path.into() }
        } else if path.is_dir() {
            Error::IsDirectory { path: path.into() }
        } else {
            Error::malformed(path, "unknown extension (expected .nii, .nii.gz, .hdr/.img or .hdr.gz/.img.gz)")
        }
    })?;
    let hdr_path = header_path(path, fmt);
    let raw = read_raw_header(&hdr_path)?;
    let checked = check_header(&hdr_path, &raw, fmt)?;
    let dpath = data_path(&hdr_path, fmt);
    if matches!(fmt, Format::Nii | Format::Hdr) {
        // Uncompressed: the data must be all there before we allocate for it.
        let len = open(&dpath)?.metadata().map_err(|source| Error::Io { path: dpath.clone(), source })?.len() as usize;
        let need = checked
            .nvox
            .checked_mul(checked.dtype.size_of())
            .and_then(|b| b.checked_add(checked.vox_offset))
            .unwrap_or(usize::MAX);
        if len < need {
            return Err(Error::malformed(
                &dpath,
                format!("truncated data: the file has {len} bytes, the header needs {need}"),
            ));
        }
    }

    // The reader is a safety net away from panicking on inputs our checks let through.
    let obj = std::panic::catch_unwind(|| ReaderOptions::new().read_file(&hdr_path))
        .map_err(|_| Error::malformed(&hdr_path, "the NIfTI reader failed on this file"))?
        .map_err(|e| nifti_error(&hdr_path, e))?;
    let header = obj.header().clone();
    // Rebuild the volume without scaling: the reader would apply slope 1 / intercept 0 too, turning -0.0
    // into +0.0. Scaling is applied below only where the header asks for it.
    let volume = nifti::InMemNiftiVolume::from_raw_fields(
        header.dim,
        header.data_type().map_err(|e| nifti_error(&hdr_path, e))?,
        0.0,
        0.0,
        obj.into_volume().into_raw_data(),
        header.endianness,
    )
    .map_err(|e| nifti_error(&hdr_path, e))?;
    let array = std::panic::catch_unwind(move || volume.into_ndarray::<f64>())
        .map_err(|_| Error::malformed(&hdr_path, "the NIfTI reader failed on the voxel data"))?
        .map_err(|e| nifti_error(&hdr_path, e))?;

    let ndim = header.dim[0] as usize;
    let dims: Vec<usize> = header.dim[1..=ndim].iter().map(|&d| d as usize).collect();
    let shape = [0, 1, 2].map(|a| dims.get(a).copied().unwrap_or(1));
    let channels: usize = dims.iter().skip(3).product();
    let (grid, geometry) = grid_from_header(&hdr_path, &header, shape)?;

    // Memory order of the Fortran-ordered array is x fastest: exactly (C, Z, Y, X) in C order.
    let values: Vec<f64> = match array.as_slice_memory_order() {
        Some(s) => s.to_vec(),
        None => array.t().iter().copied().collect(),
    };
    // Non-finite scaling fields are ignored (with a warning) rather than turning every voxel into NaN.
    let finite_scaling = header.scl_slope.is_finite() && header.scl_inter.is_finite();
    if !finite_scaling {
        tracing::warn!(
            "{}: ignoring non-finite scl_slope / scl_inter ({}, {})",
            path.display(),
            header.scl_slope,
            header.scl_inter
        );
    }
    let scaled = finite_scaling && header.scl_slope != 0.0 && (header.scl_slope != 1.0 || header.scl_inter != 0.0);
    let values = if scaled {
        let (m, b) = (header.scl_slope as f64, header.scl_inter as f64);
        values.into_iter().map(|v| v * m + b).collect()
    } else {
        values
    };
    let keep_f64 = !scaled && values.iter().any(|&v| v.is_finite() && (v as f32) as f64 != v);
    let [z, y, x] = grid.zyx();
    let dev = crate::device::host();
    let data = if keep_f64 {
        Tensor::from_vec(values.clone(), (channels, z, y, x), &dev)?
    } else {
        Tensor::from_vec(values.iter().map(|&v| v as f32).collect::<Vec<_>>(), (channels, z, y, x), &dev)?
    };
    let non_finite = values.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        tracing::warn!("{}: {non_finite} voxel(s) are NaN or infinite", path.display());
    }
    let disk_dtype = checked.dtype;
    let image = Image::new(data, grid, if scaled { DataType::Float32 } else { disk_dtype })?;
    remember_input(&hdr_path);
    remember_input(&dpath);
    let description = String::from_utf8_lossy(&header.descrip).trim_end_matches('\0').trim().to_string();
    let meta = NiftiMeta {
        path: path.to_path_buf(),
        disk_dtype,
        dims,
        geometry,
        sform_code: header.sform_code,
        qform_code: header.qform_code,
        scl_slope: header.scl_slope,
        scl_inter: header.scl_inter,
        description,
        intent_code: header.intent_code,
    };
    Ok((image, meta))
}

fn nifti_error(path: &Path, e: nifti::NiftiError) -> Error {
    match e {
        nifti::NiftiError::IncompatibleLength(got, want) => {
            Error::malformed(path, format!("truncated data: {got} bytes of voxel data, the header needs {want}"))
        }
        nifti::NiftiError::Io(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::malformed(path, "truncated file (unexpected end of data)")
        }
        other => Error::malformed(path, other.to_string()),
    }
}

/// The world grid of a header, by nibabel's rule (sform, else qform, else pixdim).
///
/// Errors: [`Error::InvalidGrid`] when the chosen affine is singular or pixdim is not positive.
pub fn grid_from_header(path: &Path, h: &NiftiHeader, shape: [usize; 3]) -> Result<(Grid, GeometrySource)> {
    let ctx = |e: Error| match e {
        Error::InvalidGrid(m) => Error::InvalidGrid(format!("{}: {m}", path.display())),
        e => e,
    };
    if h.sform_code > 0 {
        let a = sform_matrix(h);
        return Ok((Grid::from_affine(shape, &a).map_err(ctx)?, GeometrySource::Sform));
    }
    let zooms = [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64];
    // Axes beyond the file's dimensionality have no meaningful pixdim: nibabel takes 1.
    let ndim = h.dim[0] as usize;
    let zooms = [0, 1, 2].map(|a| if a < ndim || zooms[a] > 0.0 { zooms[a] } else { 1.0 });
    if zooms.iter().any(|&z| !(z.is_finite() && z > 0.0)) {
        return Err(Error::InvalidGrid(format!("{}: pixdim[1..4] must be positive, got {zooms:?}", path.display())));
    }
    if h.qform_code > 0 {
        let a = qform_matrix(
            [h.quatern_b, h.quatern_c, h.quatern_d],
            h.pixdim[0],
            zooms,
            [h.quatern_x, h.quatern_y, h.quatern_z],
        );
        return Ok((Grid::from_affine(shape, &a).map_err(ctx)?, GeometrySource::Qform));
    }
    Ok((Grid::from_affine(shape, &pixdim_matrix(shape, zooms)).map_err(ctx)?, GeometrySource::Pixdim))
}

fn sform_matrix(h: &NiftiHeader) -> Matrix4<f64> {
    let (x, y, z) = (h.srow_x, h.srow_y, h.srow_z);
    #[rustfmt::skip]
    let a = Matrix4::new(
        x[0] as f64, x[1] as f64, x[2] as f64, x[3] as f64,
        y[0] as f64, y[1] as f64, y[2] as f64, y[3] as f64,
        z[0] as f64, z[1] as f64, z[2] as f64, z[3] as f64,
        0.0, 0.0, 0.0, 1.0);
    a
}

/// The qform voxel-to-world matrix from the quaternion `(b, c, d)`, `qfac` (pixdim[0]; negative flips
/// the z axis), the zooms and `qoffset`, as in the NIfTI-1 standard (`nifti_quatern_to_mat44`).
pub fn qform_matrix(bcd: [f32; 3], qfac: f32, zooms: [f64; 3], offset: [f32; 3]) -> Matrix4<f64> {
    let (mut b, mut c, mut d) = (bcd[0] as f64, bcd[1] as f64, bcd[2] as f64);
    let sq = b * b + c * c + d * d;
    let a = if 1.0 - sq < 1e-7 {
        // A 180-degree rotation: renormalize (b, c, d) and take a = 0.
        let n = sq.sqrt();
        if n > 0.0 {
            b /= n;
            c /= n;
            d /= n;
        }
        0.0
    } else {
        (1.0 - sq).sqrt()
    };
    let r = Matrix3::new(
        a * a + b * b - c * c - d * d,
        2.0 * (b * c - a * d),
        2.0 * (b * d + a * c),
        2.0 * (b * c + a * d),
        a * a + c * c - b * b - d * d,
        2.0 * (c * d - a * b),
        2.0 * (b * d - a * c),
        2.0 * (c * d + a * b),
        a * a + d * d - c * c - b * b,
    );
    let qfac = if qfac < 0.0 { -1.0 } else { 1.0 };
    let s = Matrix3::from_diagonal(&nalgebra::Vector3::new(zooms[0], zooms[1], zooms[2] * qfac));
    let m = r * s;
    let mut out = Matrix4::identity();
    out.fixed_view_mut::<3, 3>(0, 0).copy_from(&m);
    out[(0, 3)] = offset[0] as f64;
    out[(1, 3)] = offset[1] as f64;
    out[(2, 3)] = offset[2] as f64;
    out
}

/// nibabel's fallback affine when neither code is set: `diag(-zx, zy, zz)` about the volume centre,
/// i.e. world = `diag(-zx, zy, zz) * (ijk - (shape - 1) / 2)`.
pub fn pixdim_matrix(shape: [usize; 3], zooms: [f64; 3]) -> Matrix4<f64> {
    let mut a = Matrix4::identity();
    let sign = [-1.0, 1.0, 1.0];
    for ax in 0..3 {
        a[(ax, ax)] = sign[ax] * zooms[ax];
        a[(ax, 3)] = -sign[ax] * zooms[ax] * (shape[ax] as f64 - 1.0) / 2.0;
    }
    a
}

/// Saves an image with its own datatype; see [`save_with`].
pub fn save(image: &Image, path: impl AsRef<Path>) -> Result<()> {
    save_with(image, path, &SaveOptions::default())
}

/// Writes `image` to `path` (`.nii`, `.nii.gz`, `.hdr` or `.hdr.gz`; a pair writes the `.img` beside).
/// Integer datatypes round to nearest. Missing parent directories are created.
///
/// Errors: [`Error::UnknownExtension`], [`Error::OverwriteInput`] (the target was loaded as an input and
/// `overwrite_input` is false), [`Error::Cast`] (NaN or out-of-range values for an integer type),
/// [`Error::Io`] / [`Error::MalformedNifti`] from the writer. On error the target is untouched (for a
/// `.hdr` / `.img` pair, the data file is renamed first and the header last, so only a failure between
/// those two renames leaves a new data file beside the old header).
pub fn save_with(image: &Image, path: impl AsRef<Path>, opts: &SaveOptions) -> Result<()> {
    let path = path.as_ref();
    let fmt = format_of(path).ok_or_else(|| Error::UnknownExtension { path: path.into() })?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if name.ends_with(".img") || name.ends_with(".img.gz") {
        return Err(Error::UnknownExtension { path: path.into() });
    }
    let dpath = data_path(path, fmt);
    if !opts.overwrite_input && (is_input(path) || is_input(&dpath)) {
        return Err(Error::OverwriteInput { path: path.into() });
    }
    crate::outputs::make_room(path)?;
    let dtype = opts.dtype.unwrap_or(image.dtype());
    let values = image.to_vec_f64()?;
    check_castable(&values, dtype)?;

    let mut header = NiftiHeader::default();
    let affine = image.grid().voxel_to_world();
    header.set_sform(&affine, XForm::AlignedAnat);
    header.set_qform(&affine, XForm::ScannerAnat);
    let sp = image.grid().spacing();
    header.pixdim[1] = sp[0] as f32;
    header.pixdim[2] = sp[1] as f32;
    header.pixdim[3] = sp[2] as f32;
    for p in header.pixdim[4..].iter_mut() {
        *p = 1.0;
    }
    header.xyzt_units = 2 | 8; // mm, seconds
    header.set_description_str("regsh").ok();

    let [nx, ny, nz] = image.grid().shape();
    let c = image.channels();
    let parent = crate::outputs::parent_dir(path).to_path_buf();
    let tmp = tempfile::Builder::new()
        .prefix(".regsh-tmp")
        .tempdir_in(&parent)
        .map_err(|source| Error::Io { path: parent.clone(), source })?;
    let ext = match fmt {
        Format::Nii => "nii",
        Format::NiiGz => "nii.gz",
        Format::Hdr => "hdr",
        Format::HdrGz => "hdr.gz",
    };
    let tmp_path = tmp.path().join(format!("out.{ext}"));
    let shape: Vec<usize> = if opts.vector {
        header.intent_code = INTENT_VECTOR;
        vec![c, 1, nz, ny, nx]
    } else if c == 1 {
        vec![nz, ny, nx]
    } else {
        vec![c, nz, ny, nx]
    };
    let writer = WriterOptions::new(&tmp_path).reference_header(&header);
    macro_rules! write_as {
        ($t:ty) => {{
            let v: Vec<$t> = values.iter().map(|&x| x.round() as $t).collect();
            write_array(&writer, &tmp_path, v, &shape)
        }};
    }
    match dtype {
        DataType::Uint8 => write_as!(u8),
        DataType::Int8 => write_as!(i8),
        DataType::Uint16 => write_as!(u16),
        DataType::Int16 => write_as!(i16),
        DataType::Uint32 => write_as!(u32),
        DataType::Int32 => write_as!(i32),
        DataType::Float32 => write_array(&writer, &tmp_path, values.iter().map(|&x| x as f32).collect(), &shape),
        DataType::Float64 => write_array(&writer, &tmp_path, values, &shape),
    }?;
    // Data file first, header last: a reader never sees a new header with an old data file.
    let tmp_data = data_path(&tmp_path, fmt);
    if tmp_data != tmp_path {
        std::fs::rename(&tmp_data, &dpath).map_err(|source| Error::Io { path: dpath.clone(), source })?;
    }
    std::fs::rename(&tmp_path, path).map_err(|source| Error::Io { path: path.into(), source })?;
    Ok(())
}

fn write_array<T: nifti::DataElement + bytemuck::Pod>(
    writer: &WriterOptions<'_>,
    tmp_path: &Path,
    values: Vec<T>,
    shape_czyx: &[usize],
) -> Result<()> {
    let arr = Array::from_shape_vec(IxDyn(shape_czyx), values)
        .map_err(|e| Error::arg("save", format!("internal shape error: {e}")))?;
    // The writer transposes to Fortran order; hand it the (x, y, z[, c]) view of our C-ordered data.
    let xyz = arr.reversed_axes();
    writer.write_nifti(&xyz).map_err(|e| match e {
        nifti::NiftiError::Io(source) => Error::Io { path: tmp_path.into(), source },
        other => Error::malformed(tmp_path, other.to_string()),
    })
}

/// Converts a loaded image's tensor to f32 for computation (a no-op for F32).
pub fn as_f32(t: &Tensor) -> Result<Tensor> {
    Ok(if t.dtype() == DType::F32 { t.clone() } else { t.to_dtype(DType::F32)? })
}
