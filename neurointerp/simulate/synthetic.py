"""The synthetic experiment of papers/simulator-networks-jacobian.txt §4.1 (Fig. 3e).

:func:`gaussian_experiment` generates the ``magnitude`` four-Gaussian cohort, trains the paper's
classifier (3 conv stacks 2/4/8, MLP 16) on 80 %, trains the simulator (image output, E_logit +
E_cycle, delta = 5) on the same training images, and scores on the held-out 20 % the
normalised cross-correlation (NCC) with each image's ground-truth pattern (3 x the off-diagonal
Gaussians) of:

* the simulator's difference image, oriented towards the disease: ``X - X_hat`` for a patient
  (pattern removed), ``X_hat - X`` for a control (pattern injected);
* gradient (BP), guided BP, Grad-CAM and guided Grad-CAM of the positive logit;
* optionally the simulator with conventional convolutions (``--no-condconv`` ablation).

NCC is computed per image on the signed map and on ``|map|``; the table holds the means.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BASELINES = ("gradient", "guided-backprop", "gradcam", "guided-gradcam")


def train_gaussian_classifier(x, y, epochs: int = 30, seed: int = 0, lr: float = 3e-3, batch_size: int = 32):
    """The §4.1 classifier (ConvClassifier 2/4/8 + 16) trained with BCE on ``x`` ``(N, 1, 32, 32)``."""
    import torch

    from neurointerp.models.classifier import ConvClassifier
    from neurointerp.train.arrays import fit_binary_on_arrays

    torch.manual_seed(seed)
    model = ConvClassifier((32, 32), channels=(2, 4, 8), hidden=(16,))
    yt = torch.as_tensor(y, dtype=torch.float32)
    return fit_binary_on_arrays(model, x, yt, epochs=epochs, batch_size=batch_size, lr=lr, generator=torch.Generator().manual_seed(seed))


def gaussian_experiment(
    n_per_group: int = 512,
    seed: int = 0,
    classifier_epochs: int = 30,
    simulator_epochs: int = 20,
    delta: float = 5.0,
    ablation: bool = False,
    **simulator_kw: Any,
) -> dict[str, Any]:
    """Run §4.1 in memory; returns ``{"ncc": {method: {"signed", "abs"}}, "accuracy", "shift", ...}``."""
    import torch

    from neurointerp.attribution import attribute
    from neurointerp.evaluate.metrics import ncc
    from neurointerp.simulate.train import fit_simulator
    from neurointerp.synth.gaussians import make_gaussians

    data = make_gaussians("magnitude", n_per_group, seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.labels))
    n_train = int(0.8 * len(order))
    tr, te = order[:n_train], order[n_train:]
    x = torch.from_numpy(data.images[:, None])
    y = data.labels
    model = train_gaussian_classifier(x[tr], y[tr], epochs=classifier_epochs, seed=seed)
    with torch.no_grad():
        logits = model(x)[:, 0].numpy()
    accuracy = float(((logits[te] > 0).astype(int) == y[te]).mean())
    xt, truth = x[te], data.truth[te]

    def score(maps):
        maps = np.asarray(maps, dtype=np.float64)
        signed = [ncc(m, t) for m, t in zip(maps, truth)]
        absolute = [ncc(np.abs(m), t) for m, t in zip(maps, truth)]
        return {"signed": float(np.nanmean(signed)), "abs": float(np.nanmean(absolute))}

    result: dict[str, Any] = {"accuracy": accuracy, "n_test": int(len(te)), "ncc": {}}
    variants = [("simulator", True)] + ([("simulator-conventional", False)] if ablation else [])
    for name, cond in variants:
        sim, history = fit_simulator(x[tr], y[tr], model, mode="image", delta=delta, condconv=cond, epochs=simulator_epochs, seed=seed, **simulator_kw)
        task = torch.as_tensor(y[te], dtype=torch.float32)
        with torch.no_grad():
            simulated, _ = sim(xt, task)
            cycled, _ = sim(simulated, 1 - task)
            p_raw, p_sim, p_cyc = (model(v)[:, 0].numpy() for v in (xt, simulated, cycled))
        diff = (xt - simulated)[:, 0].numpy()
        sign = np.where(y[te] == 1, 1.0, -1.0)[:, None, None]  # disease direction
        result["ncc"][name] = score(diff * sign)
        shift = (p_sim - p_raw) * np.where(y[te] == 1, -1.0, 1.0)
        result[name] = {
            "shift_ge_delta": float((shift >= delta).mean()),
            "median_shift": float(np.median(shift)),
            "cycle_logit_mae": float(np.abs(p_cyc - p_raw).mean()),
            "cycle_image_rmse": float(((cycled - xt) ** 2).mean().sqrt()),
            "history": history,
        }
    for method in BASELINES:
        maps, _ = attribute(model, xt, method, target=1)
        result["ncc"][method] = score(maps)
    return result
