#!/usr/bin/env python3
"""Independent references for regsh's evaluation measures (tests/evaluation.rs), from numpy, scipy and
scikit-image only.

Usage: eval_ref.py COMMAND SPEC.json

SPEC is a JSON object. Volumes are raw little-endian files (float64, or the numpy `dtype` given for label
maps) in C order of the given `shape` (z, y, x, as regsh's tensors); `spacing` is (z, y, x) in mm. Prints
one JSON object on stdout.

Commands:
  dice        {a, b, shape, dtype?, labels?}                -> {"per_label": {label: dice}}
  hd95        {a, b, shape, spacing, dtype?, labels?, full?} -> {"per_label": {label: hd95 mm}}
              (medpy.metric.binary.hd95 with connectivity 1, written out with scipy.ndimage)
  labels      the union of both specs                       -> {"dice": ..., "hd95": ...}
  edt         {mask, shape, spacing, out}                   -> writes the distances (float64) to `out`
  similarity  {shape, pairs: [{a, b, data_range?}]}          -> {"pairs": [{ssim, psnr, data_range}]}
              (skimage.metrics.structural_similarity with gaussian_weights=True, sigma=1.5,
              use_sample_covariance=False; skimage.metrics.peak_signal_noise_ratio)
"""

import json
import sys

import numpy as np
from scipy import ndimage as ndi
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def volume(path, shape, dtype="<f8"):
    return np.fromfile(path, dtype=dtype).reshape(shape)


def label_volumes(spec):
    """The label maps a and b as int64 (raw files of `dtype`, by default float64)."""
    dt = spec.get("dtype", "<f8")
    a, b = (volume(spec[k], spec["shape"], dt) for k in ("a", "b"))
    assert np.all(a == np.round(a)) and np.all(b == np.round(b)), "label maps must hold integers"
    return a.astype(np.int64), b.astype(np.int64)


def counts(v):
    """{label: voxel count} of an int64 array (np.bincount; non-negative labels only)."""
    assert v.size == 0 or v.min() >= 0, "the reference handles non-negative labels only"
    c = np.bincount(v.ravel())
    return {int(l): int(c[l]) for l in np.flatnonzero(c)}


def label_list(spec, ca, cb):
    if spec.get("labels") is not None:
        return sorted(set(int(x) for x in spec["labels"]))
    return sorted(l for l in set(ca) | set(cb) if l != 0)


def dice(spec, a=None, b=None):
    if a is None:
        a, b = label_volumes(spec)
    # Voxel counts per label in a, in b, and in a where a == b.
    ca, cb, ci = counts(a), counts(b), counts(a[a == b])
    out = {}
    for l in label_list(spec, ca, cb):
        na, nb, ni = ca.get(l, 0), cb.get(l, 0), ci.get(l, 0)
        if na + nb == 0:
            continue
        out[str(l)] = 2.0 * ni / (na + nb)
    return {"per_label": out}


def surface_distances(result, reference, spacing):
    """medpy.metric.binary.__surface_distances with connectivity=1, written out with scipy."""
    footprint = ndi.generate_binary_structure(result.ndim, 1)
    result_border = result ^ ndi.binary_erosion(result, structure=footprint, iterations=1)
    reference_border = reference ^ ndi.binary_erosion(reference, structure=footprint, iterations=1)
    dt = ndi.distance_transform_edt(~reference_border, sampling=spacing)
    return dt[result_border]


def hd95_one(a, b, spacing):
    """medpy.metric.binary.hd95: the 95th percentile of both directed surface-distance sets together."""
    hd1 = surface_distances(a, b, spacing)
    hd2 = surface_distances(b, a, spacing)
    return float(np.percentile(np.hstack((hd1, hd2)), 95))


def boxes(v):
    """Bounding slices of every positive integer label of v (scipy.ndimage.find_objects)."""
    objs = ndi.find_objects(v)
    return {i + 1: o for i, o in enumerate(objs) if o is not None}


def hd95(spec, a=None, b=None):
    shape, spacing = spec["shape"], spec["spacing"]
    if a is None:
        a, b = label_volumes(spec)
    full = bool(spec.get("full", False))
    assert a.min() >= 0 and b.min() >= 0, "the reference handles non-negative labels only"
    ba, bb = boxes(a), boxes(b)
    out = {}
    for l in label_list(spec, ba, bb):
        if l not in ba or l not in bb:
            continue
        if full:
            box = tuple(slice(0, n) for n in shape)
        else:
            # The bounding box of the label in both images grown by one voxel (clipped to the image):
            # the erosion sees the same neighbourhoods and every surface voxel lies inside, so the
            # distances equal the whole-volume ones; only faster.
            box = tuple(
                slice(max(min(x.start, y.start) - 1, 0), min(max(x.stop, y.stop) + 1, n))
                for x, y, n in zip(ba[l], bb[l], shape)
            )
        out[str(l)] = hd95_one(a[box] == l, b[box] == l, spacing)
    return {"per_label": out}


def edt(spec):
    mask = volume(spec["mask"], spec["shape"]) != 0
    if not mask.any():
        d = np.full(mask.shape, np.inf)
    else:
        d = ndi.distance_transform_edt(~mask, sampling=spec["spacing"])
    d.astype("<f8").tofile(spec["out"])
    return {"n": int(d.size)}


def similarity(spec):
    """SSIM and PSNR of each pair {a, b, data_range?} (data_range default: max - min of a)."""
    out = []
    for p in spec["pairs"]:
        a, b = volume(p["a"], spec["shape"]), volume(p["b"], spec["shape"])
        r = p.get("data_range")
        if r is None:
            r = float(a.max() - a.min())
        s = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=r)
        out.append({"ssim": float(s), "psnr": float(peak_signal_noise_ratio(a, b, data_range=r)), "data_range": r})
    return {"pairs": out}


def labels(spec):
    """dice and hd95 of the same spec in one run."""
    a, b = label_volumes(spec)
    return {"dice": dice(spec, a, b), "hd95": hd95(spec, a, b)}


COMMANDS = {"dice": dice, "hd95": hd95, "labels": labels, "edt": edt, "similarity": similarity}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(COMMANDS)}}} SPEC.json")
    with open(sys.argv[2]) as f:
        spec = json.load(f)
    print(json.dumps(COMMANDS[sys.argv[1]](spec)))
