"""Attention maps of an attention-gated model (intrinsic interpretability, review §2.6.1).

The maps are the attention that the model itself computed and used to weight its features
(:mod:`neurointerp.models.attention`): the coefficients ``a_u`` of a gate, read from its sigmoid
module during one forward pass, divided by their mean over the gate's grid, and upsampled
(tri)linearly to the input grid (as Grad-CAM). The attended descriptor is
``sum_u a_u l_u / sum_u a_u``, so the scale of ``a`` means nothing to the model; ``a_u / mean(a)``
is the weight position ``u`` gets relative to plain average pooling (1 everywhere = no
attention), comparable between gates and subjects. Raw coefficients would mislead: on
``synth brain`` a trained model's stack-2 gate sat at 0.60-0.68 everywhere (no selection) while
its stack-3 gate was below 0.08 everywhere but 48x higher on the planted atrophy than elsewhere;
their raw mean showed the flat gate.

``layer`` picks one gate (``encoder.gate2``; ``gate2`` is accepted); by default the gates'
normalised maps are averaged after upsampling. The maps do not depend on the target class (the
gates see no class), and no gradient is involved: a confounder gate cannot act on them.
"""

from __future__ import annotations

import torch
from torch import nn

from neurointerp.attribution.core import chunks
from neurointerp.attribution.layers import to_input_grid
from neurointerp.errors import InputError

REFUSAL = "attention needs a model with attention gates (train --architecture attention3d or attention2d); this model has none -- use gradcam"


def gate_modules(model: nn.Module, layer: str | None = None) -> list[str]:
    """Module names of the gates whose maps are read (``encoder.gate<k>``)."""
    gates = model.attention_gates() if hasattr(model, "attention_gates") else []
    if not gates:
        raise InputError(REFUSAL)
    if layer is None:
        return list(gates)
    name = str(layer)
    for g in gates:
        if name in (g, g.split(".", 1)[1], f"{g}.attn"):
            return [g]
    raise InputError(f"--layer '{layer}' is not an attention gate of this model (gates: {', '.join(gates)})")


def attention_maps(f, x: torch.Tensor, targets: torch.Tensor, model: nn.Module, layer: str | None = None, batch_size: int = 16) -> torch.Tensor:
    """Attention maps ``(N, 1, *spatial)`` on the input grid: coefficients over their mean (>= 0)."""
    gates = gate_modules(model, layer)
    mods = [model.get_submodule(f"{g}.attn") for g in gates]
    out = torch.empty_like(x[:, :1])
    for sl in chunks(len(x), batch_size):
        store: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda mod, i, o: store.append(o)) for m in mods]
        try:
            with torch.inference_mode():
                model(x[sl])
        finally:
            for h in handles:
                h.remove()
        if len(store) != len(mods):
            raise InputError("the attention gates did not run exactly once in the forward pass")
        rel = [a.float() / a.float().flatten(1).mean(1).clamp_min(1e-30).view(-1, *([1] * (a.ndim - 1))) for a in store]
        up = [to_input_grid(r, x.shape[2:]) for r in rel]
        out[sl] = torch.stack(up).mean(dim=0)
    return out
