"""Where explanations run: ``--device cpu|cuda|auto`` and the float32 precision on CUDA (``--tf32``).

On CUDA the engine works in float32 with TF32 off by default: TF32 matrix products and convolutions
keep only 10 mantissa bits, so maps would differ from the CPU's in the third significant digit.
``--tf32`` allows it for speed when that does not matter (a first look over many checkpoints).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from rlexplain.errors import DeviceError

#: What ``--device`` accepts.
DEVICE_CHOICES = ("cpu", "cuda", "auto")


def resolve_device(spec: str | torch.device | None) -> torch.device | None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when torch sees a GPU, else the CPU) -> a torch device.

    None stays None (callers keep the network where it is).

    :raises DeviceError: an unknown name, or CUDA asked for where torch sees no GPU.
    """
    if spec is None or isinstance(spec, torch.device) and spec.type != "cuda":
        return spec
    text = check_name(spec)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise DeviceError(f"--device {text}: torch sees no CUDA GPU here ({build}); use --device cpu, or auto "
                          f"to take a GPU only where there is one")
    index = int(text.split(":")[1]) if ":" in text else 0
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {text}: there are {torch.cuda.device_count()} CUDA devices (cuda:0.."
                          f"cuda:{torch.cuda.device_count() - 1})")
    return torch.device(text)


def check_name(spec: str | torch.device) -> str:
    """The device name in lower case, if it is one :func:`resolve_device` knows (whether or not it exists here)."""
    text = str(spec).strip().lower()
    if text not in ("cpu", "auto") and not re.fullmatch(r"cuda(:\d+)?", text):
        raise DeviceError(f"unknown device {spec!r}: expected cpu, cuda, cuda:N or auto")
    return text


def describe(device: torch.device | None, tf32: bool = False) -> dict:
    """The device and precision of a run, for summaries."""
    device = device or torch.device("cpu")
    out = {"device": str(device), "dtype": "float32"}
    if device.type == "cuda":
        out.update(name=torch.cuda.get_device_name(device), tf32=tf32)
    return out


@contextlib.contextmanager
def precision(tf32: bool = False) -> Iterator[None]:
    """Allow (``tf32=True``) or forbid TF32 in CUDA matrix products and convolutions inside the block,
    restoring torch's settings afterwards (they are process-wide flags; on the CPU they change nothing)."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
