"""PSNR and SSIM (reported for reference only in the GFVC CTC).

SSIM: Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image Quality
Assessment: From Error Visibility to Structural Similarity", IEEE TIP 13(4), 2004.

Protocol (recorded by :func:`metrics.protocol`):
* PSNR (RGB): per frame, MSE over all pixels of all three channels, peak 255,
  10*log10(255^2/MSE); the sequence value is the arithmetic mean of the
  per-frame PSNRs. Identical frames (MSE 0) count as PSNR_CAP_DB (100 dB), so
  a value is never inf and JSON stays valid.
* PSNR-Y: the same on BT.601 limited-range luma from gfvc.video.rgb_to_yuv420
  (the GFVC software's conversion); needs even width and height.
* SSIM: on the same BT.601 limited-range luma (uint8 values, L = 255), 11x11
  Gaussian window sigma 1.5, K1 0.01, K2 0.03, 'valid' windows only (no
  padding, no automatic downsampling), mean of the SSIM map per frame, mean
  over frames.
"""
from __future__ import annotations

import numpy as np

from gfvc.video import rgb_to_yuv420

PSNR_CAP_DB = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _psnr_frames(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> np.ndarray:
    t = a.shape[0]
    d = a.reshape(t, -1).astype(np.float64) - b.reshape(t, -1).astype(np.float64)
    mse = np.mean(d * d, axis=1)
    with np.errstate(divide="ignore"):
        p = 10.0 * np.log10(peak * peak / mse)
    return np.minimum(p, PSNR_CAP_DB)


def psnr_rgb_frames(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Per-frame RGB PSNR (dB), capped at PSNR_CAP_DB."""
    return _psnr_frames(ref, dist)


def luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 limited-range Y (T, H, W) uint8, bit-exact with OpenCV I420."""
    return rgb_to_yuv420(frames)[0]


def psnr_y_frames(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    return _psnr_frames(luma(ref), luma(dist))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim_frames(ref_y: np.ndarray, dist_y: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Per-frame mean SSIM of single-channel frames (T, H, W), float64, separable Gaussian, valid windows."""
    if ref_y.shape != dist_y.shape or ref_y.ndim != 3:
        raise ValueError(f"SSIM needs two (T, H, W) arrays of equal shape, got {ref_y.shape} / {dist_y.shape}")
    if min(ref_y.shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {ref_y.shape[1:]}")
    import torch  # lazy: `import metrics` (done by every `gfvc` command) must not pull in torch
    import torch.nn.functional as F

    g = torch.from_numpy(gaussian_window())
    gh, gv = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(z, gh), gv)

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    out = []
    for s in range(0, ref_y.shape[0], 16):  # bounded memory for long sequences
        x = torch.from_numpy(ref_y[s:s + 16].astype(np.float64))[:, None]
        y = torch.from_numpy(dist_y[s:s + 16].astype(np.float64))[:, None]
        mx, my = filt(x), filt(y)
        sxx = filt(x * x) - mx * mx
        syy = filt(y * y) - my * my
        sxy = filt(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        out.append(m.mean(dim=(1, 2, 3)).numpy())
    return np.concatenate(out)


# --- PSNR on YUV planes, the way VTM's encoder log computes it -------------------------------

VTM_PSNR_CAP_DB = 999.99  # VTM prints 999.99 for a frame (or sequence) with zero error


def _ssd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    t = a.shape[0]
    d = a.reshape(t, -1).astype(np.int64) - b.reshape(t, -1).astype(np.int64)
    return np.sum(d * d, axis=1)


def yuv_psnr(ref: tuple[np.ndarray, ...], dec: tuple[np.ndarray, ...],
             bit_depth: int = 8) -> dict[str, float | int | str]:
    """PSNR of 8-bit YUV planes as VTM's encoder log reports it, plus the JVET 6:1:1 YUV PSNR.

    * ``y``, ``u``, ``v``: per frame 10*log10(maxval^2 * samples / SSD) with
      maxval = 255 << (bit_depth - 8) (VTM's rule), 999.99 when SSD is 0;
      the sequence value is the mean over frames (VTM's summary line).
    * ``yuv_611``: (6*Y + U + V) / 8 of those means (JVET CTC weighting).
    * ``yuv_vtm``: VTM's "YUV-PSNR" column: the MSE of each component averaged
      over frames, weighted 4:1:1 for 4:2:0 (1:1:1 for 4:4:4), then one PSNR.
    """
    maxval = 255 << (bit_depth - 8)
    out: dict[str, float | int | str] = {}
    mse: dict[str, float] = {}
    weights: dict[str, int] = {}
    for name, r, d in zip(("y", "u", "v"), ref, dec, strict=True):
        if r.shape != d.shape:
            raise ValueError(f"yuv_psnr: {name} planes differ in shape: {r.shape} vs {d.shape}")
        ssd = _ssd(r, d)
        n = int(np.prod(r.shape[1:]))
        with np.errstate(divide="ignore"):
            per_frame = np.where(ssd == 0, VTM_PSNR_CAP_DB,
                                 10.0 * np.log10(float(maxval) ** 2 * n / np.maximum(ssd, 1)))
        out[name] = float(np.mean(per_frame))
        mse[name] = float(np.mean(ssd / n))
        weights[name] = 4 if name == "y" or r.shape == ref[0].shape else 1
    out["yuv_611"] = (6 * float(out["y"]) + float(out["u"]) + float(out["v"])) / 8
    m = sum(weights[c] * mse[c] for c in mse) / sum(weights.values())
    out["yuv_vtm"] = VTM_PSNR_CAP_DB if m == 0 else float(10.0 * np.log10(float(maxval) ** 2 / m))
    out["frames"] = int(ref[0].shape[0])
    return out
