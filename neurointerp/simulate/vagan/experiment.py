"""VA-GAN on synthetic lesions: the VA-GAN row of the ICAM paper's comparison (Table 3; §4.1 metric).

:func:`evaluate_vagan` scores a VA-GAN trained lesion -> healthy (the paper's one direction) on
held-out images with ground-truth lesion masks: NCC(-) is the NCC of ``|M(x)|`` with the subject's
own lesion mask on lesion images (as ICAM's NCC(-)); NCC(+) is not defined (no healthy -> lesion
map is trained: "N/A" in the paper's Table 3). As a chance level, the same maps are scored against
the masks of *other* lesion subjects (shuffled), which keeps the population's lesion sites but
not the subject's own lesions. :func:`lesion_experiment_vagan` runs synth -> train -> evaluate.
"""

from __future__ import annotations

import time

import numpy as np


def _ncc_rows(maps, truths):
    from neurointerp.evaluate.metrics import ncc

    vals = np.array([ncc(np.abs(m), t) for m, t in zip(maps, truths)])
    vals = vals[np.isfinite(vals)]
    return {"mean": float(vals.mean()) if len(vals) else float("nan"), "sd": float(vals.std()) if len(vals) else float("nan"), "n": int(len(vals))}


def shuffled(masks: np.ndarray, seed: int = 0) -> np.ndarray:
    """The masks in a random order in which no subject keeps its own (a derangement)."""
    n = len(masks)
    base = np.random.default_rng(seed).permutation(n)
    order = np.empty(n, dtype=int)
    order[base] = base[np.roll(np.arange(n), 1)]  # one cycle through all subjects: nobody keeps its own
    return masks[order]


def evaluate_vagan(model, x, labels, masks, *, source: int = 1, seed: int = 0) -> dict:
    """NCC(-) of ``|M(x)|`` with the own lesion masks on source-class (lesion) images, its chance
    level with shuffled masks, and the map size on source vs other-class images.

    ``x``: model inputs ``(N, 1, *S)``; ``labels`` ``(N,)`` 0 healthy / 1 lesion; ``masks``
    ``(N, *S)`` bool; ``source``: the class the model maps from (1: lesion -> healthy).
    """
    from neurointerp.simulate.vagan.apply import vagan_maps

    labels = np.asarray(labels).astype(int)
    masks = np.asarray(masks).astype(np.float32)
    res = vagan_maps(model, x)
    src = labels == source
    maps = res["map"]
    return {
        "ncc": {"vagan": {"ncc_minus": _ncc_rows(maps[src], masks[src]), "ncc_plus": {"mean": float("nan"), "sd": float("nan"), "n": 0}}},
        "ncc_minus_chance": _ncc_rows(maps[src], shuffled(masks[src], seed)),
        "map_l1": {"source": float(np.abs(maps[src]).mean()), "other": float(np.abs(maps[~src]).mean())},
        "critic_gain": float((res["critic_translated"][src] - res["critic_input"][src]).mean()),
        "n_test": {"source": int(src.sum()), "other": int((~src).sum())},
    }


def lesion_experiment_vagan(
    *,
    n_per_group: int = 128,
    n_test_per_group: int = 64,
    size: int = 32,
    polarity: str = "bright",
    epochs: int = 30,
    batch_size: int = 16,
    channels: int = 8,
    lr: float = 1e-3,
    lambdas: dict | None = None,
    critic_iters: int = 5,
    critic_iters_long: int = 25,
    warmup: int = 25,
    seed: int = 0,
    device=None,
) -> dict:
    """Synthetic lesions in memory (the same cohorts as :func:`~neurointerp.simulate.icam.experiment.lesion_experiment`
    for the same seed) -> train VA-GAN lesion -> healthy -> :func:`evaluate_vagan` on a held-out set."""
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.vagan.train import fit_vagan
    from neurointerp.synth.lesions import make_lesions

    train = make_lesions(n_per_group=n_per_group, size=size, polarity=polarity, seed=seed)
    test = make_lesions(n_per_group=n_test_per_group, size=size, polarity=polarity, seed=seed + 1000)
    spec = InputSpec((size, size), train.affine, normalize="zscore")
    t0 = time.perf_counter()
    model, history = fit_vagan(spec.prepare(train.images), train.labels, source=1, channels=channels, epochs=epochs, batch_size=batch_size, lr=lr,
                               lambdas=lambdas, critic_iters=critic_iters, critic_iters_long=critic_iters_long, warmup=warmup, seed=seed, device=device)
    train_s = time.perf_counter() - t0
    model = model.cpu()
    t0 = time.perf_counter()
    scores = evaluate_vagan(model, spec.prepare(test.images), test.labels, test.masks, source=1, seed=seed)
    return {
        **scores,
        "train_seconds": round(train_s, 2),
        "evaluate_seconds": round(time.perf_counter() - t0, 2),
        "final_epoch": history[-1],
        "config": {"n_per_group": n_per_group, "n_test_per_group": n_test_per_group, "size": size, "polarity": polarity, "epochs": epochs, "batch_size": batch_size,
                   "channels": channels, "lr": lr, "lambdas": lambdas, "critic_iters": critic_iters,
                   "critic_iters_long": critic_iters_long, "warmup": warmup, "seed": seed},
    }
