"""SimpleITK's resampler on the benchmark's case (driven by scripts/bench-warp.sh): an image of
160x192x224 voxels resampled through an affine and through a displacement field onto its own grid,
linear interpolation, with the given thread count. Prints one JSON object per case."""
import json
import sys
import time

import numpy as np
import SimpleITK as sitk

threads, reps = int(sys.argv[1]), int(sys.argv[2])
sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
nx, ny, nz = 160, 192, 224
n = nx * ny * nz
img = sitk.GetImageFromArray((np.arange(n, dtype=np.float64) * 0.618034 % 1.0).astype(np.float32).reshape(nz, ny, nx))
aff = sitk.AffineTransform(3)
aff.SetMatrix((1.02, 0.01, 0.0, -0.01, 0.98, 0.02, 0.0, -0.02, 1.01))
aff.SetTranslation((2.5, -3.0, 1.5))
aff.SetCenter(((nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2))
field = ((np.arange(3 * n, dtype=np.float64) * 0.3771 % 1.0) - 0.5) * 2.0
disp = sitk.GetImageFromArray(field.reshape(nz, ny, nx, 3), isVector=True)
ddf = sitk.DisplacementFieldTransform(sitk.Cast(disp, sitk.sitkVectorFloat64))


def median(f):
    f()
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return sorted(t)[reps // 2]


for case, tx in [("affine_forward", aff), ("ddf_forward", ddf)]:
    secs = median(lambda: sitk.Resample(img, img, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    print(json.dumps({"case": case, "seconds": round(secs, 4), "voxels_per_second": n / secs, "threads": threads}))
