"""Device and thread selection."""

from __future__ import annotations

import os

from neurointerp.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto", local_rank: int | None = None):
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an input error.

    Under ``torchrun`` each process takes GPU ``LOCAL_RANK``. A concrete ``cuda:N`` is accepted.
    """
    import torch

    name = str(device or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            built = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}"
            raise InputError(f"--device {device}: no CUDA device is available (torch {torch.__version__} built {built})")
        if name == "cuda":
            rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device(name)
    if name != "cpu":
        raise InputError(f"--device {device}: choose auto, cpu or cuda")
    return torch.device("cpu")


def exact_float32(device) -> None:
    """On a CUDA device, compute in full float32 from now on: no TF32 in convolutions or matrix products.

    PyTorch lets cuDNN convolutions run in TF32 (10-bit mantissa) on Ampere and later GPUs by
    default. Measured on an H200: gradient, LRP and DeepLIFT maps of one model then differed from
    the CPU's by up to 25 % of their maximum (pre-activations near zero change sign, and with them
    the ReLU gates the gradient passes through). An explanation must not depend on the device
    that computed it, so every model loaded to be explained or applied goes through this.
    Training keeps PyTorch's default (its result is stochastic anyway)."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def for_inference(model, device: str = "cpu"):
    """``model`` on ``device`` (:func:`resolve_device`), in eval mode, in full float32 on CUDA
    (:func:`exact_float32`): how every saved model is loaded to be explained or applied."""
    dev = resolve_device(device)
    exact_float32(dev)
    return model.to(dev).eval()


def default_threads() -> int | None:
    """Threads from ``SLURM_CPUS_PER_TASK`` when set, else ``None`` (torch's default)."""
    value = os.environ.get("SLURM_CPUS_PER_TASK")
    if value and value.strip().isdigit() and int(value) > 0:
        return int(value)
    return None


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``None``: ``SLURM_CPUS_PER_TASK`` or torch's default)."""
    import torch

    n = threads if threads is not None else default_threads()
    if n is not None:
        if n < 1:
            raise InputError(f"--threads {n}: must be at least 1")
        torch.set_num_threads(int(n))
    return torch.get_num_threads()
