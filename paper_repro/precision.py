"""The arithmetic of a computation: bf16 autocast as an option (its own module so that the FM sampler's cache key,
which covers the code it runs, does not depend on the training code)."""

from __future__ import annotations

import torch


def autocast(device_type: str, precision: str = "fp32"):
    """``torch.autocast`` to bfloat16 for ``precision="bf16"`` (convolutions and matrix products in bf16, losses and
    reductions in fp32, parameters untouched), a no-op context for ``"fp32"``."""
    if precision not in ("fp32", "bf16"):  # config.PRECISIONS (not imported: a config edit must not redraw the FM)
        raise ValueError(f"precision={precision!r} is unknown; choose one of ['fp32', 'bf16']")
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
