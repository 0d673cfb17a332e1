//! Typed errors of the regsh library.
//!
//! Library errors carry no source spans (those are attached at the script boundary); each variant has a
//! stable `miette` diagnostic code (`regsh::<area>::<what>`) and, where it helps, a help line.

use std::path::PathBuf;

/// Result type of the regsh library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the regsh library returns.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    /// The path does not exist.
    #[error("{path}: no such file")]
    #[diagnostic(
        code(regsh::io::not_found),
        help("check the path; relative paths are taken from the current directory")
    )]
    NotFound { path: PathBuf },

    /// The path is a directory where a file was expected.
    #[error("{path}: is a directory, not an image file")]
    #[diagnostic(code(regsh::io::is_dir))]
    IsDirectory { path: PathBuf },

    /// An operating-system I/O error on a file.
    #[error("{path}: {source}")]
    #[diagnostic(code(regsh::io::os))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a readable NIfTI-1 / Analyze image (bad magic, truncated, inconsistent header).
    #[error("{path}: malformed NIfTI: {reason}")]
    #[diagnostic(code(regsh::nifti::malformed))]
    MalformedNifti { path: PathBuf, reason: String },

    /// A NIfTI-2 file (sizeof_hdr = 540): not supported by the reader.
    #[error("{path}: NIfTI-2 files are not supported (only NIfTI-1)")]
    #[diagnostic(
        code(regsh::nifti::nifti2),
        help("convert it to NIfTI-1, e.g. with nibabel: nib.Nifti1Image(img.dataobj, img.affine).to_filename('out.nii.gz')")
    )]
    Nifti2Unsupported { path: PathBuf },

    /// The NIfTI datatype code is one regsh does not read or write.
    #[error("{path}: unsupported NIfTI datatype {name} (code {code})")]
    #[diagnostic(
        code(regsh::nifti::datatype),
        help("supported: uint8, int8, uint16, int16, uint32, int32, float32, float64")
    )]
    UnsupportedDatatype { path: PathBuf, code: i16, name: String },

    /// A header dimension is zero or negative, or the dimension count is out of range.
    #[error("{path}: invalid dimensions {dims:?}: {reason}")]
    #[diagnostic(code(regsh::nifti::dims))]
    InvalidDimensions { path: PathBuf, dims: Vec<i64>, reason: String },

    /// Refusing to overwrite a file that was read as an input in this session.
    #[error("{path}: refusing to overwrite an input image")]
    #[diagnostic(
        code(regsh::io::overwrite_input),
        help("write to another path, or pass overwrite=true to replace it")
    )]
    OverwriteInput { path: PathBuf },

    /// The file name has no extension regsh knows how to write.
    #[error("{path}: unknown image extension (expected .nii, .nii.gz, .hdr or .hdr.gz)")]
    #[diagnostic(code(regsh::io::extension))]
    UnknownExtension { path: PathBuf },

    /// Voxel values that cannot be stored in the requested datatype.
    #[error("cannot store the image as {dtype}: {reason}")]
    #[diagnostic(code(regsh::io::cast), help("save as float32, or round / clip the image first"))]
    Cast { dtype: String, reason: String },

    /// A grid (shape, spacing, direction) that is not a valid voxel-to-world mapping.
    #[error("invalid grid: {0}")]
    #[diagnostic(code(regsh::grid::invalid))]
    InvalidGrid(String),

    /// A tensor or image whose shape is not the one an operation requires.
    #[error("shape mismatch in {op}: expected {expected}, got {actual}")]
    #[diagnostic(code(regsh::shape))]
    Shape { op: String, expected: String, actual: String },

    /// An argument outside its valid range (a negative sigma, a crop past the border, ...).
    #[error("invalid argument to {op}: {reason}")]
    #[diagnostic(code(regsh::argument))]
    InvalidArgument { op: String, reason: String },

    /// An unknown option or name; `suggestion` holds the nearest valid one.
    #[error("unknown {kind} `{name}`{}", suggestion.as_ref().map(|s| format!(", did you mean `{s}`?")).unwrap_or_default())]
    #[diagnostic(code(regsh::unknown_name))]
    UnknownName { kind: String, name: String, suggestion: Option<String>, valid: Vec<String> },

    /// An error from the tensor backend.
    #[error("tensor backend: {0}")]
    #[diagnostic(code(regsh::tensor))]
    Tensor(#[from] candle_core::Error),

    /// An error raised by a function the user supplied (a measure, objective or loss written in the
    /// DSL), passed through the library unchanged so that the script boundary can report it against
    /// the function's own text.
    #[error("{0}")]
    #[diagnostic(code(regsh::callback))]
    Callback(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn arg(op: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { op: op.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::MalformedNifti`].
    pub fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::MalformedNifti { path: path.into(), reason: reason.into() }
    }
}
