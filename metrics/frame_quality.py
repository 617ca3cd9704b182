"""Per-frame quality measures for the adaptive key-frame policy (gfvc.stages.FRAME_QUALITY).

The same functions as the suite's PSNR/SSIM metrics (metrics/classic.py), one value per frame, so the
encoder's refresh decision and the reported quality agree in definition.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

import metrics
from gfvc.stages import FRAME_QUALITY, FrameQuality
from gfvc.stills import ALWAYS, PER_FRAME
from metrics.classic import luma, psnr_rgb_frames, psnr_y_frames, ssim_frames


@FRAME_QUALITY.register()
class PsnrQuality(FrameQuality):
    """PSNR over R, G, B (dB), as the suite's `psnr` metric."""

    name = "psnr"

    def __call__(self, reference: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        return psnr_rgb_frames(reference, decoded)


@FRAME_QUALITY.register()
class PsnrYQuality(FrameQuality):
    """PSNR of BT.601 luma (dB), as the suite's `psnr_y` metric."""

    name = "psnr_y"

    def __call__(self, reference: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        return psnr_y_frames(reference, decoded)


@FRAME_QUALITY.register()
class SsimQuality(FrameQuality):
    """SSIM of luma (Wang et al. 2004, 11x11 Gaussian window), as the suite's `ssim` metric."""

    name = "ssim"

    def __call__(self, reference: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        return ssim_frames(luma(reference), luma(decoded))


def frame_values(spec: Any, ref: np.ndarray, dist: np.ndarray, *, weights_dir: Path | None = None,
                  device: str = "cpu") -> dict[str, dict[str, Any]]:
    """Per-frame values of one frame pair, by the job's own metric code (metrics.evaluate on one frame).

    PSNR and SSIM always; DISTS and LPIPS when the condition lists them (a
    metric whose weights are missing comes back ``not_computed`` with the
    reason, as in the records). ref/dist: uint8 (H, W, 3).
    """
    names = [n for n in PER_FRAME if n in ALWAYS or n in spec.names]
    one = dataclasses.replace(spec, names=tuple(names))
    return metrics.evaluate(one, ref[None], dist[None], fps=1.0, weights_dir=weights_dir, device=device)
