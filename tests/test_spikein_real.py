"""synth spike-in on a real whole-head T1 (pydeface's mean_reg2mean.nii.gz) made into a small cohort.

Two variants of the head (random smooth deformations and poses, 3 mm) are spiked through an
on-the-fly preprocess run (N4, brain extraction, affine registration): bilateral hippocampal
atrophy for the patients, thalamic atrophy as the confounder. Checked: voxels whose template
position is farther than the support from the regions are bit-identical; ANTs SyN between an
image and its spiked version, turned into a log-Jacobian by ``neurointerp jacobian``, recovers
the planted log-Jacobian; the truth lines up with the atlas regions; preprocess of a spiked image
shows the change where the truth says.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

SPACE = "MNI152NLin2009aSym"
REGIONS = ["Left_Hippocampus", "Right_Hippocampus"]
SUPPORT = 20.0


def _head() -> Path:
    pydeface = pytest.importorskip("pydeface")
    return Path(pydeface.__file__).parent / "data" / "mean_reg2mean.nii.gz"


@pytest.fixture(scope="module")
def spiked(tmp_path_factory):
    from neurointerp.cli.app import main
    from neurointerp.synth.variants import image_variants

    root = tmp_path_factory.mktemp("spikereal")
    table = image_variants(_head(), root / "heads", n=2, voxel_size=3.0, seed=0)
    code = main([
        "synth", "spike-in", str(table), str(root / "spiked"), "--atlas", "HarvardOxford", "--region", REGIONS[0], "--region", REGIONS[1],
        "--effect", "-0.4", "--confounder-region", "Left_Thalamus", "--confounder-effect", "-0.2", "--support", str(SUPPORT),
        "--threads", "2", "--seed", "1",
    ])
    assert code == 0
    out = root / "spiked"
    return root, out, pd.read_csv(out / "cohort.csv"), pd.read_csv(out / "truth" / "subjects.tsv", sep="\t")


def _native_to_template(out: Path, pid: str):
    from neurointerp.preprocess.registration import map_points

    inv = out / "registration" / f"sub-{pid}" / "anat" / f"sub-{pid}_from-{SPACE}_to-T1w_mode-image_xfm.h5"
    return lambda pts: map_points(pts, str(inv))


def test_voxels_far_from_the_regions_are_bit_identical(spiked):
    from scipy.spatial import cKDTree

    from neurointerp.synth.spikein import atlas_regions

    root, out, cohort, subjects = spiked
    regions = atlas_regions("HarvardOxford", REGIONS + ["Left_Thalamus"], "disease")
    tree = cKDTree(np.concatenate([r.points for r in regions]))
    assert sorted(cohort["label"]) == ["control", "patient"]
    for rec, row in zip(subjects.to_dict("records"), cohort.to_dict("records")):
        src, new = nib.load(rec["source_image"]), nib.load(str(out / row["image"]))
        a, b = np.asarray(src.dataobj), np.asarray(new.dataobj)
        assert a.dtype == b.dtype and np.array_equal(src.affine, new.affine)
        changed = np.argwhere(a != b)
        assert len(changed) == rec["changed_voxels"] > (200 if rec["label"] == "patient" else 0)
        # every changed voxel lies, in template space (the registration's own transform), within the support of a region
        world = changed @ src.affine[:3, :3].T + src.affine[:3, 3]
        dist, _ = tree.query(_native_to_template(out, row["participant_id"])(world))
        assert dist.max() <= SUPPORT + 2.0
        assert len(changed) < 0.05 * a.size


def test_syn_registration_recovers_the_planted_log_jacobian(spiked, tmp_path):
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
    import ants

    from neurointerp.cli.app import main

    root, out, cohort, subjects = spiked
    row = cohort[cohort["label"] == "patient"].iloc[0]
    rec = subjects[subjects["participant_id"] == row["participant_id"]].iloc[0]
    spiked_path = out / row["image"]
    planted_img = nib.load(str(spiked_path).replace("_desc-spikein_T1w", "_desc-planted_logjacobian"))
    planted = planted_img.get_fdata()
    # both images cropped to the deformed part (plus 8 voxels): SyN on the whole head costs minutes here
    idx = np.argwhere(planted != 0)
    lo, hi = np.maximum(idx.min(axis=0) - 8, 0), np.minimum(idx.max(axis=0) + 9, planted.shape)
    crops = []
    for path in (rec["source_image"], spiked_path):
        c = nib.load(str(path)).slicer[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        p = tmp_path / f"crop{len(crops)}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(c.dataobj, np.float32), c.affine), str(p))
        crops.append(p)
    reg = ants.registration(ants.image_read(str(crops[0])), ants.image_read(str(crops[1])), type_of_transform="SyNOnly", initial_transform="Identity",
                            syn_metric="CC", syn_sampling=2, reg_iterations=(60, 40, 20), outprefix=str(tmp_path / "syn_"), random_seed=1)
    warp = next(p for p in reg["fwdtransforms"] if p.endswith("Warp.nii.gz"))
    assert main(["jacobian", warp, str(tmp_path / "jac")]) == 0
    recovered = nib.load(str(next((tmp_path / "jac").glob("*_logjacobian.nii.gz")))).get_fdata()
    truth = planted[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    inside = truth != 0
    r = np.corrcoef(recovered[inside], truth[inside])[0, 1]
    print(f"SyN log-Jacobian vs planted: r = {r:.3f} over {int(inside.sum())} voxels")
    assert r >= 0.8, r
    assert np.polyfit(truth[inside], recovered[inside], 1)[0] > 0.5  # the right sign and most of the size


def test_truth_lines_up_with_the_atlas_regions(spiked):
    from scipy import ndimage

    from neurointerp.atlases import grid_points, load_atlas

    root, out, cohort, subjects = spiked
    lj_img = nib.load(str(out / "truth" / f"space-{SPACE}_desc-disease_logjacobian.nii.gz"))
    lj = lj_img.get_fdata()
    conf = nib.load(str(out / "truth" / f"space-{SPACE}_desc-confounder_logjacobian.nii.gz")).get_fdata()
    labels, table = load_atlas("HarvardOxford", lj.shape, lj_img.affine)  # the atlas resampled independently
    index = {n: i for i, n in table.items()}
    x = grid_points(lj.shape, lj_img.affine)[:, 0].reshape(lj.shape)
    for name in REGIONS:
        region = labels == index[name]
        assert lj[region].mean() < -0.2 and np.abs(conf[region]).mean() < 0.1 * abs(lj[region].mean())  # the thalamus' shell reaches in a little
        # the truth's atrophy core on this side (RAS x < 0 is left) sits on the region
        core = (lj < -0.25) & ((x < 0) if name.startswith("Left") else (x > 0))
        assert core.sum() > 10 and region[core].mean() > 0.6
    thal = labels == index["Left_Thalamus"]
    assert conf[thal].mean() < -0.1 and np.abs(lj[thal]).mean() < 0.25 * abs(conf[thal].mean())  # the hippocampal tail is near
    assert thal[conf < -0.1].mean() > 0.6
    # nothing planted farther than the support from the regions (distance on the truth grid, mm)
    vox = float(np.sqrt((lj_img.affine[:3, :3] ** 2).sum(axis=0)).max())
    hippo = np.isin(labels, [index[n] for n in REGIONS])
    dist = ndimage.distance_transform_edt(~hippo, sampling=vox)
    assert np.all(lj[dist > SUPPORT + 2 * vox] == 0) and np.any(lj[dist > 8.0] > 0)  # the balancing shell is there


def test_preprocess_of_a_spiked_image_shows_the_planted_change(spiked, tmp_path):
    """The whole chain: preprocess of a spiked image differs from the original's preprocessed image as
    that image warped by the planted template-space deformation would (and not as the opposite warp)."""
    from scipy import ndimage

    from neurointerp.atlases import grid_points
    from neurointerp.preprocess import run_preprocess
    from neurointerp.synth.spikein import atlas_regions, build_field

    root, out, cohort, subjects = spiked
    row = cohort[cohort["label"] == "patient"].iloc[0]
    pid = row["participant_id"]
    one = tmp_path / "one.csv"
    pd.DataFrame([{"participant_id": pid, "image": str(out / row["image"])}]).to_csv(one, index=False)
    run_preprocess(one, tmp_path / "pre", qc=False, threads=2)
    from neurointerp.atlases import working_grid
    from neurointerp.io import resolution_label

    res = resolution_label(working_grid(shape=(64, 64, 64))[1])  # both runs on the default grid
    name = f"sub-{pid}/anat/sub-{pid}_space-{SPACE}_res-{res}_desc-preproc_T1w.nii.gz"
    after_img = nib.load(str(tmp_path / "pre" / name))
    after, before = after_img.get_fdata(), nib.load(str(out / "registration" / name)).get_fdata()
    rec = subjects.set_index("participant_id").loc[pid]
    disease, _ = build_field(atlas_regions("HarvardOxford", REGIONS, "disease"), -0.4, 3.0, SUPPORT)
    confounder, _ = build_field(atlas_regions("HarvardOxford", ["Left_Thalamus"], "confounder"), -0.2, 3.0, SUPPORT)
    field = disease.scaled(rec["severity"]) + confounder.scaled(rec["covariate"])
    pts = grid_points(after.shape, after_img.affine)
    sup = field.in_support(pts)
    inv = np.linalg.inv(after_img.affine)
    brain = ((after != 0) & (before != 0)).reshape(-1)
    predicted = {}
    for direction, where in (("planted", field.inverse(pts[sup])), ("opposite", pts[sup] + field.displacement(pts[sup]))):
        warped = before.reshape(-1).copy()
        warped[sup] = ndimage.map_coordinates(before, (where @ inv[:3, :3].T + inv[:3, 3]).T, order=3, mode="nearest")
        predicted[direction] = warped - before.reshape(-1)
    change = (after - before).reshape(-1)
    m = sup & brain
    r_planted, r_opposite = (np.corrcoef(change[m], predicted[k][m])[0, 1] for k in ("planted", "opposite"))
    print(f"preprocessed change vs the planted warp: r = {r_planted:.3f} (opposite warp: {r_opposite:.3f})")
    assert r_planted > 0.6 and r_opposite < 0
    # far from the regions the preprocessed images agree (up to the z-scoring and the re-estimated affine)
    assert np.corrcoef(after.reshape(-1)[brain & ~sup], before.reshape(-1)[brain & ~sup])[0, 1] > 0.99
