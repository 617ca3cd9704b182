"""Numbers that define CompressAI's cheng2020-attn releases (no torch: cheap to import).

From InterDigitalInc/CompressAI v1.2.4 ``compressai/zoo/image.py`` (``cfgs`` and
``cheng2020_attn``): qualities 1..6, metrics ``mse`` and ``ms-ssim``, N = M =
128 channels for qualities 1-3 and 192 for 4-6; ``models/google.py``: total
down-sampling 2**6 (x -> z), y has 4x the resolution of z.
"""
from __future__ import annotations

from gfvc.errors import InputError

QUALITIES = (1, 2, 3, 4, 5, 6)
METRICS = ("mse", "ms-ssim")
STRIDE = 64           # x -> z down-sampling: pictures are padded to a multiple of it
Y_PER_Z = 4           # y is 4x the spatial size of z


def channels_for_quality(quality: int) -> int:
    """N (= M) of the released model at ``quality``: 128 for 1-3, 192 for 4-6."""
    if quality not in QUALITIES:
        raise InputError(f"cheng2020-attn quality must be one of {list(QUALITIES)}, got {quality!r}")
    return 128 if quality <= 3 else 192
