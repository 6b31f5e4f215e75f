"""Classifier CNNs (2D and 3D) with a named encoder -> predictor boundary.

Every model is a :class:`ConvClassifier`: ``model.encoder`` (conv stacks, then ``Flatten`` --
or a global average pooling, or attention gates, see ``head``) maps an input batch
``(N, 1, *shape)`` to the feature vector ``(N, M)``; ``model.predictor`` (fully connected
layers) maps the features to the outputs. ``model.features(x)`` returns the feature vector,
``model.feature_shape`` its layout ``(channels, *spatial)`` before flattening (``(channels,)``
for the pooled heads), so a feature index can be traced back to a channel and a location.
``forward(x)`` equals ``model.predictor(model.encoder(x))`` -- a confounder test or a partial back-propagation can
gate the features between the two (papers/confounder-aware-saliency.txt §2).

Architectures (``ARCHITECTURES``; every field can be overridden):

``simnet2d`` -- papers/simulator-networks-jacobian.txt §4.1: 3 stacks of 3x3 conv {2, 4, 8},
    ReLU, 2x max-pool; 32x32 input -> 128 features; MLP with one hidden layer of 16, ReLU.
``simnet3d`` -- §4.2: 4 stacks of 3x3x3 conv {16, 32, 64, 16}, ReLU, max-pool; MLP hidden 64, ReLU.
``cas2d`` -- papers/confounder-aware-saliency.txt §3.1: 3 stacks of 2x2 conv/ReLU/max-pool giving
    32 features on a 32x32 input (channels {8, 8, 2}; the paper gives only the feature count);
    predictor with one hidden layer of 16 and tanh; L2 on the fully connected layers.
``cas3d`` -- §3.2: 4 stacks of 2x2x2 conv/ReLU/batch-norm/max-pool (channels {8, 16, 32, 64}:
    4096 features on a 64^3 input, as in the paper); predictor hidden (64, 32) with tanh;
    L2 (lambda = 0.1) on all fully connected layers.

``gap2d`` / ``gap3d`` -- the CAM-ready architecture of Zhou et al. 2016 (interpretability review
    §2.3.1, "CAM"): conv stacks, a global average pooling of the last stack's channels and a
    single fully connected layer (``head="gap"``); the last stack has no max-pool (the pooling
    is global), so the class activation map keeps the finer grid; batch normalisation after
    each stack's ReLU (the map is then taken at the normalised channels that feed the pooling,
    still exactly Zhou's CAM). ``saliency --method cam``.
``attention2d`` / ``attention3d`` -- an attention-gated CNN (review §2.6.1 / §3.6.1;
    :mod:`neurointerp.models.attention`): additive attention gates (Schlemper et al. 2019) on
    the outputs of the stacks in ``attention`` with the global average of the last stack as
    gating signal (Jetley et al. 2018); the predictor (one linear layer) sees only the attended
    descriptors; batch normalisation in the stacks. ``saliency --method attention`` writes the
    gates' maps.

Why batch normalisation in these four: global pooling averages away most of what differs between
subjects (at initialisation the pooled features of 100 ``synth brain`` subjects varied by 1.7 %,
the logit by 0.008 sd). On a 400-subject 6 mm ``synth brain`` cohort (benchmarks/arch_methods.py,
small 8/16/32 versions, seeds 0-2), without it 5 of 6 GAP/attention runs ended at 0.45-0.66
held-out accuracy after 30 epochs (lr 3e-3; one class for everyone gives 0.45 or 0.55); with it
5 of 6 reached 0.91-1.0 in 20 epochs (lr 1e-3), the sixth ended at 0.55. Held-out accuracy of batch-normalised models can still swing between
epochs (seen: 0.96 -> 0.45 -> 0.86 at epochs 5, 10, 15): read ``train``'s per-epoch held-out metrics.

``head`` selects the part between the conv stacks and the predictor: ``flatten`` (every
architecture of the papers), ``gap`` or ``attention``. Heads that end in a global pooling
(``gap``, ``attention``) leave out the last stack's max-pool.

Convolutions keep the grid size ("same" padding; an even kernel pads one voxel at the end of
each axis, as Keras does), each max-pool halves it (rounding down). All non-linearities are
``nn.ReLU`` / ``nn.Tanh`` modules, never functional calls and never reused, so hook-based
attribution methods (guided back-propagation, LRP) see every one of them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn

from neurointerp.errors import InputError

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "simnet2d": dict(ndim=2, channels=(2, 4, 8), kernel_size=3, batch_norm=False, conv_activation="relu", hidden=(16,), activation="relu", l2=0.0),
    "simnet3d": dict(ndim=3, channels=(16, 32, 64, 16), kernel_size=3, batch_norm=False, conv_activation="relu", hidden=(64,), activation="relu", l2=0.0),
    "cas2d": dict(ndim=2, channels=(8, 8, 2), kernel_size=2, batch_norm=False, conv_activation="relu", hidden=(16,), activation="tanh", l2=0.1),
    "cas3d": dict(ndim=3, channels=(8, 16, 32, 64), kernel_size=2, batch_norm=True, conv_activation="relu", hidden=(64, 32), activation="tanh", l2=0.1),
    "gap2d": dict(ndim=2, channels=(8, 16, 32), kernel_size=3, batch_norm=True, conv_activation="relu", hidden=(), activation="relu", l2=0.0, head="gap"),
    "gap3d": dict(ndim=3, channels=(16, 32, 64, 64), kernel_size=3, batch_norm=True, conv_activation="relu", hidden=(), activation="relu", l2=0.0, head="gap"),
    "attention2d": dict(ndim=2, channels=(8, 16, 32), kernel_size=3, batch_norm=True, conv_activation="relu", hidden=(), activation="relu", l2=0.0, head="attention", attention=(2, 3), gate_channels=16),
    "attention3d": dict(ndim=3, channels=(16, 32, 64, 64), kernel_size=3, batch_norm=True, conv_activation="relu", hidden=(), activation="relu", l2=0.0, head="attention", attention=(2, 3), gate_channels=16),
}

# parameters every architecture has, with these defaults unless its entry sets them
HEAD_DEFAULTS: dict[str, Any] = dict(head="flatten", attention=(), gate_channels=16)
HEADS = ("flatten", "gap", "attention")

PAPERS = {
    "simnet2d": "simulator-networks-jacobian §4.1",
    "simnet3d": "simulator-networks-jacobian §4.2",
    "cas2d": "confounder-aware-saliency §3.1",
    "cas3d": "confounder-aware-saliency §3.2",
    "gap2d": "Zhou et al. 2016 (CAM); interpretability-review §2.3.1",
    "gap3d": "Zhou et al. 2016 (CAM); interpretability-review §2.3.1",
    "attention2d": "Schlemper et al. 2019 / Jetley et al. 2018; interpretability-review §2.6.1, §3.6.1",
    "attention3d": "Schlemper et al. 2019 / Jetley et al. 2018; interpretability-review §2.6.1, §3.6.1",
}

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "leakyrelu": nn.LeakyReLU}


def default_architecture(ndim: int) -> str:
    return "simnet2d" if ndim == 2 else "simnet3d"


def architecture_params(name: str, ndim: int | None = None, **overrides: Any) -> dict[str, Any]:
    """The hyper-parameters of a named architecture with ``overrides`` (``None`` values ignored)."""
    if name not in ARCHITECTURES:
        raise InputError(f"unknown architecture '{name}' (choose {', '.join(ARCHITECTURES)})")
    params = {**HEAD_DEFAULTS, **ARCHITECTURES[name]}
    if ndim is not None and params["ndim"] != ndim:
        raise InputError(f"architecture '{name}' is {params['ndim']}D but the images are {ndim}D")
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in params:
            raise InputError(f"unknown architecture parameter '{key}'")
        params[key] = value
    params["channels"] = tuple(int(c) for c in params["channels"])
    params["hidden"] = tuple(int(h) for h in params["hidden"])
    params["attention"] = tuple(int(k) for k in params["attention"])
    if params["head"] == "gap" and params["hidden"]:
        raise InputError(f"architecture '{name}' ends in global average pooling and one linear layer (CAM's architecture): --hidden must be empty")
    bad = [k for k in params["attention"] if not 1 <= k <= len(params["channels"])]
    if bad:
        raise InputError(f"architecture '{name}' gates conv stacks {list(params['attention'])}, but --channels gives {len(params['channels'])} stacks")
    return params


class _PadEnd(nn.Module):
    """Zero-pad ``k - 1`` voxels at the end of every spatial axis (``same`` for an even kernel)."""

    def __init__(self, ndim: int, amount: int):
        super().__init__()
        self.pad = tuple(v for _ in range(ndim) for v in (0, amount))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, self.pad)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class ConvClassifier(nn.Module):
    """Conv stacks (encoder) -> feature vector -> fully connected predictor.

    Parameters
    ----------
    input_shape
        Spatial shape of one input (2 or 3 numbers); the batch is ``(N, in_channels, *shape)``.
    n_outputs
        1 for binary classification (a logit) and regression, K for K classes (K logits).
    channels
        Output channels of each conv stack; each stack ends with a 2x max-pool.
    kernel_size
        Convolution kernel size (same padding).
    batch_norm
        Batch normalisation after each stack's non-linearity (conv/ReLU/BN/pool).
    conv_activation, activation
        Non-linearity of the conv stacks and of the hidden fully connected layers.
    hidden
        Sizes of the hidden fully connected layers of the predictor.
    l2
        Weight of the L2 penalty on the predictor's weights (:meth:`l2_penalty`), used by training.
    head
        ``flatten`` (conv stacks -> flatten -> predictor), ``gap`` (global average pooling of the
        last stack -> one linear layer: CAM's architecture; ``hidden`` must be empty) or
        ``attention`` (attention gates on the stacks in ``attention``, see
        :mod:`neurointerp.models.attention`). ``gap`` and ``attention`` leave out the last
        stack's max-pool.
    attention
        ``attention`` head: the (1-based) stacks whose outputs are gated.
    gate_channels
        ``attention`` head: width of the gates' intermediate layer.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_outputs: int = 1,
        channels: Sequence[int] = (2, 4, 8),
        kernel_size: int = 3,
        batch_norm: bool = False,
        conv_activation: str = "relu",
        hidden: Sequence[int] = (16,),
        activation: str = "relu",
        l2: float = 0.0,
        in_channels: int = 1,
        ndim: int | None = None,
        head: str = "flatten",
        attention: Sequence[int] = (),
        gate_channels: int = 16,
    ):
        super().__init__()
        input_shape = tuple(int(s) for s in input_shape)
        nd = len(input_shape)
        if nd not in (2, 3):
            raise InputError(f"input shape {input_shape} must have 2 or 3 dimensions")
        if ndim is not None and ndim != nd:
            raise InputError(f"a {ndim}D architecture cannot take a {nd}D input of shape {input_shape}")
        for name in (conv_activation, activation):
            if name not in _ACTIVATIONS:
                raise InputError(f"unknown activation '{name}' (choose {', '.join(_ACTIVATIONS)})")
        if not channels:
            raise InputError("the encoder needs at least one conv stack")
        if int(kernel_size) < 1:
            raise InputError("kernel size must be at least 1")
        if head not in HEADS:
            raise InputError(f"unknown head '{head}' (choose {', '.join(HEADS)})")
        attention = tuple(int(k) for k in attention)
        if head == "gap" and tuple(hidden):
            raise InputError("the gap head is global average pooling + one linear layer (CAM's architecture): hidden layers must be empty (--hidden)")
        if head == "attention":
            if not attention:
                raise InputError("the attention head needs at least one gated stack (attention=...)")
            bad = [k for k in attention if not 1 <= k <= len(channels)]
            if bad or len(set(attention)) != len(attention):
                raise InputError(f"attention gates on stacks {list(attention)}: each must be one of 1..{len(channels)}, once")
            if int(gate_channels) < 1:
                raise InputError("gate_channels must be at least 1")
        elif attention:
            raise InputError(f"attention gates need head 'attention' (this head is '{head}')")
        self.config: dict[str, Any] = dict(
            input_shape=list(input_shape),
            n_outputs=int(n_outputs),
            channels=[int(c) for c in channels],
            kernel_size=int(kernel_size),
            batch_norm=bool(batch_norm),
            conv_activation=str(conv_activation),
            hidden=[int(h) for h in hidden],
            activation=str(activation),
            l2=float(l2),
            in_channels=int(in_channels),
            ndim=nd,
            head=str(head),
            attention=list(attention),
            gate_channels=int(gate_channels),
        )
        conv = nn.Conv2d if nd == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if nd == 2 else nn.BatchNorm3d
        pool = nn.MaxPool2d if nd == 2 else nn.MaxPool3d
        k = int(kernel_size)
        stacks: "OrderedDict[str, nn.Module]" = OrderedDict()
        shape = list(input_shape)
        c_in = int(in_channels)
        for i, c in enumerate(channels, start=1):
            layers: "OrderedDict[str, nn.Module]" = OrderedDict()
            if k % 2 == 1:
                layers["conv"] = conv(c_in, int(c), k, padding=k // 2)
            else:
                layers["pad"] = _PadEnd(nd, k - 1)
                layers["conv"] = conv(c_in, int(c), k)
            layers["act"] = _ACTIVATIONS[conv_activation]()
            if batch_norm:
                layers["bn"] = norm(int(c))
            if head == "flatten" or i < len(channels):  # global pooling replaces the last max-pool
                layers["pool"] = pool(2)
                shape = [s // 2 for s in shape]
            stacks[f"stack{i}"] = nn.Sequential(layers)
            if min(shape) < 1:
                raise InputError(
                    f"input grid {'x'.join(map(str, input_shape))} is too small for {len(channels)} conv stacks "
                    "(each halves the grid); use a coarser architecture (--channels) or a larger grid"
                )
            c_in = int(c)
        if head == "flatten":
            stacks["flatten"] = nn.Flatten()
            self.encoder = nn.Sequential(stacks)
            self.feature_shape: tuple[int, ...] = (c_in, *shape)
        elif head == "gap":
            stacks["gap"] = nn.AdaptiveAvgPool2d(1) if nd == 2 else nn.AdaptiveAvgPool3d(1)
            stacks["flatten"] = nn.Flatten()
            self.encoder = nn.Sequential(stacks)
            self.feature_shape = (c_in,)
        else:
            from neurointerp.models.attention import AttentionEncoder

            self.encoder = AttentionEncoder(stacks, attention, [int(c) for c in channels], nd, int(gate_channels))
            self.feature_shape = (sum(int(channels[k - 1]) for k in attention),)
        self.n_features = int(torch.tensor(self.feature_shape).prod())

        head: "OrderedDict[str, nn.Module]" = OrderedDict()
        width = self.n_features
        for i, h in enumerate(hidden, start=1):
            head[f"fc{i}"] = nn.Linear(width, int(h))
            head[f"act{i}"] = _ACTIVATIONS[activation]()
            width = int(h)
        head["out"] = nn.Linear(width, int(n_outputs))
        self.predictor = nn.Sequential(head)
        self._init_weights()

    def _init_weights(self) -> None:
        """He (Kaiming) initialisation before ReLU-like units, Glorot before tanh and at the output;
        zero biases. (torch's default shrinks the signal at every stack: deep 3D stacks then start
        with near-constant outputs and can stall at chance.)"""
        gains = {"relu": "relu", "elu": "relu", "leakyrelu": "leaky_relu", "tanh": "tanh"}
        conv_nl = gains[self.config["conv_activation"]]
        fc_nl = gains[self.config["activation"]]
        for m in self.encoder.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity=conv_nl)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        linears = [m for m in self.predictor.modules() if isinstance(m, nn.Linear)]
        for i, m in enumerate(linears):
            last = i == len(linears) - 1
            if last or fc_nl == "tanh":
                nn.init.xavier_uniform_(m.weight, gain=1.0 if last else nn.init.calculate_gain("tanh"))
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity=fc_nl)
            nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ConvClassifier":
        cfg = dict(config)
        return cls(**cfg)

    @property
    def head(self) -> str:
        return str(self.config.get("head", "flatten"))

    @property
    def default_cam_layer(self) -> str | None:
        """Grad-CAM's default layer for the pooled heads: the last stack's output, i.e. what the
        global pooling (and the attention gates) see -- its batch norm when there is one, so that
        Grad-CAM there is CAM / |U| after its ReLU. (Otherwise the last spatial conv/activation
        module run is the default; the attention head runs its gates' 1x1 convolutions last.)"""
        if self.head in ("gap", "attention"):
            last = "bn" if self.config["batch_norm"] else "act"
            return f"encoder.stack{len(self.config['channels'])}.{last}"
        return None

    def attention_gates(self) -> list[str]:
        """Module names of the attention gates (``encoder.gate<k>``); empty without attention."""
        if self.head != "attention":
            return []
        return [f"encoder.{name}" for name in self.encoder.gate_names()]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.config["input_shape"])

    @property
    def n_outputs(self) -> int:
        return int(self.config["n_outputs"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature vector ``(N, M)`` at the encoder -> predictor boundary."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.encoder(x))

    def l2_penalty(self) -> torch.Tensor:
        """Sum of squared weights of the fully connected layers (biases excluded)."""
        terms = [(m.weight**2).sum() for m in self.predictor.modules() if isinstance(m, nn.Linear)]
        return torch.stack(terms).sum()


def build_classifier(
    architecture: str,
    input_shape: Sequence[int],
    n_outputs: int,
    **overrides: Any,
) -> ConvClassifier:
    """Build a named architecture (:data:`ARCHITECTURES`) for ``input_shape`` with ``overrides``."""
    params = architecture_params(architecture, ndim=len(tuple(input_shape)), **overrides)
    return ConvClassifier(input_shape=input_shape, n_outputs=n_outputs, **params)
