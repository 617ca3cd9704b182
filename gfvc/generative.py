"""Template of generative codecs: key frame + coded compact features + synthesis.

A generative face/body codec (FOMM-style keypoints, Sparse2Dense's 3D
keypoints, ...) sends frame 0 as one VVC intra picture and, for each inter
frame, a few dozen numbers produced by an analysis model; the decoder warps or
renders the key frame with them. Everything except the two networks is the same
for all such codecs, so it lives here once:

* rate points = the condition's key-frame QPs (CTC_FACTS section 1),
* key frame by the key-frame coder stage named in ``condition.generative.key_frame_coder``
  (:mod:`gfvc.stages`; VVC intra by VVenC or VTM is :mod:`anchors.intra`),
* analysis of the *decoded* key frame (both sides derive the prediction start
  from the same pixels), closed-loop DPCM, uniform quantisation
  (:func:`gfvc.entropy.dpcm_encode`), entropy coding (``condition.generative.
  feature_coder``: "cabac" ours, "gfvc-reference" the GFVC software's coder),
* one container file (docs/bitstream.md) whose size is the rate,
* decode with model/codec/size checks, provenance.

A subclass supplies the model: ``feature_dim``, ``quant_scale``, ``model_id``,
``model_checksum``, ``load``, ``analyse``, ``synthesise`` and optionally
``key_extras`` (see docs/adding-a-codec.md).
"""
from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gfvc import container, entropy
from gfvc.codec import Codec, Decoded, EncodeResult, RatePoint, Sequence
from gfvc.errors import BitstreamError, InputError, ModelMismatch, NotAvailable
from gfvc.stages import KeyFrameCoder, key_frame_coder

# Frames per analyse() call: bounds memory on long sequences; the key frame is
# always analysed alone so encoder and decoder see identical batches.
ANALYSE_BATCH = 32


