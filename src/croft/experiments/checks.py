"""Checks of what a run needs from this machine: the device and the backbone's weight file.

Each returns why the thing cannot be used (one line, for :class:`~croft.errors.CroftError`
or ``croft run --check``), or None. Both the loader (``--check``) and the protocols (before
any extraction) ask them, so they live below both.
"""

from __future__ import annotations


def check_device(device: str) -> str | None:
    """Why ``device`` cannot be used here, or None."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"device {device!r}: CUDA is not available on this machine; use device: cpu"
        idx = device.partition(":")[2]
        if idx and int(idx) >= torch.cuda.device_count():
            return f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here"
    if device == "mps" and not torch.backends.mps.is_available():
        return "device 'mps': MPS is not available on this machine; use device: cpu"
    return None


def check_weights(spec: str) -> str | None:
    """Why the backbone spec's weight file cannot be read, or None (hub tags: None)."""
    from croft.backbones.loader import parse_spec

    parsed = parse_spec(spec)
    if parsed.path is not None and not parsed.path.exists():
        return f"backbone: weight file not found: {parsed.path} (from {spec!r})"
    return None
