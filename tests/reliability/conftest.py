"""Shared, session-scoped good inputs for the reliability tests (tiny: 8 mm synth brains, 20x25x22).

``world`` builds once per session: a template-space cohort with a classifier, a simulator and a
displacement field, and a native-space cohort for ``preprocess``; for ``segment-bg`` a synth
rodent cohort (16x16x12, slices along the third axis) with a 1-epoch segmenter and one trained on
20x20 slices (another grid); for ``simulate --method icam`` a 2D synth lesions cohort (24x24x1)
with a 1-epoch ICAM and one trained on 32x32 (another grid), and the same for VA-GAN. Every bad input of the
corpus is derived from these at test time (no binary file is committed).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@dataclass
class World:
    root: Path
    native_cohort: Path  # participant_id, image (native T1w), label, age, sex, template_image
    cohort: Path  # participant_id, image (template grid), label, age, sex
    maps_table: Path  # participant_id, map, label, age, sex (group-map)
    classifier: Path
    classifier_other_grid: Path
    simulator: Path
    field: Path
    fields_table: Path  # participant_id, field
    shape: tuple
    affine: np.ndarray
    rodent_cohort: Path  # participant_id, image, masked, labels, mask, ... (segment-bg)
    segmenter: Path
    segmenter_other_grid: Path
    lesions_cohort: Path  # participant_id, image (S x S x 1), label, mask, n_lesions (ICAM)
    icam: Path
    icam_other_grid: Path
    vagan: Path  # 1-epoch VA-GAN on the lesions cohort (24x24)
    vagan_other_grid: Path  # ... on 32x32


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    import pandas as pd
    import torch

    from neurointerp.io import load_image, read_cohort
    from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
    from neurointerp.models.classifier import ConvClassifier
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.train import train_simulator
    from neurointerp.segment_bg.train import run_train as train_segmenter
    from neurointerp.simulate.icam.train import train_icam
    from neurointerp.simulate.vagan.train import train_vagan
    from neurointerp.simulate.warp import save_field
    from neurointerp.synth.brain import SPACE, synth_brain
    from neurointerp.synth.lesions import synth_lesions
    from neurointerp.synth.rodent import synth_rodent

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reliability")
    data = root / "data"
    synth_brain(data, n_subjects=8, voxel_size=8.0, effect_size=3.0, confound_strength=0.0, noise=0.0, template_space=True, seed=3)
    frame = read_cohort(data / "cohort.csv").frame.copy()
    frame["image"] = [str(data / p) for p in frame["template_image"]]
    frame = frame.drop(columns=["template_image"])
    cohort = root / "cohort.csv"
    frame.to_csv(cohort, index=False)
    maps = frame.rename(columns={"image": "map"})
    maps_table = root / "maps.csv"
    maps.to_csv(maps_table, index=False)

    vol = load_image(frame["image"].iloc[0])
    spec = InputSpec(vol.shape, vol.affine, space=SPACE, normalize="zscore")
    torch.manual_seed(0)
    model = ConvClassifier(spec.model_shape, channels=(2,), hidden=())
    classifier = save_checkpoint(root / "clf.pt", checkpoint_dict(model, spec, "binary", ["control", "patient"], "simnet3d", {}, {}))
    other = InputSpec((16, 16, 16), vol.affine, space=SPACE, normalize="zscore")
    torch.manual_seed(0)
    model2 = ConvClassifier(other.model_shape, channels=(2,), hidden=())
    other_path = save_checkpoint(root / "clf16.pt", checkpoint_dict(model2, other, "binary", ["control", "patient"], "simnet3d", {}, {}))
    simulator = train_simulator(cohort, classifier, root / "sim", mode="warp", delta=1.0, channels=[2, 4], fc=8, epochs=1, batch_size=4, threads=1, allow_unvalidated=True)

    rng = np.random.default_rng(0)
    field = save_field(0.3 * rng.standard_normal((3, *vol.shape)).astype(np.float32), vol.affine, root / "fields" / "sub-01_xfm.nii.gz")
    fields_table = root / "fields" / "fields.tsv"
    pd.DataFrame({"participant_id": ["01", "02", "03", "04"], "field": [field.name] * 4}).to_csv(fields_table, sep="\t", index=False)

    tiny_unet = dict(epochs=1, base=4, depth=2, batch_size=4, threads=1, seed=0)
    rodent = synth_rodent(root / "rodent", n_animals=4, shape=(16, 16, 12), max_shift=1, seed=0)
    segmenter = train_segmenter(rodent, root / "seg", **tiny_unet)
    rodent20 = synth_rodent(root / "rodent20", n_animals=3, shape=(20, 20, 4), max_shift=1, seed=1)
    segmenter20 = train_segmenter(rodent20, root / "seg20", **tiny_unet)
    tiny_icam = dict(epochs=1, batch_size=4, channels=2, threads=1, seed=0)
    lesions = synth_lesions(root / "lesions", n_per_group=2, size=24, voxel_size=2.0, seed=0)
    icam = train_icam(lesions, root / "icam", **tiny_icam)
    lesions32 = synth_lesions(root / "lesions32", n_per_group=2, size=32, voxel_size=2.0, seed=1)
    icam32 = train_icam(lesions32, root / "icam32", **tiny_icam)
    tiny_vagan = dict(epochs=1, batch_size=2, channels=2, critic_iters=1, threads=1, seed=0)
    vagan = train_vagan(lesions, root / "vagan", **tiny_vagan)
    vagan32 = train_vagan(lesions32, root / "vagan32", **tiny_vagan)
    return World(
        root=root,
        native_cohort=data / "cohort.csv",
        cohort=cohort,
        maps_table=maps_table,
        classifier=classifier,
        classifier_other_grid=other_path,
        simulator=Path(simulator),
        field=field,
        fields_table=fields_table,
        shape=vol.shape,
        affine=vol.affine,
        rodent_cohort=Path(rodent),
        segmenter=Path(segmenter),
        segmenter_other_grid=Path(segmenter20),
        lesions_cohort=Path(lesions),
        icam=Path(icam),
        icam_other_grid=Path(icam32),
        vagan=Path(vagan),
        vagan_other_grid=Path(vagan32),
    )
