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
import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gfvc import container, entropy
from gfvc.codec import Codec, Decoded, EncodeResult, RatePoint, Sequence
from gfvc.condition import KeyFramePolicySpec
from gfvc.errors import BitstreamError, InputError, ModelMismatch, NotAvailable
from gfvc.stages import KEY_FRAME_CODERS, KeyFrameCoder, KeyFramePolicy, key_frame_coder, key_frame_policy

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
        self._key_coder().check()
        self._policy().check()
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

    def _stream_key_coder(self, key_format: str, source: str) -> KeyFrameCoder:
        """The key-frame coder that decodes a stream's key frames: the condition's when its format matches,
        else the registered coder of that format (a stream says what its key frames are)."""
        coder = self._key_coder()
        if coder.payload_format == key_format:
            return coder
        for name in KEY_FRAME_CODERS.names():
            other = key_frame_coder(name, self.condition, self.env)
            if other.payload_format == key_format:
                return other
        raise ModelMismatch(f"{source} holds {key_format!r} key frames and no installed key-frame coder decodes "
                            f"them (installed: {', '.join(KEY_FRAME_CODERS.names())})")

    def _policy(self) -> KeyFramePolicy:
        return key_frame_policy(self.condition.generative.key_frame_policy, self.env)

    def _header(self, seq_w: int, seq_h: int, frames: int, fps: float, qp: int,
                key_frames: tuple[int, ...] = (0,), key_format: str = container.VVC_FORMAT) -> container.Header:
        num, den = container.fps_to_rational(fps)
        coder = self._coder()
        return container.Header(
            codec=self.name, model_id=self.model_id(), model_checksum=self.model_checksum(),
            width=seq_w, height=seq_h, frames=frames, fps_num=num, fps_den=den,
            feature_coder=coder.coder_id, feature_dim=int(self.feature_dim),
            quant_scale=float(self.quant_scale), key_qp=qp, key_frames=key_frames, key_format=key_format,
            feature_coder_name=coder.name)

    def _segment_rows(self, start: int, end: int) -> int:
        """Feature rows of the segment [start, end): its inter frames, plus the key frame's own for
        codecs that send key features."""
        return end - start - 1 + int(self.sends_key_features)

    def _segment_start(self, key: np.ndarray) -> np.ndarray:
        """Prediction start of a segment's DPCM: the decoded key frame's features (zeros when the key
        frame's features are sent, as its first row)."""
        if self.sends_key_features or not self.feature_dim:
            return np.zeros(int(self.feature_dim), np.float32)
        return self._key_features(key)

    # ------------------------------------------------------------------ encode
    def encode(self, sequence: Sequence, rate_point: RatePoint, workdir: Path) -> EncodeResult:
        """Key frames where the key-frame policy puts them, closed-loop DPCM features in between.

        One segment per key frame: its key frame (coded by the key-frame coder stage and decoded at
        once, so both sides start from the same pixels) and the inter frames up to the next key frame,
        whose features are predicted from the decoded key frame's. A static policy (single, period)
        knows the positions in advance; an adaptive one animates each inter frame at the encoder and
        may turn it into a key frame (docs/conditions.md).
        """
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        frames = sequence.frames
        t_frames, h, w = frames.shape[:3]
        self._check_size(w, h, f"sequence {sequence.name!r}")
        self.load()
        coder, key_coder, policy = self._coder(), self._key_coder(), self._policy()
        t0 = time.perf_counter()
        coded = _KeyFrames(key_coder, rate_point.qp, w, h, workdir)
        if policy.adaptive:
            rows, synth_s = self._encode_adaptive(frames, coded, policy)
        else:
            positions = policy.positions(t_frames)
            container.check_key_frames(tuple(positions), t_frames)
            rows = []
            for i, k in enumerate(positions):
                end = positions[i + 1] if i + 1 < len(positions) else t_frames
                key = coded.add(k, frames[k])
                n = self._segment_rows(k, end)
                if n > 0 and self.feature_dim > 0:
                    start = self._segment_start(key)  # first: a model may analyse relative to its key frame
                    feats = self._features(frames[k:end] if self.sends_key_features else frames[k + 1:end])
                    rows.append(entropy.dpcm_encode(feats, start, self.quant_scale)[0])
            synth_s = 0.0
        d = int(self.feature_dim)
        q = np.concatenate(rows, axis=0) if rows else np.zeros((0, d), np.int64)
        expected = sum(self._segment_rows(a, b) for a, b in _segments(coded.positions, t_frames))
        if q.shape[0] != expected:
            q = np.zeros((expected, d), np.int64) if d == 0 else q
        t1 = time.perf_counter()
        payload = coder.encode(q)
        t2 = time.perf_counter()
        header = self._header(w, h, t_frames, sequence.fps, rate_point.qp, tuple(coded.positions),
                              key_coder.payload_format)
        path = workdir / f"{sequence.name}_{rate_point.key}.gfvc"
        breakdown = container.write(path, header, tuple(coded.payloads), payload)
        info: dict[str, Any] = {"feature_coder": coder.describe(), "key_frame_s": coded.seconds,
                                "features_s": t2 - t1 + (t1 - t0 - coded.seconds - synth_s),
                                "feature_bits_ideal": coder.ideal_bits(q) if q.size else 0.0,
                                "nonzero_residuals": int(np.count_nonzero(q))}
        if header.needs_version != container.VERSION:  # a stream of today's single-key-frame shape adds nothing
            info.update({"key_frames": list(coded.positions), "key_frame_bits": [8 * len(p) for p in coded.payloads],
                         "key_frame_policy": self.condition.generative.key_frame_policy.describe()})
            if policy.adaptive:
                info["adaptive_synthesis_s"] = synth_s
        commands = [c for cmds in coded.commands for c in cmds]
        return EncodeResult(bitstream=path, bits_breakdown=breakdown, commands=commands, info=info)

    def _encode_adaptive(self, frames: np.ndarray, coded: _KeyFrames, policy: KeyFramePolicy
                         ) -> tuple[list[np.ndarray], float]:
        """Frame by frame: quantise the features, animate the frame from the current key frame as the
        decoder will, and let the policy turn it into a key frame instead (DAC's adaptive refresh)."""
        t_frames = frames.shape[0]
        d = int(self.feature_dim)
        policy.start()

        def features(t: int) -> np.ndarray:
            # one frame at a time, after its segment's key frame: a model may analyse relative to it
            return self._features(frames[t:t + 1]) if d else np.zeros((1, 0), np.float32)

        rows: list[np.ndarray] = []
        synth_s = 0.0

        def start_segment(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            key = coded.add(t, frames[t])
            policy.key_frame(frames[t], key)
            if self.sends_key_features and d:
                q_key, rec_key = entropy.dpcm_encode(features(t), np.zeros(d, np.float32), self.quant_scale)
                rows.append(q_key)
                return key, rec_key[0], rec_key[0]
            kf = self._segment_start(key)
            return key, kf, kf

        key, key_feat, prev = start_segment(0)
        last = 0
        for t in range(1, t_frames):
            q_t, rec_t = entropy.dpcm_encode(features(t), prev, self.quant_scale)
            s0 = time.perf_counter()
            animated, _ = self.synthesise(key, key_feat, rec_t)
            synth_s += time.perf_counter() - s0
            if policy.refresh(t, t - last, frames[t], np.asarray(animated)[0]):
                key, key_feat, prev = start_segment(t)
                last = t
            else:
                rows.append(q_t)
                prev = rec_t[0]
        return rows, synth_s

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
        key_coder = self._stream_key_coder(hd.key_format, str(bitstream))
        coder = entropy.feature_coder_for(hd.feature_coder, hd.feature_coder_name)
        segments = _segments(list(hd.key_frames), hd.frames)
        # Decode the features first: a corrupt feature payload fails before any model work.
        q = coder.decode(c.feature_payload, sum(self._segment_rows(a, b) for a, b in segments), hd.feature_dim)
        self.load()
        out: list[np.ndarray] = []
        extras: dict[str, list[np.ndarray]] = {}
        row = 0
        for i, (a, b) in enumerate(segments):
            key = key_coder.decode(c.key_payloads[i], hd.width, hd.height, workdir / ("key" if i == 0 else f"key{a}"))
            _check_key(key, hd.width, hd.height)
            n = self._segment_rows(a, b)
            q_seg = q[row:row + n]
            row += n
            if self.sends_key_features and self.feature_dim:
                recon = entropy.dpcm_decode(q_seg, np.zeros(hd.feature_dim, np.float32), self.quant_scale)
                key_feat, recon = recon[0], recon[1:]
            else:
                key_feat = self._key_features(key) if self.feature_dim else np.zeros(0, np.float32)
                recon = entropy.dpcm_decode(q_seg, key_feat, self.quant_scale)
            seg_extras = {k: np.asarray(v) for k, v in self.key_extras(key, key_feat).items()}
            out.append(key[None])
            if b - a > 1:
                inter, inter_extras = self.synthesise(key, key_feat, recon)
                inter = np.asarray(inter)
                m = b - a - 1
                if inter.dtype != np.uint8 or inter.shape != (m, hd.height, hd.width, 3):
                    raise ModelMismatch(f"codec {self.name!r}: synthesise() gave {inter.dtype} {inter.shape}, the "
                                        f"bitstream needs uint8 {(m, hd.height, hd.width, 3)}: the model does not "
                                        "produce the stream's resolution")
                out.append(inter)
            else:
                inter_extras = {}
            self._merge_extras(extras, seg_extras, inter_extras, b - a - 1)
        frames = np.concatenate(out, axis=0)
        merged = {k: np.concatenate(v, axis=0) for k, v in extras.items()}
        return _decoded(frames, merged, hd.fps)

    def _merge_extras(self, acc: dict[str, list[np.ndarray]], key_x: dict[str, np.ndarray],
                      inter_x: dict[str, Any], n: int) -> None:
        """Append one segment's extras: one row for its key frame and one per inter frame."""
        names = set(key_x) | (set(inter_x) if n else set(key_x))
        for name in sorted(names):
            if name not in key_x or (n and name not in inter_x):
                raise InputError(f"codec {self.name!r}: extra {name!r} must come from both key_extras() "
                                 "and synthesise() so it has one row per frame")
            a = key_x[name]
            b = np.asarray(inter_x[name]) if n else a[:0]
            if a.shape[0] != 1 or b.shape[0] != n:
                raise InputError(f"codec {self.name!r}: extra {name!r} has {a.shape[0]} + {b.shape[0]} rows, "
                                 f"expected 1 + {n}")
            acc.setdefault(name, []).extend([a, b])

    # -------------------------------------------------------------- provenance
    def _container_version(self) -> int:
        """1 for streams of the CTC's shape (one VVC key frame, a coder with an id), else 2."""
        g = self.condition.generative
        try:
            fmt = self._key_coder().payload_format
        except Exception:  # an unknown coder is reported by check(); the version follows the name
            fmt = g.key_frame_coder
        simple = g.key_frame_policy.kind == "single" and fmt == container.VVC_FORMAT and self._coder().coder_id > 0
        return container.VERSION if simple else container.VERSION_MULTI_KEY

    def stages(self) -> dict[str, Any]:
        g = self.condition.generative
        return {"key_frame_policy": dataclasses.asdict(g.key_frame_policy),
                "key_frame_policy_text": g.key_frame_policy.describe(),
                "key_frame_coder": g.key_frame_coder, "key_frame_chroma": g.key_frame_chroma,
                "key_frame_levels": list(g.key_frame_qps), "feature_coder": g.feature_coder,
                "analysis_synthesis": f"{self.name} model {self.model_id()}"}

    def provenance(self) -> dict[str, Any]:
        g = self.condition.generative
        p = super().provenance()
        p.update({
            "model_id": self.model_id(), "model_checksum": self.model_checksum(),
            "feature_dim": int(self.feature_dim), "quant_scale": float(self.quant_scale),
            "feature_coder": self._coder().describe(), "container_version": self._container_version(),
            "key_frame": {"coder": g.key_frame_coder, "chroma": g.key_frame_chroma},
        })
        # Added with the key-frame policy stage: stated only when it is not the CTC's single key frame,
        # so the provenance (and the key) of every single-key-frame job stays what it was.
        if g.key_frame_policy != KeyFramePolicySpec():
            p["key_frame_policy"] = dataclasses.asdict(g.key_frame_policy)
        try:
            p["key_frame"]["intra"] = self._key_coder().provenance()
        except Exception as e:  # provenance must not fail a run; record why it is missing
            p["key_frame"]["intra"] = {"status": "not_recorded", "reason": f"{type(e).__name__}: {e}"}
        return p


class _KeyFrames:
    """The key frames of one stream as they are coded: positions, payloads, decoded pictures, commands."""

    def __init__(self, coder: KeyFrameCoder, level: int, width: int, height: int, workdir: Path) -> None:
        self.coder, self.level, self.width, self.height, self.workdir = coder, level, width, height, workdir
        self.positions: list[int] = []
        self.payloads: list[bytes] = []
        self.commands: list[list[list[str]]] = []
        self.seconds = 0.0

    def add(self, t: int, frame: np.ndarray) -> np.ndarray:
        """Code frame ``t`` as a key frame; return the decoded picture both sides start from."""
        t0 = time.perf_counter()
        wd = self.workdir / ("key" if not self.positions else f"key{t}")
        res = self.coder.encode(frame, self.level, wd)
        key = self.coder.decode(res.payload, self.width, self.height, wd)
        _check_key(key, self.width, self.height)
        self.positions.append(t)
        self.payloads.append(res.payload)
        self.commands.append(list(res.commands))
        self.seconds += time.perf_counter() - t0
        return key


def _segments(positions: list[int], frames: int) -> list[tuple[int, int]]:
    """[(start, end)] of each key frame's segment."""
    ends = positions[1:] + [frames]
    return list(zip(positions, ends, strict=True))


def _decoded(frames: np.ndarray, extras: dict[str, np.ndarray], fps: float) -> Decoded:
    """Decoded result; carries the container's frame rate if Decoded has an ``fps`` field."""
    if "fps" in getattr(Decoded, "__dataclass_fields__", {}):
        return Decoded(frames=frames, extras=extras, fps=fps)  # type: ignore[call-arg]
    return Decoded(frames=frames, extras=extras)


def _check_key(key: Any, width: int, height: int) -> None:
    if not isinstance(key, np.ndarray) or key.dtype != np.uint8 or key.shape != (height, width, 3):
        got = f"{key.dtype} {key.shape}" if isinstance(key, np.ndarray) else type(key).__name__
        raise BitstreamError(f"decoded key frame is {got}, the container says uint8 ({height}, {width}, 3)")
