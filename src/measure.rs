//! `regsh measure`: similarity and overlap measures of two images on the fixed grid.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::image::io::load;
use crate::image::resample::{resample, Interpolation, Padding};
use crate::image::{Grid, Image};
use crate::metrics::evaluation::{dice, hd95, psnr, ssim, LabelScores};
use crate::metrics::Metric;

/// Arguments of `regsh measure`.
#[derive(Clone, Debug)]
pub struct MeasureArgs {
    pub fixed: PathBuf,
    pub moving: PathBuf,
    pub mask: Option<PathBuf>,
    pub metrics: Option<String>,
    pub labels_fixed: Option<PathBuf>,
    pub labels_moving: Option<PathBuf>,
    pub json: bool,
}

/// Splits `a,b[x=1,y=2],c` at the commas outside brackets.
pub fn split_list(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for ch in s.chars() {
        match ch {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

fn onto(img: Image, grid: &Grid, interp: Interpolation, what: &str, notes: &mut Vec<String>) -> Result<Image> {
    if img.grid().same_as(grid, 1e-4) {
        return Ok(img);
    }
    notes.push(format!(
        "{what} resampled onto the fixed grid ({})",
        match interp {
            Interpolation::Linear => "linear",
            Interpolation::Nearest => "nearest",
        }
    ));
    resample(&img, grid, interp, Padding::Zero)
}

fn scores_json(s: &LabelScores) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in &s.per_label {
        m.insert(k.to_string(), json!(v));
    }
    m.insert("mean".into(), json!(s.mean));
    Value::Object(m)
}

/// Computes the requested measures and prints them (text or JSON) to stdout; notes go to stderr.
///
/// Errors: load errors; unknown measures or options; dice / hd95 without both label maps.
pub fn run(a: &MeasureArgs) -> Result<()> {
    let fixed = load(&a.fixed)?;
    let grid = fixed.grid().clone();
    let mut notes = Vec::new();
    let moving = onto(load(&a.moving)?, &grid, Interpolation::Linear, "moving image", &mut notes)?;
    let mask = match &a.mask {
        Some(p) => Some(onto(load(p)?, &grid, Interpolation::Nearest, "mask", &mut notes)?),
        None => None,
    };
    let labels = match (&a.labels_fixed, &a.labels_moving) {
        (Some(f), Some(m)) => Some((
            onto(load(f)?, &grid, Interpolation::Nearest, "fixed labels", &mut notes)?,
            onto(load(m)?, &grid, Interpolation::Nearest, "moving labels", &mut notes)?,
        )),
        (None, None) => None,
        _ => return Err(Error::arg("measure", "give both --labels-fixed and --labels-moving")),
    };
    let default =
        if labels.is_some() { "mi,nmi,cr,cr_patch,ncc,lncc,ssd,dice,hd95" } else { "mi,nmi,cr,cr_patch,ncc,lncc,ssd" };
    let specs = split_list(a.metrics.as_deref().unwrap_or(default));
    let (f, m) = (fixed.channel(0)?, moving.channel(0)?);
    let mask_t = mask.as_ref().map(|m| m.channel(0).map(|c| c.data().clone())).transpose()?;
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    let mut order = Vec::new();
    for spec in &specs {
        let key = spec.split('[').next().unwrap_or(spec).trim().to_ascii_lowercase();
        if out.contains_key(&key) {
            return Err(Error::arg(
                "measure",
                format!("`{key}` is asked for twice; the output is keyed by measure name"),
            ));
        }
        let value = match key.as_str() {
            "dice" | "hd95" => {
                let (lf, lm) = labels
                    .as_ref()
                    .ok_or_else(|| Error::arg("measure", format!("{key} needs --labels-fixed and --labels-moving")))?;
                let s = if key == "dice" { dice(lf, lm, None)? } else { hd95(lf, lm, None)? };
                scores_json(&s)
            }
            "ssim" => json!(ssim(&f, &m, None)?),
            "psnr" => json!(psnr(&f, &m, None)?),
            _ => {
                let metric = Metric::parse(spec)?;
                json!(metric.value(f.data(), m.data(), mask_t.as_ref())?)
            }
        };
        order.push(key.clone());
        out.insert(key, value);
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for k in &order {
            match &out[k] {
                Value::Object(o) => {
                    let mean = o.get("mean").and_then(Value::as_f64).unwrap_or(f64::NAN);
                    println!("{k:10} mean {mean:.6} over {} label(s)", o.len().saturating_sub(1));
                }
                v => println!("{k:10} {:.6}", v.as_f64().unwrap_or(f64::NAN)),
            }
        }
    }
    Ok(())
}
