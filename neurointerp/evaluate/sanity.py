"""Sanity checks: does a map depend on the model at all, and on which model?

* :func:`cascading_randomisation` (Adebayo et al. 2018): re-initialise the parameterised layers
  from the output down, one more at each step, recompute the maps and report the Spearman rank
  correlation of |map| with the original inside the brain. A method whose maps stay similar
  (rho > 0.5) once the whole predictor -- every fully connected layer, i.e. everything the
  model learned about the classes on top of its features -- is random explains the input
  rather than the model, and is flagged (guided backprop and gradient x input typically are).
* :func:`retraining_robustness` (Eitel & Ritter, interpretability-review §3.7.1): maps of the
  same subjects from models trained with other seeds or folds; pairwise Pearson correlation of
  the maps and Dice overlap of their top-``top`` fraction of voxels.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy import stats
from torch import nn


def parameterised_layers(model: nn.Module) -> list[str]:
    """Names of the layers with weights, from the output back to the input."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    return names[::-1]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def cascading_randomisation(explain_with, model: nn.Module, x: torch.Tensor, mask: np.ndarray, seed: int = 0, flag_threshold: float = 0.5):
    """Returns ``(layers, correlations (steps,), flagged, flag_step)``.

    ``explain_with(model, x)`` computes maps ``(N, *spatial)`` (numpy) with a given model;
    correlations are means over subjects of the Spearman correlation of |map| inside ``mask``.
    """
    layers = parameterised_layers(model)
    original = np.abs(explain_with(model, x))
    rand = copy.deepcopy(model)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    corr = []
    try:
        for name in layers:
            rand.get_submodule(name).reset_parameters()
            maps = np.abs(explain_with(rand, x))
            per = [_spearman(original[i][mask[i]], maps[i][mask[i]]) for i in range(len(x))]
            corr.append(float(np.nanmean(per)) if np.any(np.isfinite(per)) else float("nan"))
    finally:
        torch.random.set_rng_state(gen_state)
    n_top = sum(isinstance(model.get_submodule(n), nn.Linear) for n in layers) or len(layers)
    flag_step = n_top - 1  # the step at which the whole predictor is random
    value = corr[flag_step] if corr else float("nan")
    flagged = bool(np.isfinite(value) and value > flag_threshold)
    return layers, np.asarray(corr), flagged, flag_step


def retraining_robustness(maps_per_model: list[np.ndarray], mask: np.ndarray, top: float = 0.1) -> dict[str, float]:
    """Mean pairwise correlation and top-voxel Dice between models' maps ``(N, *spatial)`` each."""
    k = len(maps_per_model)
    corrs, dices = [], []
    for a in range(k):
        for b in range(a + 1, k):
            for i in range(len(maps_per_model[a])):
                ma = np.abs(maps_per_model[a][i])[mask[i]]
                mb = np.abs(maps_per_model[b][i])[mask[i]]
                if np.ptp(ma) > 0 and np.ptp(mb) > 0:
                    corrs.append(float(np.corrcoef(ma, mb)[0, 1]))
                n = max(1, int(round(top * ma.size)))
                ta = set(np.argsort(ma)[-n:])
                tb = set(np.argsort(mb)[-n:])
                dices.append(2 * len(ta & tb) / (len(ta) + len(tb)))
    return {"retrain_correlation": float(np.mean(corrs)) if corrs else float("nan"), "retrain_top_dice": float(np.mean(dices)) if dices else float("nan"), "retrain_models": k}
