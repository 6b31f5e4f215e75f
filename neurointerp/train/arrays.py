"""Fit a binary classifier on tensors in memory: the small reference classifiers of the
benchmarks and tests (``train`` is the command for real cohorts: folds, augmentation, checkpoints).
"""

from __future__ import annotations


def fit_binary_on_arrays(model, x, y, *, epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0, generator=None):
    """Adam on binary cross-entropy of ``model(x)[:, 0]`` against ``y`` (0/1 floats), shuffled
    mini-batches drawn from ``generator`` (default: torch's global RNG; seed it first). Returns
    the model in eval mode."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx])[:, 0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
