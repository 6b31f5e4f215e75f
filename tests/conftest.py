import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def make_nifti(tmp_path):
    """Write a small NIfTI and return its path."""
    import nibabel as nib

    def _make(name="img.nii.gz", shape=(8, 9, 10), affine=None, data=None, folder=None):
        folder = folder or tmp_path
        if data is None:
            data = np.random.default_rng(0).random(shape).astype(np.float32) + 0.1
        aff = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, aff), str(path))
        return path

    return _make
