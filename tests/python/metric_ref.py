"""Discrete reference values of the histogram measures (driven by tests/metrics.rs).

    metric_ref.py FIXED MOVING BINS
        FIXED and MOVING are NIfTI images holding integer bin indices 0..BINS-1 (written by the test).
        Prints JSON: mutual information (nats, scikit-learn's mutual_info_score), NMI (H(F)+H(M))/H(F,M),
        and Roche's discrete correlation ratios eta(M|F), eta(F|M) and their mean (numpy).
"""
import json
import sys

import numpy as np
import SimpleITK as sitk
from sklearn.metrics import mutual_info_score


def entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def eta(y, x, bins):
    """Roche et al. 1998: 1 - sum_k n_k Var(Y | X = k) / (N Var(Y))."""
    y = y.astype(np.float64)
    total = y.var() * y.size
    within = 0.0
    for k in range(bins):
        sel = y[x == k]
        if sel.size:
            within += sel.var() * sel.size
    return 1.0 - within / total


f = sitk.GetArrayFromImage(sitk.ReadImage(sys.argv[1])).ravel().astype(np.int64)
m = sitk.GetArrayFromImage(sitk.ReadImage(sys.argv[2])).ravel().astype(np.int64)
bins = int(sys.argv[3])
joint = np.zeros((bins, bins))
np.add.at(joint, (f, m), 1)
hf, hm, hfm = entropy(joint.sum(1)), entropy(joint.sum(0)), entropy(joint.ravel())
# eta(M | F): the moving image's values are its bin indices, conditioned on the fixed bins.
e_mf, e_fm = eta(m, f, bins), eta(f, m, bins)
print(json.dumps({
    "mi": mutual_info_score(f, m),
    "mi_entropies": hf + hm - hfm,
    "nmi": (hf + hm) / hfm,
    "entropy_fixed": hf,
    "cr_m_given_f": e_mf,
    "cr_f_given_m": e_fm,
    "cr": 0.5 * (e_mf + e_fm),
}))
