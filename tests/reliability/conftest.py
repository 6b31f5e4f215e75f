"""Shared, session-scoped good inputs for the reliability tests (tiny: 8 mm synth brains, 20x25x22).

``world`` builds once per session: a template-space cohort with a classifier, a simulator and a
displacement field, and a native-space cohort for ``preprocess``. Every bad input of the
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


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    import pandas as pd
    import torch

    from neurointerp.io import load_image, read_cohort
    from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
    from neurointerp.models.classifier import ConvClassifier
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.train import train_simulator
    from neurointerp.simulate.warp import save_field
    from neurointerp.synth.brain import SPACE, synth_brain

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
    simulator = train_simulator(cohort, classifier, root / "sim", mode="warp", delta=1.0, channels=[2, 4], fc=8, epochs=1, batch_size=4, threads=1)

    rng = np.random.default_rng(0)
    field = save_field(0.3 * rng.standard_normal((3, *vol.shape)).astype(np.float32), vol.affine, root / "fields" / "sub-01_xfm.nii.gz")
    fields_table = root / "fields" / "fields.tsv"
    pd.DataFrame({"participant_id": ["01", "02", "03", "04"], "field": [field.name] * 4}).to_csv(fields_table, sep="\t", index=False)
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
    )
