"""Dice loss for multi-class segmentation (§3.1: the Dice coefficient is the training loss)."""

from __future__ import annotations

import torch


def soft_dice(probs: torch.Tensor, onehot: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice coefficient per class, pooled over the batch and the pixels.

    ``dice_c = (2 sum p_c g_c + eps) / (sum p_c + sum g_c + eps)`` for ``probs`` and ``onehot``
    of shape ``(N, C, H, W)``; returns a ``(C,)`` tensor. ``eps`` (1, as in the usual Keras
    ``dice_coef``) keeps a class absent from both prediction and truth at Dice 1.
    """
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dim=dims)
    total = probs.sum(dim=dims) + onehot.sum(dim=dims)
    return (2.0 * inter + eps) / (total + eps)


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - mean_c dice_c`` of the softmax of ``logits`` ``(N, C, H, W)`` against integer ``labels`` ``(N, H, W)``."""
    probs = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(labels.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    return 1.0 - soft_dice(probs, onehot, eps=eps).mean()
