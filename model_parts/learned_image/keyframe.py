"""Key-frame coding with CompressAI's cheng2020-attn: the learned alternative to one VVC intra picture.

The JVET GFVC AhG software (xyzysz/GFVC_Software_v2, ``source/image_codecs/lic.py``
and ``source/GFVC/utils.py``) can code the reference frame of every GOP with
``compressai.zoo.cheng2020_attn(quality=q, pretrained=True)`` (metric ``mse``)
instead of VTM (``--ref_codec lic``); the value it passes as "QP" is used as
the quality index 1..6 unchanged. This module is the suite's stage for that:
:class:`Cheng2020KeyFrameCoder` codes one RGB uint8 frame into one payload
and back, with the official weights (verified, :mod:`model_parts.learned_image.checkpoints`)
or with seeded random weights for tests (labelled as such everywhere).

Payload (every byte counts as rate)::

    byte 0      0xC1: cheng2020-attn payload, format 1
    byte 1      quality (bits 0-3) | metric (bit 4: 0 mse, 1 ms-ssim)
    bytes 2-5   CRC-32 (little-endian) over bytes 0-1, the picture size (height,
                width as two uint16) and the model identity (sha256 of the
                weights), then the code
    bytes 6-    one range-coded stream (32-bit little-endian words): z, then y

So a payload decoded with other weights, for another picture size, or
corrupted, is refused with :class:`~gfvc.errors.BitstreamError` instead of
turning into a wrong picture. CompressAI itself sends two rANS strings (y, z)
and the latent shape out of band; the AhG software stores them as two files
whose sizes are the rate.

Input handling follows CompressAI's examples: RGB in [0, 1] (uint8 / 255),
zero padding centred to a multiple of 64 (``compute_padding``), cropped after
decoding, output clamped to [0, 1]. The uint8 output rounds to nearest by
default; ``rounding="truncate"`` gives what the AhG software and CompressAI's
codec example do (``(x * 255).astype(uint8)``, on average half a level darker).

Determinism: the decoder must compute the same table index for every symbol
as the encoder. Both run the same float operations, and the entropy-critical
part (h_s and the context loop) always runs with one torch thread
(:func:`model_parts.learned_image.cheng2020.one_thread`), so encoder and decoder on the
same device type and torch build agree bit for bit whatever their thread
settings (tested). Across devices (CPU vs GPU) or builds, float differences
in the context model can, rarely, move a scale across a table boundary and
desynchronise decoding, the known weakness of float entropy models (Ballé
et al., "Integer networks for data compression with latent-variable models",
ICLR 2019): code and decode on the same kind of device. The final synthesis
g_s runs with the caller's threads; its output can differ in the last float
bits between thread counts, so the uint8 picture may rarely differ by one
level between an encoder's reconstruction and a decoder using other threads.
"""
from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.errors import BitstreamError, InputError, ModelMismatch, WeightsError
from model_parts.checkpoint import read_torch_file
from model_parts.learned_image import checkpoints
from model_parts.learned_image.spec import METRICS, QUALITIES, STRIDE, channels_for_quality
from model_parts.learned_image.tables import PRECISION

FORMAT_BYTE = 0xC1
HEADER_BYTES = 6
ROUNDINGS = ("round", "truncate")
REFERENCE = {"implementation": "CompressAI", "version": "1.2.4", "model": "cheng2020-attn",
             "repository": "InterDigitalInc/CompressAI", "pinned_by": "xyzysz/GFVC_Software_v2 requirements.txt"}
# The AhG software passes its "QP" list straight through as the quality (source/GFVC/utils.py,
# ReferenceImageCoder: LICEnc(..., quality=int(self.qp))): rate point i uses quality i of 1..6.
AHG_QUALITIES = QUALITIES


