//! Saving and loading a network: the weights as safetensors (`VarMap::save` / `load`, exact round trip)
//! and, beside them, a JSON file with the network's kind, name and configuration.
//!
//! For weights at `dir/net.safetensors` the configuration is `dir/net.json`:
//! `{"kind": "affine_net", "name": "...", "format": 1, "config": {...}}`. Both files are written
//! atomically (a temporary file in the same directory, then a rename).

use std::path::{Path, PathBuf};

use candle_nn::VarMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The version of the JSON layout written by [`save_network`].
pub const FORMAT_VERSION: u32 = 1;

/// The JSON file written beside a network's weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkFile<C> {
    /// The network kind (`affine_net`, `unet`).
    pub kind: String,
    /// The network's own name.
    pub name: String,
    /// [`FORMAT_VERSION`] at writing.
    pub format: u32,
    /// The network's configuration.
    pub config: C,
}

/// The configuration path beside a weights path: the same stem with extension `json`.
pub fn config_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.into(), source }
}

pub use crate::outputs::write_atomically;

/// Writes `varmap` to `weights` (safetensors) and the kind, name and `config` to [`config_path`].
///
/// Errors: [`Error::InvalidArgument`] when `weights` would be its own JSON file (extension `json`);
/// [`Error::Io`] for a missing directory or a failed write; the backend's.
pub fn save_network<C: Serialize>(weights: &Path, kind: &str, name: &str, config: &C, varmap: &VarMap) -> Result<()> {
    let json_path = config_path(weights);
    if json_path == weights {
        return Err(Error::arg(
            "save network",
            format!("{}: weights need an extension other than .json", weights.display()),
        ));
    }
    crate::outputs::make_room(weights)?;
    let dir = crate::outputs::parent_dir(weights);
    let file = NetworkFile { kind: kind.to_string(), name: name.to_string(), format: FORMAT_VERSION, config };
    let text = serde_json::to_string_pretty(&file).map_err(|e| Error::arg("save network", e.to_string()))?;
    let tmp_w = tempfile::Builder::new().suffix(".safetensors").tempfile_in(dir).map_err(io_err(dir))?;
    varmap.save(tmp_w.path())?;
    let mut tmp_j = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    std::io::Write::write_all(&mut tmp_j, text.as_bytes()).map_err(io_err(&json_path))?;
    tmp_w.persist(weights).map_err(|e| Error::Io { path: weights.into(), source: e.error })?;
    tmp_j.persist(&json_path).map_err(|e| Error::Io { path: json_path.clone(), source: e.error })?;
    Ok(())
}

/// Reads the JSON beside `weights` and checks it holds a network of `kind`; returns its name and
/// configuration.
///
/// Errors: [`Error::NotFound`] for a missing JSON or weights file; [`Error::Io`]; [`Error::InvalidArgument`]
/// for malformed JSON, another kind or a newer format.
pub fn load_network_file<C: DeserializeOwned>(weights: &Path, kind: &str) -> Result<(String, C)> {
    let json_path = config_path(weights);
    for p in [weights, json_path.as_path()] {
        if !p.is_file() {
            return Err(Error::NotFound { path: p.into() });
        }
    }
    let text = std::fs::read_to_string(&json_path).map_err(io_err(&json_path))?;
    let file: NetworkFile<C> =
        serde_json::from_str(&text).map_err(|e| Error::arg("load network", format!("{}: {e}", json_path.display())))?;
    if file.kind != kind {
        return Err(Error::arg("load network", format!("{}: a `{}`, not a `{kind}`", json_path.display(), file.kind)));
    }
    if file.format > FORMAT_VERSION {
        return Err(Error::arg(
            "load network",
            format!(
                "{}: format {} is newer than this regsh reads ({FORMAT_VERSION})",
                json_path.display(),
                file.format
            ),
        ));
    }
    Ok((file.name, file.config))
}