class GenerativeCodec(Codec):
    """Base of every generative codec (see module docstring)."""

    family = "generative"
    feature_dim: ClassVar[int] = 0
    quant_scale: ClassVar[float] = 1.0
    # (width, height) the model works at, or None for any size; a stream or a
    # sequence of another size is refused with ModelMismatch.
    resolution: ClassVar[tuple[int, int] | None] = None
    # True for codecs whose decoder has no analysis network (IHVC: the encoder's body-model
    # estimate cannot be repeated at the decoder): the key frame's features are coded too, as
    # one more DPCM row before the inter frames, predicted from zeros (docs/bitstream.md).
    sends_key_features: ClassVar[bool] = False

    # ---------------------------------------------------------- model (subclass)
    @abc.abstractmethod
    def model_id(self) -> str:
        """Short model identifier stored in the container, e.g. "s2d-demo"."""

    @abc.abstractmethod
    def model_checksum(self) -> str:
        """sha256 hex of the checkpoint (the container keeps its first 8 bytes)."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model lazily; raise NotAvailable / ModelMismatch with the fix."""

    @abc.abstractmethod
    def analyse(self, frames: np.ndarray) -> np.ndarray:
        """frames (N, H, W, 3) uint8 -> features (N, feature_dim) float32."""

    @abc.abstractmethod
    def synthesise(self, key_frame: np.ndarray, key_features: np.ndarray, features: np.ndarray
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Decoded key frame (H, W, 3), its features (D,), reconstructed features (N, D)
        -> N inter frames (N, H, W, 3) uint8 and extras {name: (N, ...)}."""

    def key_extras(self, key_frame: np.ndarray, key_features: np.ndarray) -> dict[str, np.ndarray]:
        """Extras of the key frame ({name: (1, ...)}); default none."""
        return {}

    def check(self) -> None:
        """Model identity must be available before a run starts (weights present, sha256 valid).

        Subclasses extend this (call super().check()) and raise NotAvailable /
        WeightsError with the fix; the feature coder named by the condition must exist.
        """
        self._coder()
        try:
            container.checksum_prefix(self.model_checksum())
        except InputError as e:
            raise NotAvailable(f"codec {self.name!r}: model_checksum() must return the checkpoint's "
                               f"sha256 hex digest: {e}") from None
        if not isinstance(self.feature_dim, int) or self.feature_dim < 0:
            raise NotAvailable(f"codec {self.name!r}: feature_dim must be an int >= 0")

    # ------------------------------------------------------------------ helpers
    def _coder(self) -> entropy.FeatureCoder:
        return entropy.get_feature_coder(self.condition.generative.feature_coder)

    def _key_coder(self) -> KeyFrameCoder:
        return key_frame_coder(self.condition.generative.key_frame_coder, self.condition, self.env)

    def _check_size(self, width: int, height: int, what: str) -> None:
        if self.resolution is not None and tuple(self.resolution) != (width, height):
            w, h = self.resolution
            raise ModelMismatch(f"{what} is {width}x{height} but model {self.model_id()!r} of codec "
                                f"{self.name!r} works at {w}x{h}: use a model trained at {width}x{height} "
                                "or a condition at the model's resolution")

    def _features(self, frames: np.ndarray) -> np.ndarray:
        """analyse() in bounded batches, with its output contract checked."""
        n = frames.shape[0]
        d = int(self.feature_dim)
        if d == 0:
            return np.zeros((n, 0), dtype=np.float32)
        parts = []
        for i in range(0, n, ANALYSE_BATCH):
            f = np.asarray(self.analyse(frames[i:i + ANALYSE_BATCH]))
            m = min(ANALYSE_BATCH, n - i)
            if f.shape != (m, d):
                raise InputError(f"codec {self.name!r}: analyse() returned shape {f.shape}, "
                                 f"expected ({m}, {d})")
            parts.append(f.astype(np.float32, copy=False))
        return np.concatenate(parts, axis=0)

    def _key_features(self, key: np.ndarray) -> np.ndarray:
        return self._features(key[None])[0]

    def _header(self, seq_w: int, seq_h: int, frames: int, fps: float, qp: int) -> container.Header:
        num, den = container.fps_to_rational(fps)
        return container.Header(
            codec=self.name, model_id=self.model_id(), model_checksum=self.model_checksum(),
            width=seq_w, height=seq_h, frames=frames, fps_num=num, fps_den=den,
            feature_coder=self._coder().coder_id, feature_dim=int(self.feature_dim),
            quant_scale=float(self.quant_scale), key_qp=qp)

    # ------------------------------------------------------------------ encode
    def encode(self, sequence: Sequence, rate_point: RatePoint, workdir: Path) -> EncodeResult:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        frames = sequence.frames
        t_frames, h, w = frames.shape[:3]
        self._check_size(w, h, f"sequence {sequence.name!r}")
        self.load()
        coder = self._coder()
        t0 = time.perf_counter()
        key_coder = self._key_coder()
        res = key_coder.encode(frames[0], rate_point.qp, workdir / "key")
        key = key_coder.decode(res.payload, w, h, workdir / "key")
        _check_key(key, w, h)
        t1 = time.perf_counter()
        rows = t_frames - 1 + int(self.sends_key_features)
        q = np.zeros((rows, int(self.feature_dim)), dtype=np.int64)
        if rows > 0 and self.feature_dim > 0:
            if self.sends_key_features:  # all frames (the source frame 0 included), first one vs zeros
                start, feats = np.zeros(int(self.feature_dim), np.float32), self._features(frames)
            else:
                start, feats = self._key_features(key), self._features(frames[1:])
            q, _ = entropy.dpcm_encode(feats, start, self.quant_scale)
        payload = coder.encode(q)
        t2 = time.perf_counter()
        header = self._header(w, h, t_frames, sequence.fps, rate_point.qp)
        path = workdir / f"{sequence.name}_{rate_point.key}.gfvc"
        breakdown = container.write(path, header, res.payload, payload)
        info = {"feature_coder": coder.describe(), "key_frame_s": t1 - t0, "features_s": t2 - t1,
                "feature_bits_ideal": coder.ideal_bits(q) if q.size else 0.0,
                "nonzero_residuals": int(np.count_nonzero(q))}
        return EncodeResult(bitstream=path, bits_breakdown=breakdown, commands=list(res.commands), info=info)

    # ------------------------------------------------------------------ decode
    def decode(self, bitstream: Path, workdir: Path) -> Decoded:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        c = container.read(bitstream)
        hd = c.header
        container.check_compatible(hd, codec=self.name, model_id=self.model_id(),
                                   model_checksum=self.model_checksum(), feature_dim=int(self.feature_dim),
                                   quant_scale=float(self.quant_scale), source=str(bitstream))
        self._check_size(hd.width, hd.height, f"bitstream {bitstream}")
        coder = entropy.feature_coder_by_id(hd.feature_coder)
        # Decode the features first: a corrupt feature payload fails before any model work.
        q = coder.decode(c.feature_payload, hd.frames - 1 + int(self.sends_key_features), hd.feature_dim)
        self.load()
        key = self._key_coder().decode(c.key_payload, hd.width, hd.height, workdir / "key")
        _check_key(key, hd.width, hd.height)
        if self.sends_key_features and self.feature_dim:
            recon = entropy.dpcm_decode(q, np.zeros(hd.feature_dim, np.float32), self.quant_scale)
            key_feat, recon = recon[0], recon[1:]
        else:
            key_feat = self._key_features(key) if self.feature_dim else np.zeros(0, np.float32)
            recon = entropy.dpcm_decode(q, key_feat, self.quant_scale)
        extras = {k: np.asarray(v) for k, v in self.key_extras(key, key_feat).items()}
        if hd.frames == 1:
            return _decoded(key[None].copy(), extras, hd.fps)
        inter, inter_extras = self.synthesise(key, key_feat, recon)
        inter = np.asarray(inter)
        n = hd.frames - 1
        if inter.dtype != np.uint8 or inter.shape != (n, hd.height, hd.width, 3):
            raise ModelMismatch(f"codec {self.name!r}: synthesise() gave {inter.dtype} {inter.shape}, the "
                                f"bitstream needs uint8 {(n, hd.height, hd.width, 3)}: the model does not "
                                "produce the stream's resolution")
        merged: dict[str, np.ndarray] = {}
        for name in sorted(set(extras) | set(inter_extras)):
            if name not in extras or name not in inter_extras:
                raise InputError(f"codec {self.name!r}: extra {name!r} must come from both key_extras() "
                                 "and synthesise() so it has one row per frame")
            a, b = extras[name], np.asarray(inter_extras[name])
            if a.shape[0] != 1 or b.shape[0] != n:
                raise InputError(f"codec {self.name!r}: extra {name!r} has {a.shape[0]} + {b.shape[0]} rows, "
                                 f"expected 1 + {n}")
            merged[name] = np.concatenate([a, b], axis=0)
        return _decoded(np.concatenate([key[None], inter], axis=0), merged, hd.fps)

    # -------------------------------------------------------------- provenance
    def provenance(self) -> dict[str, Any]:
        g = self.condition.generative
        p = super().provenance()
        p.update({
            "model_id": self.model_id(), "model_checksum": self.model_checksum(),
            "feature_dim": int(self.feature_dim), "quant_scale": float(self.quant_scale),
            "feature_coder": self._coder().describe(), "container_version": container.VERSION,
            "key_frame": {"coder": g.key_frame_coder, "chroma": g.key_frame_chroma},
        })
        try:
            p["key_frame"]["intra"] = self._key_coder().provenance()
        except Exception as e:  # provenance must not fail a run; record why it is missing
            p["key_frame"]["intra"] = {"status": "not_recorded", "reason": f"{type(e).__name__}: {e}"}
        return p


def _decoded(frames: np.ndarray, extras: dict[str, np.ndarray], fps: float) -> Decoded:
    """Decoded result; carries the container's frame rate if Decoded has an ``fps`` field."""
    if "fps" in getattr(Decoded, "__dataclass_fields__", {}):
        return Decoded(frames=frames, extras=extras, fps=fps)  # type: ignore[call-arg]
    return Decoded(frames=frames, extras=extras)


def _check_key(key: Any, width: int, height: int) -> None:
    if not isinstance(key, np.ndarray) or key.dtype != np.uint8 or key.shape != (height, width, 3):
        got = f"{key.dtype} {key.shape}" if isinstance(key, np.ndarray) else type(key).__name__
        raise BitstreamError(f"decoded key frame is {got}, the container says uint8 ({height}, {width}, 3)")
