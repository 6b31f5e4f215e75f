"""Swap test (Nigri et al. 2020; interpretability-review §3.4.2 and §3.7.1).

Instead of greying a region out, the region is replaced by the *same region of a subject of
another class* (the images are registered, so a region sits at the same place in every
image); the map is the drop of the explained score,
``s(x) - s(x with the region taken from reference r)``, averaged over the references. The
swapped image stays inside the training distribution region by region, which a constant fill
does not (the review's §3.4 objection to standard perturbation), and Nigri et al. found its maps
continuous and sensitive where occlusion's were not.

Regions: ``swap_by="window"`` -- a cube of ``window`` voxels moved by ``stride`` (like occlusion:
each voxel gets the mean drop of the windows covering it, windows outside the brain mask are
skipped, and conv/pool classifiers run incrementally); ``swap_by="atlas"`` -- each atlas
region in turn.

References ("chosen according to the model prediction", review §3.4.2): for a subject explained
for class ``t``, the candidates are the reference subjects whose label is not ``t`` *and* whom the
model does not predict as ``t``; the ``swap_references`` candidates with the lowest score for
``t`` (the most clearly other-class ones) are used. A reference identical to the explained
image is skipped. See :mod:`neurointerp.attribution.reference` for where they come from.
"""

from __future__ import annotations

import torch

from neurointerp.attribution.core import predicted_targets, target_scores
from neurointerp.attribution.perturbation import occlusion, region_perturbation
from neurointerp.errors import InputError

SWAP_BY = ("window", "atlas")


def choose_references(model, x, targets, reference, k: int, task: str = "binary", score: str = "logit", batch_size: int = 32) -> list[list[int]]:
    """For each sample, indices into ``reference`` of its ``k`` swap partners (see module doc)."""
    if task == "regression":
        raise InputError("the swap test needs classes (images of another class); this is a regression model")
    if reference is None or len(reference) == 0:
        raise InputError("the swap test needs reference images of another class (--reference, or a cohort with labels)")
    if k < 1:
        raise InputError("--swap-references must be at least 1")
    refs = reference.images.to(x.device, x.dtype)
    labels = reference.labels.to(x.device)
    with torch.inference_mode():
        outputs = torch.cat([model(refs[i : i + batch_size]) for i in range(0, len(refs), batch_size)])
    predicted = predicted_targets(outputs)
    chosen = []
    for i in range(len(x)):
        t = int(targets[i])
        with torch.inference_mode():
            s_t = target_scores(outputs, torch.full((len(refs),), t, device=x.device, dtype=torch.long), task=task, score=score)
        ok = (labels != t) & (labels >= 0) & (predicted != t)
        ok &= ~torch.tensor([torch.equal(refs[r], x[i]) for r in range(len(refs))], dtype=torch.bool, device=x.device)
        idx = torch.nonzero(ok).flatten()
        if len(idx) == 0:
            raise InputError(f"no reference image is labelled and predicted as another class than class {t}: the swap test has nothing to swap in (give --reference with such subjects)")
        order = idx[torch.argsort(s_t[idx], stable=True)]
        chosen.append([int(r) for r in order[:k]])
    return chosen


def swap_test(
    f,
    x,
    targets,
    model,
    reference=None,
    swap_by: str = "window",
    window: int = 8,
    stride: int = 4,
    swap_references: int = 4,
    regions=None,
    mask=None,
    task: str = "binary",
    score: str = "logit",
    chosen: list[list[int]] | None = None,
    batch_size: int = 32,
):
    """Swap-test maps ``(N, C, *spatial)``; ``chosen`` (from :func:`choose_references`) is computed if not given."""
    if swap_by not in SWAP_BY:
        raise InputError(f"unknown --swap-by '{swap_by}' (choose {', '.join(SWAP_BY)})")
    if swap_by == "atlas" and regions is None:
        raise InputError("the swap test by atlas region needs an atlas (--atlas)")
    if chosen is None:
        chosen = choose_references(model, x, targets, reference, swap_references, task=task, score=score)
    refs = reference.images.to(x.device, x.dtype)
    out = torch.zeros_like(x)
    n_used = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    depth = max(len(c) for c in chosen)
    for j in range(depth):
        have = [i for i in range(len(x)) if len(chosen[i]) > j]
        sub = torch.tensor(have, device=x.device)
        content = refs[[chosen[i][j] for i in have]]
        xs, ts = x[sub], targets[sub]
        if swap_by == "window":
            m = None if mask is None else (mask[have] if getattr(mask, "ndim", 0) == x.ndim - 1 else mask)
            maps = occlusion(f, xs, ts, window=window, stride=stride, fill=content, mask=m, batch_size=batch_size, model=model, task=task, score=score)
        else:
            maps = region_perturbation(f, xs, ts, regions, fill=content, batch_size=batch_size)[0]
        out[sub] += maps
        n_used[sub] += 1
    return out / n_used.reshape(-1, *([1] * (x.ndim - 1)))
