//! Voxel datatypes regsh reads and writes (the NIfTI-1 `datatype` codes).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::names;

/// A voxel datatype of a NIfTI file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Uint8,
    Int8,
    Uint16,
    Int16,
    Uint32,
    Int32,
    Float32,
    Float64,
}

/// Every datatype, with its name as written in scripts and on the command line.
pub const DATA_TYPES: [(&str, DataType); 8] = [
    ("uint8", DataType::Uint8),
    ("int8", DataType::Int8),
    ("uint16", DataType::Uint16),
    ("int16", DataType::Int16),
    ("uint32", DataType::Uint32),
    ("int32", DataType::Int32),
    ("float32", DataType::Float32),
    ("float64", DataType::Float64),
];

impl DataType {
    /// The NIfTI-1 datatype code.
    pub fn code(self) -> i16 {
        match self {
            DataType::Uint8 => 2,
            DataType::Int16 => 4,
            DataType::Int32 => 8,
            DataType::Float32 => 16,
            DataType::Float64 => 64,
            DataType::Int8 => 256,
            DataType::Uint16 => 512,
            DataType::Uint32 => 768,
        }
    }

    /// The datatype of a NIfTI-1 code, if regsh supports it.
    pub fn from_code(code: i16) -> Option<DataType> {
        DATA_TYPES.iter().map(|(_, d)| *d).find(|d| d.code() == code)
    }

    /// Lower-case name (`"uint8"`, `"float32"`, ...).
    pub fn name(self) -> &'static str {
        DATA_TYPES.iter().find(|(_, d)| *d == self).map(|(n, _)| *n).unwrap_or("?")
    }

    /// Parses a name, with "did you mean" on a typo. Accepts `float` / `double` as aliases.
    pub fn parse(name: &str) -> Result<DataType> {
        match name.to_ascii_lowercase().as_str() {
            "float" => return Ok(DataType::Float32),
            "double" => return Ok(DataType::Float64),
            _ => {}
        }
        names::lookup("datatype", name, &DATA_TYPES)
    }

    /// Bytes per voxel.
    pub fn size_of(self) -> usize {
        match self {
            DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Float32 => 4,
            DataType::Float64 => 8,
        }
    }

    /// Whether the type holds integers.
    pub fn is_integer(self) -> bool {
        !matches!(self, DataType::Float32 | DataType::Float64)
    }

    /// The closed range of values an integer type holds (`None` for float types).
    pub fn integer_range(self) -> Option<(f64, f64)> {
        Some(match self {
            DataType::Uint8 => (0.0, u8::MAX as f64),
            DataType::Int8 => (i8::MIN as f64, i8::MAX as f64),
            DataType::Uint16 => (0.0, u16::MAX as f64),
            DataType::Int16 => (i16::MIN as f64, i16::MAX as f64),
            DataType::Uint32 => (0.0, u32::MAX as f64),
            DataType::Int32 => (i32::MIN as f64, i32::MAX as f64),
            DataType::Float32 | DataType::Float64 => return None,
        })
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Name of any NIfTI-1 datatype code, supported or not (for error messages).
pub fn nifti_code_name(code: i16) -> String {
    match code {
        0 => "unknown".into(),
        1 => "binary".into(),
        32 => "complex64".into(),
        128 => "rgb24".into(),
        1024 => "int64".into(),
        1280 => "uint64".into(),
        1536 => "float128".into(),
        1792 => "complex128".into(),
        2048 => "complex256".into(),
        2304 => "rgba32".into(),
        c => DataType::from_code(c).map(|d| d.name().to_string()).unwrap_or_else(|| "invalid".into()),
    }
}

/// Checks that `values` can be stored as `dtype`: integer types need finite values within range
/// (non-integers are rounded to nearest on write). Errors: [`Error::Cast`].
pub fn check_castable(values: &[f64], dtype: DataType) -> Result<()> {
    let Some((lo, hi)) = dtype.integer_range() else {
        if dtype == DataType::Float32 {
            if let Some(v) = values.iter().find(|v| v.is_finite() && v.abs() > f32::MAX as f64) {
                return Err(Error::Cast { dtype: dtype.name().into(), reason: format!("value {v} overflows float32") });
            }
        }
        return Ok(());
    };
    if let Some(n) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Cast {
            dtype: dtype.name().into(),
            reason: format!("voxel {n} is {} (integer types cannot hold NaN or infinity)", values[n]),
        });
    }
    if let Some(v) = values.iter().find(|v| v.round() < lo || v.round() > hi) {
        return Err(Error::Cast { dtype: dtype.name().into(), reason: format!("value {v} is outside [{lo}, {hi}]") });
    }
    Ok(())
}
