"""What is being explained: the score of the target class, and helpers shared by the methods.

The *score* of a sample is the model output that the attribution explains:

* binary model (one logit ``z``): ``z`` for the positive class, ``-z`` for the negative class,
  so a map always explains the evidence *for* its target class;
* multi-class model: the logit of the target class;
* regression: the output.

With ``score="probability"`` the logit is passed through a sigmoid (binary) or softmax
(multi-class) first -- papers/confounder-aware-saliency.txt §2 differentiates the prediction
score s in [0, 1]. The default target is the predicted class (never "output 0", a bug of
ClinicaDL's ``interpret``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from neurointerp.errors import InputError

SCORES = ("logit", "probability")


def predicted_targets(output: torch.Tensor) -> torch.Tensor:
    """Predicted class per sample: ``logit > 0`` for one output, arg-max for several."""
    if output.shape[1] == 1:
        return (output[:, 0] > 0).long()
    return output.argmax(dim=1)


def resolve_targets(model: torch.nn.Module, x: torch.Tensor, target, task: str = "binary") -> torch.Tensor:
    """Targets as a ``(N,)`` long tensor: predicted class when ``target`` is None."""
    n = x.shape[0]
    if task == "regression":
        return torch.zeros(n, dtype=torch.long)
    if target is None:
        with torch.inference_mode():
            predicted = predicted_targets(model(x))
        # an inference tensor cannot be saved for backward (gather saves its index): clone it
        # outside inference mode. On CUDA .cpu() copied it anyway, so only CPU runs crashed.
        return predicted.cpu().clone()
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise InputError(f"{t.numel()} targets for {n} samples")
    return t


def target_scores(output: torch.Tensor, targets: torch.Tensor, task: str = "binary", score: str = "logit") -> torch.Tensor:
    """The ``(N,)`` score explained for each sample (see module docstring)."""
    if score not in SCORES:
        raise InputError(f"unknown score '{score}' (choose {', '.join(SCORES)})")
    targets = targets.to(output.device)
    if targets.is_inference() and torch.is_grad_enabled():
        targets = targets.clone()  # usable in backward (see resolve_targets)
    if task == "regression":
        return output[:, 0]
    if output.shape[1] == 1:
        z = output[:, 0]
        if score == "probability":
            p = torch.sigmoid(z)
            return torch.where(targets == 1, p, 1.0 - p)
        return torch.where(targets == 1, z, -z)
    if targets.max() >= output.shape[1] or targets.min() < 0:
        raise InputError(f"target class index out of range for a model with {output.shape[1]} outputs")
    if score == "probability":
        output = torch.softmax(output, dim=1)
    return output.gather(1, targets[:, None])[:, 0]


def score_function(model: torch.nn.Module, task: str = "binary", score: str = "logit") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def f(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return target_scores(model(x), targets, task=task, score=score)

    return f


def input_gradient(f, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d score / d input for a batch (each sample's score depends on its own input only)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        s = f(x, targets)
        (grad,) = torch.autograd.grad(s.sum(), x)
    return grad.detach()


def chunks(n: int, size: int) -> Sequence[slice]:
    size = max(1, int(size))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]
