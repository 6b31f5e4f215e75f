"""Partial back-propagation through unconfounded features (confounder-aware-saliency §2.2).

The paper refactorises the model with a layer ``L(x) = x * b + (1 - b) * y_i`` between encoder
and predictor, ``y_i`` being image i's own (pre-computed) features: confounded features keep
their value but pass no gradient. :func:`feature_gate` does the same with a forward hook on the
layer (the encoder by default) that returns ``x * b + stopgrad((1 - b) * x)``: at the image
itself ``stopgrad(x) = y_i``, so value and gradient equal the paper's (tested), and along the
paths of integrated gradients or the noisy copies of SmoothGrad the confounded features follow
the image that is being differentiated instead of a stale constant. Every gradient-based
attribution method run inside the context is confounder-free.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from neurointerp.attribution.names import METHOD_NAMES, NOT_GATEABLE
from neurointerp.errors import InputError

# every method that back-propagates a gradient (perturbations, LRP, DeepLIFT and attention maps cannot be gated)
GRADIENT_METHODS = tuple(m for m in METHOD_NAMES if m not in NOT_GATEABLE)


def layer_module(model: nn.Module, layer: str | None) -> nn.Module:
    if layer is None:
        if not hasattr(model, "encoder"):
            raise InputError("the model has no encoder -> predictor boundary; pass --layer")
        return model.encoder
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise InputError(f"no layer '{layer}' in the model") from None


@contextlib.contextmanager
def feature_gate(model: nn.Module, mask, layer: str | None = None):
    """Within the context, gradients flow only through features with ``mask == 1``."""
    module = layer_module(model, layer)
    b = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    if b.ndim != 1 or not torch.all((b == 0) | (b == 1)):
        raise InputError("the confounder mask must be a vector of 0/1")

    def hook(mod, inputs, output):
        flat = output.reshape(output.shape[0], -1)
        if flat.shape[1] != b.numel():
            raise InputError(f"confounder mask has {b.numel()} entries but layer '{layer or 'encoder'}' has {flat.shape[1]} features")
        g = b.to(flat.device, flat.dtype)
        gated = flat * g + (flat * (1.0 - g)).detach()
        return gated.reshape(output.shape)

    handle = module.register_forward_hook(hook)
    try:
        yield module
    finally:
        handle.remove()


def layer_features(model: nn.Module, x: torch.Tensor, layer: str | None = None, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Flattened features of ``layer`` (default: the encoder output) and the model outputs."""
    module = layer_module(model, layer)
    feats, outs = [], []
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("f", o))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                out = model(x[start : start + batch_size])
                feats.append(store["f"].reshape(out.shape[0], -1).float().cpu().numpy())
                outs.append(out.float().cpu().numpy())
    finally:
        handle.remove()
        model.train(was_training)
    return np.concatenate(feats), np.concatenate(outs)


def check_mask_fits(model: nn.Module, x: torch.Tensor, mask, gate_layer: str | None, source, model_source) -> None:
    """Refuse a mask whose length is not the number of features of ``gate_layer`` (another model's
    mask), once, before any subject; :func:`feature_gate` makes the same comparison per call."""
    n_features = layer_features(model, x, gate_layer)[0].shape[1]
    if n_features != len(mask):
        raise InputError(f"{source}: {len(mask)} features, but layer '{gate_layer or 'encoder'}' of {model_source} has {n_features} "
                         "(a mask from confound-test of another model?)")


def check_gate_reaches(model: nn.Module, x: torch.Tensor, methods, layer: str | None, gate_layer: str | None) -> None:
    """Refuse a method whose map the gate cannot change, naming the layers (a silent copy otherwise).

    The gate stops gradients at the output of ``gate_layer``. Grad-CAM reads activations and
    gradients at its layer (``--layer``, default the last spatial one) and CAM at the global
    average pooling: when that layer finishes at or after the gated one, its gradient does not
    pass the gate and the "confounder-free" map equals the full map bit for bit.
    """
    readers = {}
    if "gradcam" in methods:
        from neurointerp.attribution.gradcam import default_layer

        readers["Grad-CAM"] = layer or default_layer(model, x)
    if "cam" in methods and hasattr(getattr(model, "encoder", None), "gap"):
        readers["CAM"] = next(n for n, m in model.named_modules() if m is model.encoder.gap)
    if not readers:
        return
    gate = gate_layer or next(n for n, m in model.named_modules() if m is layer_module(model, None))
    from neurointerp.attribution.layers import completion_order

    order = completion_order(model, x)
    for method, read_at in readers.items():
        if read_at in order and gate in order and order.index(read_at) >= order.index(gate):
            before = [n for n in order[: order.index(gate)] if isinstance(model.get_submodule(n), (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.LeakyReLU, nn.ELU))]
            hint = f" (e.g. --layer {before[-1]})" if before and method == "Grad-CAM" else ""
            raise InputError(
                f"--confounder-mask gates layer '{gate}', but {method} reads layer '{read_at}', which comes at or after it: partial "
                f"back-propagation cannot change that map (it would equal the full map); "
                + (f"give --layer a layer before '{gate}'{hint} or " if method == "Grad-CAM" else "")
                + "use a gradient method (gradient, integrated-gradients, ...)"
            )
