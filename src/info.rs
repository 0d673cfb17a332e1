//! The image summary `regsh info` prints (text or JSON).

use serde::Serialize;

use crate::error::Result;
use crate::image::io::{load_with_meta, GeometrySource};
use crate::image::Stats;

/// Everything `regsh info` reports about an image file.
///
/// JSON keys: `path`, `shape` (x, y, z[, t, ...] as NIfTI orders them), `spacing` (mm, x y z), `origin`
/// (mm, RAS), `direction` (3x3, row-major; columns are the voxel axes), `affine` (4x4 voxel-to-world RAS,
/// row-major), `orientation` (e.g. `"LAS"`), `dtype` (on disk), `geometry` (`sform` / `qform` /
/// `pixdim`), `sform_code`, `qform_code`, `scl_slope`, `scl_inter`, `channels`, `min`, `max`, `mean`
/// (finite voxels, after scaling), `non_finite` (count of NaN / infinite voxels), `description`.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInfo {
    pub path: String,
    pub shape: Vec<usize>,
    pub spacing: [f64; 3],
    pub origin: [f64; 3],
    pub direction: [[f64; 3]; 3],
    pub affine: [[f64; 4]; 4],
    pub orientation: String,
    pub dtype: String,
    pub geometry: GeometrySource,
    pub sform_code: i16,
    pub qform_code: i16,
    pub scl_slope: f32,
    pub scl_inter: f32,
    pub channels: usize,
    #[serde(flatten)]
    pub stats: Stats,
    pub description: String,
}

impl ImageInfo {
    /// Loads `path` and summarizes it. Errors: those of [`crate::image::io::load`].
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let (img, meta) = load_with_meta(path)?;
        let g = img.grid();
        let d = g.direction();
        Ok(ImageInfo {
            path: path.display().to_string(),
            shape: meta.dims.clone(),
            spacing: g.spacing(),
            origin: g.origin(),
            direction: [0, 1, 2].map(|r| [d[(r, 0)], d[(r, 1)], d[(r, 2)]]),
            affine: g.affine_rows(),
            orientation: g.orientation(),
            dtype: meta.disk_dtype.name().into(),
            geometry: meta.geometry,
            sform_code: meta.sform_code,
            qform_code: meta.qform_code,
            scl_slope: meta.scl_slope,
            scl_inter: meta.scl_inter,
            channels: img.channels(),
            stats: img.stats()?,
            description: meta.description,
        })
    }
}

fn fmt3(v: [f64; 3]) -> String {
    format!("{:.6} {:.6} {:.6}", v[0], v[1], v[2])
}

impl std::fmt::Display for ImageInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shape: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        writeln!(f, "{}", self.path)?;
        writeln!(f, "  shape        {}", shape.join(" x "))?;
        writeln!(f, "  spacing      {} mm", fmt3(self.spacing))?;
        writeln!(f, "  origin       {} mm", fmt3(self.origin))?;
        writeln!(f, "  orientation  {}", self.orientation)?;
        for (i, r) in self.direction.iter().enumerate() {
            writeln!(f, "  {}  {}", if i == 0 { "direction  " } else { "           " }, fmt3(*r))?;
        }
        for (i, r) in self.affine.iter().enumerate() {
            writeln!(
                f,
                "  {}  {:>11.6} {:>11.6} {:>11.6} {:>11.6}",
                if i == 0 { "affine     " } else { "           " },
                r[0],
                r[1],
                r[2],
                r[3]
            )?;
        }
        let g = match self.geometry {
            GeometrySource::Sform => "sform",
            GeometrySource::Qform => "qform",
            GeometrySource::Pixdim => "pixdim (no sform or qform code)",
        };
        writeln!(f, "  geometry     {g} (sform_code {}, qform_code {})", self.sform_code, self.qform_code)?;
        writeln!(f, "  dtype        {} (scl_slope {}, scl_inter {})", self.dtype, self.scl_slope, self.scl_inter)?;
        write!(f, "  range        [{}, {}], mean {:.6}", self.stats.min, self.stats.max, self.stats.mean)?;
        if self.stats.non_finite > 0 {
            write!(f, "\n  non-finite   {} voxel(s) are NaN or infinite", self.stats.non_finite)?;
        }
        Ok(())
    }
}
