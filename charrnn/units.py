"""Units of loss. Losses are computed in nats per character (natural log); people and papers often quote bits
per character (bpc). Perplexity is exp(nats)."""

from __future__ import annotations

import math
from typing import Optional

LN2 = math.log(2.0)


def bpc(nats: Optional[float]) -> Optional[float]:
    """Bits per character for a loss in nats per character (None stays None)."""
    return None if nats is None else nats / LN2