def padding(height: int, width: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zeros that centre a picture in the next multiple of 64 (CompressAI's rule)."""
    ph = (height + STRIDE - 1) // STRIDE * STRIDE
    pw = (width + STRIDE - 1) // STRIDE * STRIDE
    left, top = (pw - width) // 2, (ph - height) // 2
    return left, pw - width - left, top, ph - height - top


class _Model:
    """One loaded network (a quality) and where its weights came from."""

    def __init__(self, net: Any, identity: str, weights: dict[str, Any]) -> None:
        self.net = net
        self.identity = identity      # goes into the payload CRC
        self.weights = weights        # provenance


class Cheng2020KeyFrameCoder:
    """Codes key frames with cheng2020-attn (see module docstring); one instance serves every quality.

    Build it for the official weights (default; files found or fetched per
    quality on first use), from given checkpoint files (``checkpoint_files={q: path}``),
    or with :meth:`random_weights` for tests.
    """

    name = "cheng2020-attn"
    qualities = QUALITIES

    def __init__(self, metric: str = "mse", *, device: str = "cpu", weights_dir: Path | None = None,
                 checkpoint_files: dict[int, Path] | None = None, rounding: str = "round",
                 fetch: bool | None = None) -> None:
        if metric not in METRICS:
            raise InputError(f"cheng2020-attn metric must be one of {list(METRICS)}, got {metric!r}")
        if rounding not in ROUNDINGS:
            raise InputError(f"rounding must be one of {list(ROUNDINGS)}, got {rounding!r}")
        self.metric = metric
        self.device = str(device)
        self.weights_dir = Path(weights_dir) if weights_dir is not None else None
        self.checkpoint_files = {int(q): Path(p) for q, p in (checkpoint_files or {}).items()}
        for q in self.checkpoint_files:
            channels_for_quality(q)
        self.rounding = rounding
        self.fetch = fetch
        self._random: tuple[int, int | None] | None = None  # (seed, N override)
        self._models: dict[int, _Model] = {}

    @classmethod
    def random_weights(cls, seed: int, *, channels: int | None = None, metric: str = "mse", device: str = "cpu",
                       rounding: str = "round") -> Cheng2020KeyFrameCoder:
        """A coder with seeded RANDOM weights (official N per quality, or ``channels``): for tests only.

        Everything it codes is real (payload, decoder), but the pictures and
        bits mean nothing; provenance and info say ``random_weights``.
        """
        coder = cls(metric, device=device, rounding=rounding, fetch=False)
        coder._random = (int(seed), channels)
        return coder

    # ------------------------------------------------------------------ models
    def _load(self, quality: int) -> _Model:
        import torch  # lazy: torch (and the network module) load on the first coded frame, not on import

        from model_parts.learned_image.cheng2020 import Cheng2020Attention, random_state_dict  # lazy: imports torch

        channels_for_quality(quality)
        m = self._models.get(quality)
        if m is not None:
            return m
        if self._random is not None:
            seed, override = self._random
            n = override or channels_for_quality(quality)
            net = Cheng2020Attention(n)
            tables = net.load_compressai_state_dict(random_state_dict(n, seed + quality), f"random weights seed {seed}")
            identity = f"random-weights:N={n}:seed={seed + quality}"
            weights: dict[str, Any] = {"random_weights": True, "seed": seed + quality, "N": n,
                                       "note": "seeded random weights, NOT a trained model: bits and pictures "
                                               "mean nothing", "entropy_tables": tables}
        else:
            if quality in self.checkpoint_files:
                path = self.checkpoint_files[quality]
                if not path.is_file():
                    fix = checkpoints.fix_text(checkpoints.official(quality, self.metric))
                    raise WeightsError(f"cheng2020-attn checkpoint {path} (quality {quality}) not found; {fix}")
                digest = checkpoints.file_sha256(path)
                entry = checkpoints.official(quality, self.metric)
                known = digest.startswith(entry.sha256_prefix)
                weights = {"file": str(path), "sha256": digest, "official": known,
                           **({"url": entry.url, "sha256_prefix_pin": entry.sha256_prefix,
                               "hash_source": checkpoints.HASH_SOURCE} if known else {})}
            else:
                path, digest = checkpoints.locate(quality, self.metric, self.weights_dir, fetch=self.fetch)
                entry = checkpoints.official(quality, self.metric)
                weights = {"file": path.name, "url": entry.url, "sha256": digest, "official": True,
                           "sha256_prefix_pin": entry.sha256_prefix, "hash_source": checkpoints.HASH_SOURCE}
            sd = read_torch_file(path, f"cheng2020-attn quality {quality} checkpoint",
                                 hint=checkpoints.fix_text(checkpoints.official(quality, self.metric)))
            n = _channels_in(sd, path)
            if n != channels_for_quality(quality):
                raise ModelMismatch(f"{path}: a cheng2020-attn quality {quality} checkpoint has N="
                                    f"{channels_for_quality(quality)}, this file N={n}")
            net = Cheng2020Attention(n)
            weights["entropy_tables"] = net.load_compressai_state_dict(sd, str(path))
            identity = digest
        net.eval().to(torch.device(self.device))
        m = _Model(net, identity, {"quality": quality, "metric": self.metric, "N": net.N, **weights})
        self._models[quality] = m
        return m

    def check(self, qualities: Iterable[int] | None = None) -> None:
        """Raise NotAvailable (WeightsError, with the fix) if the weights of any of ``qualities`` are missing."""
        for q in (self.qualities if qualities is None else qualities):
            if self._random is not None:
                channels_for_quality(q)
            elif q in self.checkpoint_files:
                self._load(q)
            else:
                checkpoints.locate(q, self.metric, self.weights_dir, fetch=self.fetch)

    def provenance(self) -> dict[str, Any]:
        """What codes the key frames: reference implementation, weights of every quality used so far, coder."""
        import constriction  # lazy: compiled extension
        import torch  # lazy: heavy

        ver = getattr(constriction, "__version__", None)
        if ver is None:
            ver = version("constriction")
        return {"coder": self.name, "reference": REFERENCE, "metric": self.metric, "device": self.device,
                "rounding": self.rounding, "random_weights": self._random is not None,
                "entropy_coder": {"engine": f"constriction {ver} queue.RangeEncoder (32-bit words)",
                                  "tables": f"CompressAI quantized CDFs, {PRECISION}-bit",
                                  "escape": "CompressAI bypass scheme (4-bit groups)"},
                "payload_format": FORMAT_BYTE, "torch": torch.__version__,
                "qualities": {q: m.weights for q, m in sorted(self._models.items())}}

    # ------------------------------------------------------------------ coding
    def _crc(self, head: bytes, height: int, width: int, identity: str, body: bytes) -> int:
        return zlib.crc32(head + struct.pack("<HH", height, width) + identity.encode() + body)

    def _to_tensor(self, frame: np.ndarray) -> tuple[Any, tuple[int, int, int, int]]:
        import torch  # lazy: heavy
        import torch.nn.functional as F  # lazy: heavy

        f = np.asarray(frame)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise InputError(f"cheng2020-attn codes one RGB uint8 frame (H, W, 3), got {f.dtype} {f.shape}")
        h, w = f.shape[:2]
        if not (0 < h < 1 << 16 and 0 < w < 1 << 16):
            raise InputError(f"frame size {w}x{h} out of range")
        # /255 in float64 then float32: what the AhG software feeds the model (np.array(...) / 255.0)
        x = torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)).astype(np.float64) / 255.0).float()[None]
        pad = padding(h, w)
        return F.pad(x, pad, mode="constant", value=0.0).to(self.device), pad

    def _to_frame(self, x_hat: Any, pad: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
        left, _, top, _ = pad
        x = x_hat[0, :, top:top + height, left:left + width].clamp(0, 1).mul(255.0)
        x = x.round() if self.rounding == "round" else x.floor()
        return x.to("cpu").numpy().astype(np.uint8).transpose(1, 2, 0).copy()

    def compress_frame(self, frame: np.ndarray, quality: int, *, reconstruct: bool = True
                       ) -> tuple[bytes, np.ndarray | None, dict[str, Any]]:
        """(payload, decoded frame, info): the decoded frame is what :meth:`decompress` returns.

        An encoder that needs the decoded key frame (generative codecs analyse
        it) gets it here without decoding: it is g_s of the latents the
        decoder rebuilds. ``reconstruct=False`` skips that synthesis (None).
        """
        import constriction  # lazy: compiled extension

        model = self._load(int(quality))
        t0 = time.perf_counter()
        x, pad = self._to_tensor(frame)
        enc = constriction.stream.queue.RangeEncoder()
        lat = model.net.encode_latents(x, enc)
        body = enc.get_compressed().astype("<u4").tobytes()
        h, w = frame.shape[:2]
        head = bytes([FORMAT_BYTE, (int(quality) & 0xF) | (METRICS.index(self.metric) << 4)])
        crc = self._crc(head, h, w, model.identity, body)
        payload = head + struct.pack("<I", crc) + body
        recon = self._to_frame(model.net.synthesis(lat.y_hat), pad, h, w) if reconstruct else None
        info = {"coder": self.name, "quality": int(quality), "metric": self.metric, "bytes": len(payload),
                "bits": 8 * len(payload), "header_bytes": HEADER_BYTES, "code_bytes": len(body),
                "padded_size": [int(x.shape[2]), int(x.shape[3])], "y_shape": list(lat.y.shape[1:]),
                "z_shape": list(lat.z.shape[1:]), "escaped_symbols": lat.escapes,
                "encode_seconds": time.perf_counter() - t0, "random_weights": self._random is not None}
        return payload, recon, info

    def compress(self, frame: np.ndarray, quality: int) -> bytes:
        """Payload of one RGB uint8 frame (H, W, 3) at ``quality`` (1..6)."""
        return self.compress_frame(frame, quality, reconstruct=False)[0]

    def encode(self, frame: np.ndarray, quality: int, workdir: Path | None = None) -> tuple[bytes, dict[str, Any]]:
        """Key-frame-coder stage API: (payload, info). No files are written (``workdir`` is not needed)."""
        payload, _, info = self.compress_frame(frame, quality, reconstruct=False)
        return payload, info

    def decompress(self, payload: bytes, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) from a payload of :meth:`compress`; BitstreamError if it is not one."""
        x_hat, pad = self._decode(payload, width, height)
        return self._to_frame(x_hat, pad, int(height), int(width))

    def decompress_float(self, payload: bytes, width: int, height: int) -> np.ndarray:
        """The decoded picture before 8-bit conversion: float32 (height, width, 3) in [0, 1].

        The AhG software animates from this float reconstruction (it passes
        CompressAI's x_hat tensor to the generative model) and only writes
        the truncated uint8 picture to the output video.
        """
        x_hat, (left, _, top, _) = self._decode(payload, width, height)
        h, w = int(height), int(width)
        return x_hat[0, :, top:top + h, left:left + w].to("cpu").numpy().transpose(1, 2, 0).copy()

    def _decode(self, payload: bytes, width: int, height: int) -> tuple[Any, tuple[int, int, int, int]]:
        """(x_hat (1, 3, H', W') on the device, clamped to [0, 1], padding) of a payload."""
        import constriction  # lazy: compiled extension
        import torch  # lazy: heavy

        data = bytes(payload)
        if len(data) < HEADER_BYTES + 4:
            raise BitstreamError(f"cheng2020-attn payload truncated ({len(data)} bytes)")
        if data[0] != FORMAT_BYTE:
            raise BitstreamError(f"not a cheng2020-attn payload (first byte 0x{data[0]:02x}, expected "
                                 f"0x{FORMAT_BYTE:02x})")
        quality, metric_bit = data[1] & 0xF, data[1] >> 4
        if quality not in QUALITIES or metric_bit >= len(METRICS):
            raise BitstreamError(f"cheng2020-attn payload names quality {quality} / metric {metric_bit}: corrupt")
        if METRICS[metric_bit] != self.metric:
            raise ModelMismatch(f"cheng2020-attn payload was coded with the {METRICS[metric_bit]} weights; this "
                                f"decoder has the {self.metric} weights")
        if (len(data) - HEADER_BYTES) % 4:
            raise BitstreamError(f"cheng2020-attn payload truncated or padded ({len(data)} bytes is not a whole "
                                 "number of 32-bit code words)")
        width, height = int(width), int(height)
        if not (0 < height < 1 << 16 and 0 < width < 1 << 16):
            raise InputError(f"picture size {width}x{height} out of range")
        model = self._load(quality)
        body = data[HEADER_BYTES:]
        (crc,) = struct.unpack("<I", data[2:6])
        if crc != self._crc(data[:2], height, width, model.identity, body):
            raise BitstreamError(f"cheng2020-attn payload fails its CRC: corrupt or truncated, or coded for another "
                                 f"picture size than {width}x{height} or with other weights than "
                                 f"{model.identity[:16]}")
        pad = padding(height, width)
        ph, pw = height + pad[2] + pad[3], width + pad[0] + pad[1]
        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(body, dtype="<u4").astype(np.uint32))
        y_hat = model.net.decode_latents(dec, ph // STRIDE, pw // STRIDE)
        if not dec.maybe_exhausted():
            raise BitstreamError("cheng2020-attn payload has data after the coded picture: corrupt")
        with torch.no_grad():
            return model.net.synthesis(y_hat), pad

    def decode(self, payload: bytes, width: int, height: int) -> np.ndarray:
        """Key-frame-coder stage API: the decoded RGB uint8 frame."""
        return self.decompress(payload, width, height)


def _channels_in(state_dict: Any, path: Path) -> int:
    """N of a cheng2020-attn state_dict (rows of the first analysis convolution)."""
    from model_parts.learned_image.cheng2020 import canonical_state_dict  # lazy: imports torch

    sd = canonical_state_dict(state_dict)
    w = sd.get("g_a.0.conv1.weight")
    if w is None or not hasattr(w, "shape") or len(w.shape) != 4:
        raise ModelMismatch(f"{path} is not a cheng2020-attn checkpoint (no g_a.0.conv1.weight)")
    return int(w.shape[0])


