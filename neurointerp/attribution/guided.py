"""Guided back-propagation and deconvnet through every ``nn.ReLU`` module.

Each ReLU *module* (found by type, never by name -- MONAI's trap) gets a forward hook that
replaces its output by an identical tensor whose backward pass is modified:

* guided backprop: ``grad_in = relu(grad_out) * (input > 0)``;
* deconvnet: ``grad_in = relu(grad_out)``.

A model whose ReLUs are functional calls cannot be guided: if no ReLU module runs during the
forward pass the method refuses instead of silently returning a plain gradient (Captum's trap).
Modules used twice in one forward pass are hooked at every call.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from neurointerp.attribution.core import chunks, input_gradient
from neurointerp.errors import InputError


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inp, out, deconv: bool):
        ctx.save_for_backward(inp)
        ctx.deconv = deconv
        return out.clone()

    @staticmethod
    def backward(ctx, grad_out):
        (inp,) = ctx.saved_tensors
        g = grad_out.clamp(min=0)
        if not ctx.deconv:
            g = g * (inp > 0).to(g.dtype)
        return g, None, None


@contextlib.contextmanager
def guided_relus(model: nn.Module, deconv: bool = False):
    """Within the context, every ``nn.ReLU`` of ``model`` back-propagates the guided way."""
    calls = {"n": 0}

    def hook(module, inputs, output):
        calls["n"] += 1
        return _GuidedReLU.apply(inputs[0], output, deconv)

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise InputError("guided back-propagation needs nn.ReLU modules; this model has none (functional ReLUs cannot be guided)")
    if any(m.inplace for m in relus):
        raise InputError("guided back-propagation cannot hook in-place ReLUs (nn.ReLU(inplace=True))")
    handles = [m.register_forward_hook(hook) for m in relus]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def guided_backprop(f, x, targets, model: nn.Module, deconv: bool = False, batch_size: int = 16):
    out = torch.empty_like(x)
    with guided_relus(model, deconv=deconv) as calls:
        for sl in chunks(len(x), batch_size):
            out[sl] = input_gradient(f, x[sl], targets[sl])
    if calls["n"] == 0:
        raise InputError("no nn.ReLU module ran in the forward pass: the model's ReLUs are functional and cannot be guided")
    return out


def deconvnet(f, x, targets, model: nn.Module, batch_size: int = 16):
    return guided_backprop(f, x, targets, model, deconv=True, batch_size=batch_size)
