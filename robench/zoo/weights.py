"""Loading a state dict into a model strictly, for native and foreign zoo entries alike."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import IntegrityError


def fit_weights(model: nn.Module, tensors: dict[str, torch.Tensor], what: str, arch: str) -> None:
    """``load_state_dict(strict=True)``: every name and shape must match, or a one-line IntegrityError."""
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
        raise IntegrityError(f"{what}: weights do not fit its {arch} config: {detail[:300]}") from None
