"""IR rewrites, one per module; :func:`optimize` runs them in order."""

from __future__ import annotations

from .fuse_linear import fuse_linear
from .place_exchanges import place_exchanges
from .share_arrangements import share_arrangements


def optimize(program):
    return place_exchanges(fuse_linear(share_arrangements(program)))
