//! The value a registration pipeline passes from stage to stage.

use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::image::Image;
use crate::optim::{dense_transform, LevelReport};
use crate::spatial::{Ddf, Linear, Transform};

/// What one stage of a registration did.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    /// The transform kind the stage optimized (`rigid`, `affine`, `syn`, ...), or `KIND:NAME` for a
    /// network's prediction.
    pub transform: String,
    /// One report per pyramid level, coarse to fine.
    pub levels: Vec<LevelReport>,
    /// The final L-BFGS refinement of a linear stage ([`crate::optim::Polish`]), when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polish: Option<LevelReport>,
    pub seconds: f64,
    /// The linear parameters after the stage (empty for dense stages).
    pub params: Vec<f64>,
}

/// The transform of a registration state (maps fixed-space world points to moving-space points, mm).
#[derive(Clone, Debug)]
pub enum StateTransform {
    /// A linear transform (translation .. 12-parameter affine) being optimized.
    Linear(Linear),
    /// A dense part then a linear part: a fixed point `x` maps to `linear(x + u(x))`, with `u` the
    /// displacement field (mm, on the fixed grid) of `dense` (as `regsh register` writes it:
    /// `PREFIX_warp.nii.gz` then `PREFIX_affine.tfm`, ANTs' `1Warp` then `0GenericAffine`). The deformable
    /// stages ([`super::iso_deformable`]) make it.
    LinearDense { linear: Linear, dense: Ddf, model: String },
}

impl StateTransform {
    /// The transform as a [`Transform`] (the one place that matches over the kinds).
    pub fn to_transform(&self) -> Arc<dyn Transform> {
        match self {
            StateTransform::Linear(l) => Arc::new(l.clone()),
            StateTransform::LinearDense { linear, dense, .. } => Arc::new(dense_transform(dense, linear)),
        }
    }

    /// The linear part.
    pub fn linear(&self) -> &Linear {
        match self {
            StateTransform::Linear(l) | StateTransform::LinearDense { linear: l, .. } => l,
        }
    }

    /// A short description, e.g. `affine` or `affine + svf`.
    pub fn describe(&self) -> String {
        match self {
            StateTransform::Linear(l) => l.kind().name().to_string(),
            StateTransform::LinearDense { linear, model, .. } => format!("{} + {model}", linear.kind().name()),
        }
    }
}

/// A registration in progress: the images, the current transform and the history of the stages run.
#[derive(Clone, Debug)]
pub struct RegState {
    /// The fixed (reference) image: its grid is where the result lives.
    pub fixed: Image,
    /// The moving image.
    pub moving: Image,
    /// Only fixed voxels where this mask (on the fixed grid) is non-zero count in the stages' losses.
    pub fixed_mask: Option<Image>,
    /// The current transform (fixed points to moving points).
    pub transform: StateTransform,
    /// One report per stage run so far: per pyramid level, iterations and losses.
    pub stages: Vec<StageReport>,
    /// Seconds spent in the stages so far (initialization included).
    pub seconds: f64,
}

impl RegState {
    /// The best loss of each pyramid level of the last stage (empty before any stage).
    pub fn level_losses(&self) -> Vec<f64> {
        self.stages.last().map(|s| s.levels.iter().map(|l| l.best_loss).collect()).unwrap_or_default()
    }

    /// The current transform as a [`Transform`].
    pub fn transform(&self) -> Arc<dyn Transform> {
        self.transform.to_transform()
    }

    /// The parameters of the linear part.
    pub fn params(&self) -> Result<Vec<f64>> {
        self.transform.linear().param_values()
    }
}

impl std::fmt::Display for RegState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegState({}, {} stage(s)", self.transform.describe(), self.stages.len())?;
        if let Some(l) = self.level_losses().last() {
            write!(f, ", final loss {l:.6}")?;
        }
        write!(f, ", {:.1} s)", self.seconds)
    }
}
