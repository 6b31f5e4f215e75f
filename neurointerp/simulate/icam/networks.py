"""ICAM's networks, 2D and 3D (papers/icam-vae-gan-attribution.txt §3.1, Fig. 3).

* :class:`ContentEncoder` ``E^c``: image -> content latent ``z^c`` (``4 ch`` channels at 1/4 of the
  grid), ResNet blocks with instance normalisation; Gaussian noise is added to its last layer
  during training (§3.2: "to prevent vanishing of the content latent space").
* :class:`AttributeEncoder` ``E^a``: image -> mean and log-variance of a *spatial* attribute latent
  ``z^a`` (one channel on ``latent_shape``, e.g. 8x8 in 2D = 64 values, 8x10x8 in 3D = 640: a 2D/3D
  latent, not a 1D vector, §3.1) and a fully connected layer on ``z^a``: one logit (binary), one
  logit per class (multi-class) or the standardised target (regression; the paper's §5
  extensions, as in the authors' code: ``fc_class`` with ``num_domains`` outputs, ``fc_reg``).
* :class:`Generator` ``G``: ``(z^c, z^a)`` -> image; ``z^a`` is resampled onto the content grid and
  concatenated to the content channels at the bottleneck and again after each up-sampling.
* :class:`ContentDiscriminator` ``D^c``: content latent -> class logit(s) or target (class-adversarial, Eq. 1).
* :class:`DomainDiscriminator` ``D``: image -> real/fake patch logits and class logit(s) or target (§3.3).

Tasks (:data:`TASKS`): ``binary`` (one logit, the class-1 logit; what every checkpoint before the
extensions holds), ``multiclass`` (K logits, softmax) and ``regression`` (one output, the target
standardised by the training mean and sd kept in the configuration). The three heads above
have the task's number of outputs.

Sizes: ``channels`` (``tch`` of the authors' code, 16 there, 8 here by default on CPU) sets the
widths; every side of the grid must be a multiple of 4.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _conv(nd: int):
    return nn.Conv2d if nd == 2 else nn.Conv3d


def _convT(nd: int):
    return nn.ConvTranspose2d if nd == 2 else nn.ConvTranspose3d


def _inorm(nd: int, ch: int):
    return (nn.InstanceNorm2d if nd == 2 else nn.InstanceNorm3d)(ch, affine=True)


class ResBlock(nn.Module):
    """Basic ResNet block: conv-IN-ReLU-conv-IN + identity."""

    def __init__(self, nd: int, ch: int):
        super().__init__()
        conv = _conv(nd)
        self.body = nn.Sequential(conv(ch, ch, 3, padding=1), _inorm(nd, ch), nn.ReLU(), conv(ch, ch, 3, padding=1), _inorm(nd, ch))

    def forward(self, x):
        return x + self.body(x)


def _down(nd: int, cin: int, cout: int, norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [_conv(nd)(cin, cout, 4, stride=2, padding=1)]
    if norm:
        layers.append(_inorm(nd, cout))
    layers.append(nn.LeakyReLU(0.2))
    return layers


class ContentEncoder(nn.Module):
    """``E^c``: ``(N, 1, *S)`` -> ``(N, 4 ch, *S/4)``."""

    def __init__(self, nd: int, channels: int = 8, n_res: int = 2, noise: float = 1.0):
        super().__init__()
        ch = channels
        self.noise = float(noise)
        self.net = nn.Sequential(
            _conv(nd)(1, ch, 3, padding=1), nn.LeakyReLU(0.2),
            *_down(nd, ch, 2 * ch), *_down(nd, 2 * ch, 4 * ch),
            *[ResBlock(nd, 4 * ch) for _ in range(n_res)],
        )

    def forward(self, x):
        c = self.net(x)
        if self.training and self.noise > 0:
            c = c + self.noise * torch.randn_like(c)
        return c


TASKS = ("binary", "multiclass", "regression")


class AttributeEncoder(nn.Module):
    """``E^a``: ``(N, 1, *S)`` -> ``mu, logvar`` ``(N, *latent_shape)``; :meth:`classify` -> ``(N, n_outputs)``
    (binary: the class-1 logit; multi-class: class logits; regression: the standardised target)."""

    def __init__(self, nd: int, latent_shape: Sequence[int], channels: int = 8, n_down: int = 2, n_outputs: int = 1):
        super().__init__()
        ch = channels
        layers: list[nn.Module] = [_conv(nd)(1, ch, 3, padding=1), nn.LeakyReLU(0.2)]
        c = ch
        for i in range(n_down):
            layers += _down(nd, c, min(4 * ch, 2 * c), norm=False)
            c = min(4 * ch, 2 * c)
        layers += [_conv(nd)(c, c, 3, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.pool = (nn.AdaptiveAvgPool2d if nd == 2 else nn.AdaptiveAvgPool3d)(self.latent_shape)
        self.head = _conv(nd)(c, 2, 1)  # channel 0: mu, channel 1: logvar
        self.classifier = nn.Linear(int(math.prod(self.latent_shape)), int(n_outputs))

    def forward(self, x):
        h = self.head(self.pool(self.features(x)))
        return h[:, 0], h[:, 1].clamp(-10.0, 10.0)

    def classify(self, z):
        """Output ``(N, n_outputs)`` of the classification (regression) layer on attribute latents ``(N, *latent_shape)``."""
        return self.classifier(z.reshape(z.shape[0], -1))


class Generator(nn.Module):
    """``G``: content ``(N, 4 ch, *S/4)`` and attribute ``(N, *latent_shape)`` -> image ``(N, 1, *S)``."""

    def __init__(self, nd: int, channels: int = 8, n_res: int = 2):
        super().__init__()
        ch = channels
        conv, convT = _conv(nd), _convT(nd)
        self.nd = nd
        self.inp = nn.Sequential(conv(4 * ch + 1, 4 * ch, 3, padding=1), _inorm(nd, 4 * ch), nn.ReLU())
        self.res = nn.Sequential(*[ResBlock(nd, 4 * ch) for _ in range(n_res)])
        self.up1 = nn.Sequential(convT(4 * ch + 1, 2 * ch, 4, stride=2, padding=1), _inorm(nd, 2 * ch), nn.ReLU())
        self.up2 = nn.Sequential(convT(2 * ch + 1, ch, 4, stride=2, padding=1), _inorm(nd, ch), nn.ReLU())
        self.out = conv(ch + 1, 1, 3, padding=1)

    def _z(self, z, like):
        mode = "bilinear" if self.nd == 2 else "trilinear"
        return F.interpolate(z[:, None], size=like.shape[2:], mode=mode, align_corners=False)

    def forward(self, c, z):
        h = self.res(self.inp(torch.cat([c, self._z(z, c)], 1)))
        h = self.up1(torch.cat([h, self._z(z, h)], 1))
        h = self.up2(torch.cat([h, self._z(z, h)], 1))
        return self.out(torch.cat([h, self._z(z, h)], 1))


class ContentDiscriminator(nn.Module):
    """``D^c``: content latent -> class logit(s) / target ``(N, n_outputs)``."""

    def __init__(self, nd: int, channels: int = 8, n_outputs: int = 1):
        super().__init__()
        ch = 4 * channels
        conv = _conv(nd)
        self.net = nn.Sequential(conv(ch, ch, 3, padding=1), nn.LeakyReLU(0.2), conv(ch, ch, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.fc = nn.Linear(ch, int(n_outputs))

    def forward(self, c):
        h = self.net(c)
        return self.fc(h.mean(dim=tuple(range(2, h.ndim))))


class DomainDiscriminator(nn.Module):
    """``D``: image -> real/fake patch logits ``(N, 1, *S/8)`` and class logit(s) / target ``(N, n_outputs)``."""

    def __init__(self, nd: int, channels: int = 8, n_outputs: int = 1):
        super().__init__()
        ch = channels
        self.features = nn.Sequential(*_down(nd, 1, ch, norm=False), *_down(nd, ch, 2 * ch, norm=False), *_down(nd, 2 * ch, 4 * ch, norm=False))
        self.realfake = _conv(nd)(4 * ch, 1, 3, padding=1)
        self.cls = nn.Linear(4 * ch, int(n_outputs))

    def forward(self, x):
        h = self.features(x)
        return self.realfake(h), self.cls(h.mean(dim=tuple(range(2, h.ndim))))


def default_latent_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Attribute latent grid: 2D ``min(8, side/4)`` per side (8x8 = 64 values at 32x32 and up, the
    authors' ``nz=64``); 3D ``side/16`` (8x10x8 = 640 at the paper's 128x160x128), at least 2."""
    if len(shape) == 2:
        return tuple(max(2, min(8, int(s) // 4)) for s in shape)
    return tuple(max(2, int(s) // 16) for s in shape)


class ICAM(nn.Module):
    """The five networks of ICAM with their configuration (what a checkpoint stores).

    ``task``: ``binary`` (default), ``multiclass`` (``n_classes`` >= 3) or ``regression``
    (``target_mean``/``target_sd``: the training target's mean and sd; the networks work on the
    standardised target; ``target_range``: its minimum and maximum, to flag extrapolation). A binary model's configuration has no task keys (as before the
    extensions), so binary checkpoints read the same in older versions.
    """

    def __init__(self, shape: Sequence[int], latent_shape: Sequence[int] | None = None, channels: int = 8, n_res: int = 2, content_noise: float = 1.0,
                 task: str = "binary", n_classes: int = 2, target_mean: float = 0.0, target_sd: float = 1.0,
                 target_range: Sequence[float] | None = None):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"ICAM task {task!r}: choose {', '.join(TASKS)}")
        if task == "multiclass" and int(n_classes) < 3:
            raise ValueError(f"multi-class ICAM needs at least 3 classes, not {n_classes} (2 classes: task binary)")
        if task == "regression" and not (math.isfinite(float(target_sd)) and float(target_sd) > 0):
            raise ValueError(f"regression ICAM: target sd {target_sd} must be positive")
        self.task = task
        self.n_classes = int(n_classes) if task == "multiclass" else (2 if task == "binary" else 0)
        self.target_mean = float(target_mean) if task == "regression" else 0.0
        self.target_sd = float(target_sd) if task == "regression" else 1.0
        self.target_range = tuple(float(v) for v in target_range) if task == "regression" and target_range is not None else None
        n_out = self.n_classes if task == "multiclass" else 1
        self.shape = tuple(int(s) for s in shape)
        nd = len(self.shape)
        if nd not in (2, 3):
            raise ValueError(f"ICAM works on 2D or 3D grids, not {self.shape}")
        if any(s % 4 or s < 16 for s in self.shape):
            raise ValueError(f"grid {self.shape}: every side must be a multiple of 4 and at least 16")
        if latent_shape is None:
            latent_shape = default_latent_shape(self.shape)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        if len(self.latent_shape) != nd:
            raise ValueError(f"attribute latent shape {self.latent_shape} must have {nd} sides (a {nd}D latent)")
        n_down = 2 if nd == 2 else 3
        self.config = {"shape": list(self.shape), "latent_shape": list(self.latent_shape), "channels": int(channels), "n_res": int(n_res), "content_noise": float(content_noise)}
        if task == "multiclass":
            self.config.update(task=task, n_classes=self.n_classes)
        elif task == "regression":
            self.config.update(task=task, target_mean=self.target_mean, target_sd=self.target_sd)
            if self.target_range is not None:
                self.config["target_range"] = list(self.target_range)
        self.enc_c = ContentEncoder(nd, channels, n_res, noise=content_noise)
        self.enc_a = AttributeEncoder(nd, self.latent_shape, channels, n_down=n_down, n_outputs=n_out)
        self.gen = Generator(nd, channels, n_res)
        self.dis_c = ContentDiscriminator(nd, channels, n_outputs=n_out)
        self.dis = DomainDiscriminator(nd, channels, n_outputs=n_out)

    @classmethod
    def from_config(cls, config: dict) -> "ICAM":
        return cls(config["shape"], config["latent_shape"], config["channels"], config["n_res"], config.get("content_noise", 1.0),
                   task=config.get("task", "binary"), n_classes=config.get("n_classes", 2),
                   target_mean=config.get("target_mean", 0.0), target_sd=config.get("target_sd", 1.0), target_range=config.get("target_range"))

    def standardise(self, values):
        """Regression target in label units -> the networks' standardised units."""
        return (values - self.target_mean) / self.target_sd

    def unstandardise(self, values):
        """Standardised regression output -> label units."""
        return values * self.target_sd + self.target_mean

    def attribute_logit(self, x):
        """Output ``(N, n_outputs)`` of the attribute layer for images (mean of their attribute latent):
        the class-1 logit (binary), class logits (multi-class) or standardised target (regression)."""
        mu, _ = self.enc_a(x)
        return self.enc_a.classify(mu)


class AttributeClassifier(nn.Module):
    """``x -> E^a`` classification logit(s) ``(N, n_outputs)``: ICAM's own classifier as a plain model, so that
    the attribution methods of :mod:`neurointerp.attribution` (gradient, Grad-CAM on layer
    ``encoder.features``) run on it (the paper's Table 4 baselines)."""

    def __init__(self, enc_a: AttributeEncoder):
        super().__init__()
        self.encoder = enc_a

    def forward(self, x):
        mu, _ = self.encoder(x)
        return self.encoder.classify(mu)
