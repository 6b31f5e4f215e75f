"""Reference images: subjects whose images a method puts in place of the explained one.

The swap test (:mod:`neurointerp.attribution.swap`) replaces a region by the same region of
subjects of another class; ``gradient-shap --baseline reference`` draws its baselines from
them. ``saliency``/``evaluate`` build one :class:`ReferenceSet` per run from a cohort table
with labels -- ``--reference table.csv``, by default the cohort being explained -- on the
model's grid, prepared exactly like the explained images (normalisation, crop):

* at most ``max_images`` (default 64) subjects, drawn at random (``seed``) within each label so
  that every class keeps its share; memory stays bounded for large cohorts;
* labels are mapped to the model's class indices; a label the model does not know is refused,
  naming the row;
* the participant ids go into each map's sidecar, so a map can be traced to the images used.

The set is passed to :func:`neurointerp.attribution.registry.attribute` as
``reference=ReferenceSet(...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neurointerp.errors import InputError

MAX_IMAGES = 64


@dataclass
class ReferenceSet:
    """Model-ready reference images ``(R, C, *spatial)``, class indices ``(R,)`` and their ids."""

    images: "object"  # torch.Tensor
    labels: "object"  # torch.Tensor (long); -1 where unknown (regression)
    ids: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])


def choose_rows(labels: list[str], max_images: int, seed: int) -> list[int]:
    """Row indices, at most ``max_images``, stratified by label (sorted, deterministic)."""
    if len(labels) <= max_images:
        return list(range(len(labels)))
    rng = np.random.default_rng(int(seed))
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    quota = {lab: max(1, int(round(max_images * len(rows) / len(labels)))) for lab, rows in groups.items()}
    while sum(quota.values()) > max_images:  # rounding: trim the largest
        big = max(quota, key=quota.get)
        quota[big] -= 1
    chosen: list[int] = []
    for lab, rows in groups.items():
        chosen.extend(rng.choice(rows, size=min(quota[lab], len(rows)), replace=False).tolist())
    return sorted(chosen)


def load_reference(clf, table, max_images: int = MAX_IMAGES, seed: int = 0) -> ReferenceSet:
    """Reference set from a cohort table (a path or a read :class:`~neurointerp.io.cohort.Cohort`)."""
    import torch

    from neurointerp.io import read_cohort

    if not hasattr(table, "frame"):
        table = read_cohort(table, require_label=True, min_classes=1)
    if not table.has_label:
        raise InputError(f"{table.path}: reference images need a '{table.label_column}' column (the swap test takes images of another class)")
    labels = [str(v) for v in table.frame[table.label_column]]
    rows = choose_rows(labels, max_images, seed)
    idx = []
    for i in rows:
        if clf.task == "regression":
            idx.append(-1)
            continue
        if labels[i] not in clf.classes:
            raise InputError(f"{table.path} row {table.row_of(i)}: label '{labels[i]}' is not a class of the model ({', '.join(clf.classes)})")
        idx.append(clf.classes.index(labels[i]))
    vols = [clf.spec.load_row(table, i).data for i in rows]
    images = clf.prepare(np.stack(vols))
    ids = [str(table.participant_ids[i]) for i in rows]
    return ReferenceSet(images=images, labels=torch.as_tensor(idx, dtype=torch.long), ids=ids, source=str(table.path))
