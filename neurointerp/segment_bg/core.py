"""Slice-wise segmentation, guided-backprop gradient images and background removal (§4.3).

Volumes are cut into 2D slices along one voxel axis (the third by default), segmented slice by
slice, and stacked back on the same grid (so the input affine applies unchanged).

:func:`remove_background` is the paper's second phase for one volume:

1. segment the acquisition as it is (first glance);
2. guided-backprop gradient image of the segmentation output (the summed logits, or
   probabilities, of the tissue classes) with respect to the input;
3. enhancement (:mod:`.enhance`);
4. cross-correlation with the shape template -- the reference brain mask times the enhanced
   gradient image of the reference animal -- and translation of the mask (:mod:`.position`);
5. zero the voxels outside the positioned mask and segment again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurointerp.errors import InputError
from neurointerp.segment_bg import enhance as E
from neurointerp.segment_bg import position as P

POSITIONING = ("slice", "volume")
GBP_SCORES = ("logit", "probability")


def to_slices(volume: np.ndarray, axis: int = 2) -> np.ndarray:
    """``(n_slices, H, W)`` view of a 3D volume cut along ``axis``."""
    v = np.asarray(volume)
    if v.ndim != 3:
        raise InputError(f"expected a 3D volume, got an array of shape {v.shape}")
    return np.moveaxis(v, axis, 0)


def from_slices(slices: np.ndarray, axis: int = 2) -> np.ndarray:
    """Inverse of :func:`to_slices`."""
    return np.moveaxis(np.asarray(slices), 0, axis)


def _pad(slices: np.ndarray, multiple: int) -> np.ndarray:
    n, h, w = slices.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        slices = np.pad(slices, ((0, 0), (0, ph), (0, pw)))
    return slices


def _check_slices(slices) -> np.ndarray:
    s = np.asarray(slices, dtype=np.float32)
    if s.ndim != 3:
        raise InputError(f"expected a stack of 2D slices (n, H, W), got an array of shape {s.shape}")
    return s


def predict(model, slices, batch_size: int = 16, device="cpu") -> np.ndarray:
    """Softmax probabilities ``(n, C, H, W)`` of a stack of slices ``(n, H, W)``."""
    import torch

    s = _check_slices(slices)
    h, w = s.shape[1:]
    x = _pad(s, model.multiple)
    out = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size, None])).to(device)
            out.append(model.probabilities(xb)[:, :, :h, :w].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config["n_classes"], h, w), np.float32)


def gradient_image(model, slices, batch_size: int = 16, device="cpu", score: str = "logit") -> np.ndarray:
    """Guided-backprop gradient image ``(n, H, W)`` of the segmentation output.

    The explained score of a slice is the sum, over its pixels, of the tissue (non-background)
    outputs: logits (``score="logit"``) or softmax probabilities. Guided back-propagation is
    :func:`neurointerp.attribution.guided.guided_backprop` (every ``nn.ReLU`` of the U-Net hooked).
    """
    import torch

    from neurointerp.attribution.guided import guided_backprop

    if score not in GBP_SCORES:
        raise InputError(f"--gbp-score {score}: choose {' or '.join(GBP_SCORES)}")
    s = _check_slices(slices)
    h, w = s.shape[1:]
    x = torch.from_numpy(np.ascontiguousarray(_pad(s, model.multiple)[:, None])).to(device)
    model.eval()

    def f(inp, targets):
        out = model(inp)
        if score == "probability":
            out = torch.softmax(out, dim=1)
        return out[:, 1:].sum(dim=(1, 2, 3))

    targets = torch.zeros(len(x), dtype=torch.long)
    g = guided_backprop(f, x, targets, model, batch_size=batch_size)
    return g[:, 0, :h, :w].float().cpu().numpy()


def enhance_stack(gradients, centre: float = E.CENTRE, width: float = E.WIDTH, steps: bool = False):
    """:func:`.enhance.enhance` on every slice; with ``steps`` a dict of ``(n, H, W)`` stacks."""
    res = [E.enhance(g, centre=centre, width=width, steps=True) for g in np.asarray(gradients)]
    keys = ("magnitude", "expanded", "compressed", "zscore", "enhanced")
    stacks = {k: np.stack([r[k] for r in res]).astype(np.float32) if res else np.zeros((0,) + np.shape(gradients)[1:], np.float32) for k in keys}
    return stacks if steps else stacks["enhanced"]


def reference_template(model, reference, mask, batch_size: int = 16, device="cpu", score: str = "logit", centre: float = E.CENTRE, width: float = E.WIDTH) -> np.ndarray:
    """Shape templates ``(n, H, W)`` of a reference animal: its mask times its enhanced gradient image (Fig. 7a)."""
    ref = _check_slices(reference)
    m = np.asarray(mask) > 0
    if m.shape != ref.shape:
        raise InputError(f"reference mask {m.shape} and reference image {ref.shape} differ in shape")
    enhanced = enhance_stack(gradient_image(model, ref * m, batch_size=batch_size, device=device, score=score), centre=centre, width=width)
    return np.stack([P.shape_template(mk, e) for mk, e in zip(m, enhanced)]).astype(np.float32)


def slice_map(n_slices: int, n_reference: int) -> np.ndarray:
    """Reference slice used for each slice: the same index when the counts agree, else the nearest relative position."""
    if n_slices == n_reference:
        return np.arange(n_slices)
    pos = (np.arange(n_slices) + 0.5) / n_slices * n_reference - 0.5
    return np.clip(np.floor(pos + 0.5), 0, n_reference - 1).astype(int)


def remove_background(
    model,
    slices,
    template,
    mask,
    max_shift: int | None = None,
    positioning: str = "slice",
    score: str = "logit",
    centre: float = E.CENTRE,
    width: float = E.WIDTH,
    clip_to_mask: bool = True,
    batch_size: int = 16,
    device="cpu",
) -> dict[str, Any]:
    """The paper's two-phase segmentation of one stack of slices ``(n, H, W)``.

    With ``clip_to_mask`` (default) voxels outside the positioned mask are labelled background
    in the second pass (they were removed as background); otherwise the network's labels of
    the zeroed input are kept as they are.

    ``template`` and ``mask`` are the reference shape templates and brain mask ``(n_ref, H, W)``.
    Returns a dict of ``(n, H, W)`` arrays -- ``labels_raw`` (first pass), ``gradient``,
    ``magnitude``, ``expanded``, ``compressed``, ``zscore``, ``enhanced``, ``correlation``
    (centred on zero shift, cropped to ``H x W``), ``mask`` (positioned), ``masked`` (input
    outside the mask zeroed), ``labels`` (second pass) -- plus ``shifts`` ``(n, 2)``.
    """
    if positioning not in POSITIONING:
        raise InputError(f"--positioning {positioning}: choose {' or '.join(POSITIONING)}")
    s = _check_slices(slices)
    tpl = np.asarray(template, dtype=np.float64)
    ref_mask = np.asarray(mask) > 0
    if tpl.ndim != 3 or tpl.shape[1:] != s.shape[1:] or ref_mask.shape != tpl.shape:
        raise InputError(f"shape template {tpl.shape} / mask {ref_mask.shape} do not fit slices of {s.shape[1:]}")
    n, h, w = s.shape
    if max_shift is None:
        max_shift = min(h, w) // 4
    out: dict[str, Any] = {}
    probs = predict(model, s, batch_size=batch_size, device=device)
    out["labels_raw"] = probs.argmax(axis=1).astype(np.uint8)
    out["gradient"] = gradient_image(model, s, batch_size=batch_size, device=device, score=score)
    out.update(enhance_stack(out["gradient"], centre=centre, width=width, steps=True))
    ref_of = slice_map(n, len(tpl))
    corrs = [P.cross_correlation(out["enhanced"][k], tpl[ref_of[k]]) for k in range(n)]
    if positioning == "volume":
        total = np.sum([c for k, c in enumerate(corrs) if ref_mask[ref_of[k]].any()] or [np.zeros_like(corrs[0])], axis=0)
        shift = P.best_shift(total, max_shift)
        shifts = [shift] * n
    else:
        shifts = [P.best_shift(c, max_shift) for c in corrs]
    out["shifts"] = np.asarray(shifts, dtype=int).reshape(n, 2)
    out["correlation"] = np.stack([c[h // 2 : h // 2 + h, w // 2 : w // 2 + w] for c in corrs]).astype(np.float32)
    out["mask"] = np.stack([P.shift_image(ref_mask[ref_of[k]].astype(np.uint8), shifts[k]) for k in range(n)])
    out["masked"] = (s * out["mask"]).astype(np.float32)
    probs2 = predict(model, out["masked"], batch_size=batch_size, device=device)
    out["labels"] = probs2.argmax(axis=1).astype(np.uint8)
    if clip_to_mask:
        out["labels"][out["mask"] == 0] = 0
    return out
