"""SimpleITK as an independent client of regsh's transform files (driven by tests/itk_client.rs).

    sitk_ref.py resample MOVING REFERENCE OUT TRANSFORM [TRANSFORM ...]
        Resample MOVING onto REFERENCE's grid (linear, zero outside, float32). Transforms are given in
        point order (the first is applied first to a reference point), as `regsh apply -t` takes them;
        .nii/.nii.gz files are displacement fields, anything else goes to sitk.ReadTransform.
    sitk_ref.py write-affine OUT
        Write a fixed, known AffineTransform (LPS, with a centre) with sitk.WriteTransform.
"""
import sys

import SimpleITK as sitk


def read_transform(spec):
    if spec.endswith(".nii") or spec.endswith(".nii.gz"):
        field = sitk.ReadImage(spec, sitk.sitkVectorFloat64)
        return sitk.DisplacementFieldTransform(field)
    return sitk.ReadTransform(spec)


def main(argv):
    if argv[1] == "resample":
        moving = sitk.ReadImage(argv[2], sitk.sitkFloat32)
        reference = sitk.ReadImage(argv[3])
        composite = sitk.CompositeTransform(3)
        # ITK applies the last transform added first: add in reverse point order.
        for spec in reversed(argv[5:]):
            composite.AddTransform(read_transform(spec))
        out = sitk.Resample(moving, reference, composite, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        sitk.WriteImage(out, argv[4])
    elif argv[1] == "write-affine":
        t = sitk.AffineTransform(3)
        euler = sitk.Euler3DTransform((0, 0, 0), 0.12, -0.07, 0.2)
        m = list(euler.GetMatrix())
        # A scaling and a shear on top of the rotation.
        m[0] *= 1.06
        m[4] *= 0.95
        m[1] += 0.04
        t.SetMatrix(m)
        t.SetTranslation((4.0, -3.0, 6.5))
        t.SetCenter((1.5, -20.0, 12.0))
        sitk.WriteTransform(t, argv[2])
    else:
        raise SystemExit(f"unknown command {argv[1]}")


if __name__ == "__main__":
    main(sys.argv)
