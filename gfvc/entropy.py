"""Feature coding of generative codecs: closed-loop DPCM + binary arithmetic coding.

Two coders share one binarisation (CTC_FACTS section 3):

* signed -> unsigned ``0, 1, -1, 2, -2 -> 0, 1, 2, 3, 4``,
* exp-Golomb order 0: ``k`` = floor(log2(u + 1)); a unary prefix of ``k`` one-bins
  closed by a zero-bin, then ``k`` suffix bins holding ``u + 1 - 2**k`` (MSB first).

``"cabac"`` (ours) codes every bin with an adaptive binary context selected by
bin index, by the same dimension's residual in the previous frame (motion
persists) and, optionally, by feature dimension, and keeps its statistics for
the whole sequence (one arithmetic-coded stream per sequence). The bins of one
frame are coded with the probabilities the contexts had at the start of the
frame and the counts are updated after the frame (frame-synchronous
adaptation). That lets encoder and decoder compute all probabilities of a
frame with vectorised numpy and hand them to ``constriction``'s range coder in
batches: no per-bin Python loop. Probabilities are float64 ratios of integer
counts, so both sides compute bit-identical values. Measured on keypoint-like
trajectories (benchmarks/feature_coding_bench.py): 0.67-0.85x the bits of the
GFVC software's coder and within 0.3 % of the model's ideal code length
(2 % on the shortest streams: the 32-bit-word flush).

``"gfvc-reference"`` emulates the GFVC AhG software's coder: one adaptive
order-0 binary context (Laplace counts starting at 1/1), reset at every frame,
every bin (prefix and suffix) through that context, and a separate arithmetic
code per frame, byte padded. Its context adapts *within* a frame, which makes
decoding inherently sequential; it is implemented as a small integer binary
arithmetic coder (Witten, Neal & Cleary, CACM 30(6) 1987 structure) whose
per-frame codes are self-delimiting (see ``_BinaryArithmeticEncoder.finish``).
It is the baseline, not the hot path.

Decoders never loop unboundedly on garbage: prefix lengths are bounded by
:data:`MAX_PREFIX`, symbol counts come from the container header, and every
failure raises :class:`gfvc.errors.BitstreamError`.
"""
from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from gfvc.errors import BitstreamError, ConfigError, InputError, UnknownName
from gfvc.registry import Registry

# Longest exp-Golomb prefix accepted (|q| < 2**29). A decoder reading more one-bins
# than this is reading garbage and stops with BitstreamError.
MAX_PREFIX = 30
MAX_ABS_Q = (1 << MAX_PREFIX) // 2 - 1


# --------------------------------------------------------------------------- DPCM
def dpcm_encode(features: np.ndarray, key_features: np.ndarray, quant_scale: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Closed-loop DPCM: quantised residuals vs the previous *reconstructed* features.

    features (N, D), key_features (D,) (from the decoded key frame) ->
    (q int64 (N, D), recon float32 (N, D)). The reconstruction uses the same
    float32 arithmetic as :func:`dpcm_decode`, so both sides agree bit-exactly.
    """
    feats = np.asarray(features, dtype=np.float32)
    prev = np.asarray(key_features, dtype=np.float32).reshape(-1)
    if feats.ndim != 2 or feats.shape[1] != prev.shape[0]:
        raise InputError(f"features {feats.shape} do not match key features {prev.shape}")
    if not (np.isfinite(feats).all() and np.isfinite(prev).all()):
        raise InputError("features contain NaN or inf; the analysis model output is unusable")
    scale = np.float32(quant_scale)
    q = np.zeros(feats.shape, dtype=np.int64)
    recon = np.zeros(feats.shape, dtype=np.float32)
    for t in range(feats.shape[0]):
        qt = np.rint((feats[t] - prev) * scale)
        if np.abs(qt).max(initial=0) > MAX_ABS_Q:
            raise InputError(f"frame {t + 1}: quantised residual exceeds {MAX_ABS_Q}; "
                             "features or quant_scale are out of range")
        q[t] = qt.astype(np.int64)
        prev = _dpcm_step(prev, q[t], scale)
        recon[t] = prev
    return q, recon


def dpcm_decode(q: np.ndarray, key_features: np.ndarray, quant_scale: float) -> np.ndarray:
    """Inverse of :func:`dpcm_encode`: recon[t] = recon[t-1] + q[t] / Q (float32)."""
    prev = np.asarray(key_features, dtype=np.float32).reshape(-1)
    scale = np.float32(quant_scale)
    out = np.zeros((q.shape[0], prev.shape[0]), dtype=np.float32)
    for t in range(q.shape[0]):
        prev = _dpcm_step(prev, q[t], scale)
        out[t] = prev
    return out


def _dpcm_step(prev: np.ndarray, q: np.ndarray, scale: np.float32) -> np.ndarray:
    return (prev + q.astype(np.float32) / scale).astype(np.float32)


# ------------------------------------------------------------------ binarisation
def signed_to_unsigned(q: np.ndarray) -> np.ndarray:
    """0, 1, -1, 2, -2 -> 0, 1, 2, 3, 4 (vectorised, int64)."""
    q = np.asarray(q, dtype=np.int64)
    return np.where(q > 0, 2 * q - 1, -2 * q)


def unsigned_to_signed(u: np.ndarray) -> np.ndarray:
    """Inverse of :func:`signed_to_unsigned`."""
    u = np.asarray(u, dtype=np.int64)
    return np.where(u % 2 == 1, (u + 1) // 2, -(u // 2))


def eg0_split(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exp-Golomb order 0: (prefix length k, suffix value s) with u + 1 = 2**k + s."""
    v = np.asarray(u, dtype=np.int64) + 1
    k = (np.frexp(v.astype(np.float64))[1] - 1).astype(np.int64)  # exact for v < 2**53
    return k, v - (np.int64(1) << k)


def eg0_bins(u: np.ndarray) -> np.ndarray:
    """Total number of bins (2k + 1) of each value."""
    k, _ = eg0_split(u)
    return 2 * k + 1


# ---------------------------------------------------------------------- coders
class FeatureCoder(abc.ABC):
    """Lossless coder of quantised DPCM residuals (N frames x D values)."""

    name: ClassVar[str] = ""
    coder_id: ClassVar[int] = 0  # byte stored in the container

    @abc.abstractmethod
    def encode(self, q: np.ndarray) -> bytes:
        """q int (N, D) -> payload bytes (the whole sequence)."""

    @abc.abstractmethod
    def decode(self, data: bytes, n: int, d: int) -> np.ndarray:
        """Payload -> q int64 (n, d). Raises BitstreamError on corrupt input."""

    @abc.abstractmethod
    def ideal_bits(self, q: np.ndarray) -> float:
        """Sum of -log2 p of every bin under this coder's adaptive model."""

    def describe(self) -> dict:
        return {"name": self.name, "id": self.coder_id}


def _check_q(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q)
    if q.ndim != 2 or not np.issubdtype(q.dtype, np.integer):
        raise InputError(f"quantised features must be an integer (N, D) array, got {q.dtype} {q.shape}")
    if q.size and np.abs(q).max() > MAX_ABS_Q:
        raise InputError(f"quantised value exceeds {MAX_ABS_Q}")
    return q.astype(np.int64)


class CabacCoder(FeatureCoder):
    """Context-adaptive binary arithmetic coder; statistics carried over the sequence.

    Context of a bin = (group, bin index, history class):

    * prefix bin ``j`` -> bin index min(j, prefix_contexts - 1); group = the
      feature dimension (``prefix="dim"``) or one group for all dimensions
      (``prefix="shared"``);
    * suffix bin ``i`` of a value with prefix length ``k`` -> one context per
      (k, i) shared by all dimensions (``suffix="shared"``), per (dimension, i)
      (``suffix="dim"``), or bypass with p = 1/2 (``suffix="bypass"``);
    * history class (``history="prev7"``) = the same dimension's quantised
      residual in the previous frame clipped to -3..3 (motion persists, so the
      previous residual predicts the magnitude *and* the sign of the next one);
      ``history="none"`` disables it.

    Estimator: Krichevsky-Trofimov p1 = (n1 + 1/2) / (n0 + n1 + 1), counts
    halved when their sum exceeds ``limit`` (keeps the model adaptive).
    Defaults were chosen by measurement (benchmarks/feature_coding_bench.py
    --sweep): on 150-frame sequences, contexts shared across dimensions but
    split by history class beat per-dimension contexts, which see too few bins.
    """

    name = "cabac"
    coder_id = 1

    def __init__(self, prefix_contexts: int = 4, prefix: str = "shared", suffix: str = "shared",
                 history: str = "prev7", limit: int = 63) -> None:
        if prefix not in ("dim", "shared") or suffix not in ("bypass", "dim", "shared") \
                or history not in ("none", "prev7"):
            raise ConfigError(f"cabac: bad context design prefix={prefix!r} suffix={suffix!r} "
                              f"history={history!r}")
        if prefix_contexts < 1 or limit < 2:
            raise ConfigError("cabac: prefix_contexts must be >= 1 and limit >= 2")
        self.prefix_contexts = int(prefix_contexts)
        self.prefix = prefix
        self.suffix = suffix
        self.history = history
        self.limit = int(limit)
        self._classes = 7 if history == "prev7" else 1

    def describe(self) -> dict:
        return {**super().describe(), "prefix_contexts": self.prefix_contexts, "prefix": self.prefix,
                "suffix": self.suffix, "history": self.history, "limit": self.limit,
                "estimator": "KT, counts halved above limit, updated per frame",
                "engine": "constriction RangeEncoder (32-bit words)"}

    # Context table layout: [prefix | suffix]; index -1 = bypass.
    def _num_prefix(self, d: int) -> int:
        groups = d if self.prefix == "dim" else 1
        return groups * self.prefix_contexts * self._classes

    def _num_contexts(self, d: int) -> int:
        c = self._classes
        if self.suffix == "dim":
            return self._num_prefix(d) + d * MAX_PREFIX * c
        if self.suffix == "shared":
            return self._num_prefix(d) + (MAX_PREFIX + 1) * MAX_PREFIX * c
        return self._num_prefix(d)

    def _class(self, prev_q: np.ndarray) -> np.ndarray:
        if self._classes == 1:
            return np.zeros(prev_q.shape, dtype=np.int64)
        return np.clip(prev_q, -3, 3).astype(np.int64) + 3

    def _prefix_ctx(self, dims: np.ndarray, j: int, cls: np.ndarray) -> np.ndarray:
        group = dims if self.prefix == "dim" else 0
        return (group * self.prefix_contexts + min(j, self.prefix_contexts - 1)) * self._classes + cls

    def _suffix_ctx(self, dims: np.ndarray, k: np.ndarray, i: int, cls: np.ndarray, d: int) -> np.ndarray:
        base = self._num_prefix(d)
        if self.suffix == "dim":
            return base + (dims * MAX_PREFIX + i) * self._classes + cls
        if self.suffix == "shared":
            return base + (k * MAX_PREFIX + i) * self._classes + cls
        return np.full(dims.shape, -1, dtype=np.int64)

    def max_values(self, nbytes: int) -> int:
        """Upper bound on the values a payload of ``nbytes`` can hold.

        Every value has >= 1 bin and every bin costs >= -log2((limit + 1/2) / (limit + 1))
        bits (counts stay <= limit; 10 % margin for the coder's probability quantisation),
        so a decoder never works on (or allocates for) more values than the payload can
        carry: a corrupt header cannot make it run for hours.
        """
        min_bits = 0.9 * -np.log2((self.limit + 0.5) / (self.limit + 1))
        return int((8 * nbytes + 64) / min_bits) + 1

    @staticmethod
    def _probs(counts: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        """P(bin = 1) per bin; bypass bins (ctx -1) get exactly 1/2."""
        c = counts[np.maximum(ctx, 0)]
        p = (c[:, 1] + 0.5) / (c[:, 0] + c[:, 1] + 1.0)
        return np.where(ctx < 0, 0.5, p)

    def _update(self, counts: np.ndarray, ctx: np.ndarray, bits: np.ndarray) -> None:
        m = ctx >= 0
        np.add.at(counts, (ctx[m], bits[m]), 1)
        # halve (rounding up) until every context is back under the limit; this also
        # bounds P(bin) away from 0 and 1, so a payload of F bytes holds a bounded
        # number of bins (checked by decode against the header's counts)
        touched = np.unique(ctx[m])
        c = counts[touched]
        big = c[:, 0] + c[:, 1] > self.limit
        while big.any():
            c[big] = (c[big] + 1) // 2
            big = c[:, 0] + c[:, 1] > self.limit
        counts[touched] = c

    def _frame_bins(self, u: np.ndarray, cls: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
        """(contexts, bits) of one frame in coding order (the decoder's order)."""
        k, s = eg0_split(u)
        dims = np.arange(u.shape[0], dtype=np.int64)
        ctxs: list[np.ndarray] = []
        bits: list[np.ndarray] = []
        kmax = int(k.max(initial=0))
        for j in range(kmax + 1):
            act = k >= j
            ctxs.append(self._prefix_ctx(dims[act], j, cls[act]))
            bits.append((k[act] > j).astype(np.int64))
        for i in range(kmax):
            act = k > i
            ka = k[act]
            ctxs.append(self._suffix_ctx(dims[act], ka, i, cls[act], d))
            bits.append((s[act] >> (ka - 1 - i)) & 1)
        return np.concatenate(ctxs), np.concatenate(bits)

    def _all_bins(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bits and their model probabilities for the whole sequence, in coding order."""
        n, d = q.shape
        u = signed_to_unsigned(q)
        counts = np.zeros((self._num_contexts(d), 2), dtype=np.int64)
        all_bits: list[np.ndarray] = []
        all_p: list[np.ndarray] = []
        for t in range(n):
            cls = self._class(q[t - 1] if t else np.zeros(d, dtype=np.int64))
            ctx, bits = self._frame_bins(u[t], cls, d)
            all_p.append(self._probs(counts, ctx))
            all_bits.append(bits)
            self._update(counts, ctx, bits)
        if not all_bits:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(all_bits), np.concatenate(all_p)

    def encode(self, q: np.ndarray) -> bytes:
        q = _check_q(q)
        if q.size == 0:
            return b""
        import constriction

        bits, p = self._all_bins(q)
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(bits.astype(np.int32), _bernoulli(), p.astype(np.float64))
        return enc.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, n: int, d: int) -> np.ndarray:
        if n * d == 0:
            if data:
                raise BitstreamError(f"feature payload has {len(data)} bytes but no features are expected")
            return np.zeros((n, d), dtype=np.int64)
        if not data or len(data) % 4:
            raise BitstreamError(f"cabac feature payload length {len(data)} is not a positive multiple of 4")
        if n * d > self.max_values(len(data)):
            raise BitstreamError(f"header declares {n} x {d} feature values but a {len(data)}-byte cabac payload "
                                 f"holds at most {self.max_values(len(data))} (corrupt header)")
        import constriction

        fam = _bernoulli()
        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").copy())
        counts = np.zeros((self._num_contexts(d), 2), dtype=np.int64)
        dims = np.arange(d, dtype=np.int64)
        out = np.zeros((n, d), dtype=np.int64)
        for t in range(n):
            cls = self._class(out[t - 1] if t else np.zeros(d, dtype=np.int64))
            k = np.zeros(d, dtype=np.int64)
            act = np.ones(d, dtype=bool)
            ctxs: list[np.ndarray] = []
            bins: list[np.ndarray] = []
            j = 0
            while act.any():
                if j > MAX_PREFIX:
                    raise BitstreamError(f"frame {t + 1}: exp-Golomb prefix longer than {MAX_PREFIX} bins "
                                         "(corrupt feature payload)")
                ctx = self._prefix_ctx(dims[act], j, cls[act])
                b = _decode_bins(dec, fam, self._probs(counts, ctx))
                ctxs.append(ctx)
                bins.append(b)
                idx = dims[act][b == 1]
                k[idx] += 1
                act = np.zeros(d, dtype=bool)
                act[idx] = True
                j += 1
            s = np.zeros(d, dtype=np.int64)
            for i in range(int(k.max(initial=0))):
                act = k > i
                ctx = self._suffix_ctx(dims[act], k[act], i, cls[act], d)
                b = _decode_bins(dec, fam, self._probs(counts, ctx))
                ctxs.append(ctx)
                bins.append(b)
                s[act] = (s[act] << 1) | b
            self._update(counts, np.concatenate(ctxs), np.concatenate(bins))
            u = (np.int64(1) << k) - 1 + s
            out[t] = unsigned_to_signed(u)
        if not dec.maybe_exhausted():
            raise BitstreamError("feature payload has trailing data after the last frame (corrupt stream)")
        return out

    def ideal_bits(self, q: np.ndarray) -> float:
        q = _check_q(q)
        bits, p = self._all_bins(q)
        return float(-np.log2(np.where(bits == 1, p, 1.0 - p)).sum())


def _bernoulli():
    import constriction

    return constriction.stream.model.Bernoulli(perfect=False)


def _decode_bins(dec, fam, p: np.ndarray) -> np.ndarray:
    try:
        return np.asarray(dec.decode(fam, p.astype(np.float64)), dtype=np.int64)
    except (ValueError, RuntimeError, AssertionError) as e:  # constriction reports bad data this way
        raise BitstreamError(f"feature payload cannot be decoded: {e}") from None


# ------------------------------------------------------- GFVC-software reference
_BITS = 32
_FULL = (1 << _BITS) - 1
_HALF = 1 << (_BITS - 1)
_QUARTER = 1 << (_BITS - 2)


class _BinaryArithmeticEncoder:
    """Integer binary arithmetic coder with frequency counts (WNC 1987 structure)."""

    def __init__(self) -> None:
        self.low, self.high, self.pending = 0, _FULL, 0
        self.bits: list[int] = []

    def encode(self, bit: int, c0: int, total: int) -> None:
        low, high = self.low, self.high
        split = low + ((high - low + 1) * c0) // total - 1
        if bit:
            low = split + 1
        else:
            high = split
        out = self.bits
        while True:
            if high < _HALF:
                out.append(0)
                out.extend([1] * self.pending)
                self.pending = 0
            elif low >= _HALF:
                out.append(1)
                out.extend([0] * self.pending)
                self.pending = 0
                low -= _HALF
                high -= _HALF
            elif low >= _QUARTER and high < 3 * _QUARTER:
                self.pending += 1
                low -= _QUARTER
                high -= _QUARTER
            else:
                break
            low <<= 1
            high = (high << 1) | 1
        self.low, self.high = low, high

    def finish_at_eof(self) -> bytes:
        """The GFVC software's termination (its reference arithmetic coder): a single
        1 bit, relying on the zeros a decoder reads past the end of a per-frame file
        (low < HALF <= high, so "1000..." lies in the final interval)."""
        bits = self.bits + [1]
        bits += [0] * (-len(bits) % 8)
        return np.packbits(np.array(bits, dtype=np.uint8)).tobytes()

    def finish(self) -> bytes:
        # WNC termination: two bits (plus pending ones) select a quarter interval
        # inside [low, high], so whatever bits follow (the next frame's code) the
        # decoder decodes correctly; the code is then zero-padded to a whole byte.
        # The code length is (renormalisation shifts + 2) bits, which the decoder
        # counts too: frames are self-delimiting, no length field is needed.
        self.pending += 1
        if self.low < _QUARTER:
            self.bits.append(0)
            self.bits.extend([1] * self.pending)
        else:
            self.bits.append(1)
            self.bits.extend([0] * self.pending)
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return np.packbits(np.array(bits, dtype=np.uint8)).tobytes()


class _BinaryArithmeticDecoder:
    """Decodes one frame's code starting at bit ``start`` of ``bits`` (zeros past the end)."""

    def __init__(self, bits: list[int], start: int) -> None:
        self.bits = bits
        self.pos = start
        self.shifts = 0
        self.low, self.high = 0, _FULL
        code = 0
        for _ in range(_BITS):
            code = (code << 1) | self._next()
        self.code = code

    def _next(self) -> int:
        p = self.pos
        self.pos = p + 1
        return self.bits[p] if p < len(self.bits) else 0

    def decode(self, c0: int, total: int) -> int:
        low, high, code = self.low, self.high, self.code
        split = low + ((high - low + 1) * c0) // total - 1
        if code <= split:
            bit = 0
            high = split
        else:
            bit = 1
            low = split + 1
        while True:
            if high < _HALF:
                pass
            elif low >= _HALF:
                low -= _HALF
                high -= _HALF
                code -= _HALF
            elif low >= _QUARTER and high < 3 * _QUARTER:
                low -= _QUARTER
                high -= _QUARTER
                code -= _QUARTER
            else:
                break
            low <<= 1
            high = (high << 1) | 1
            code = (code << 1) | self._next()
            self.shifts += 1
        self.low, self.high, self.code = low, high, code
        return bit

    def code_bytes(self) -> int:
        """Bytes the encoder wrote for this frame: (shifts + 2) bits, byte padded."""
        return (self.shifts + 2 + 7) // 8


def _frame_bin_string(u: np.ndarray) -> list[int]:
    """All exp-Golomb bins of one frame, value by value (prefix then suffix)."""
    k, s = eg0_split(u)
    out: list[int] = []
    for kk, ss in zip(k.tolist(), s.tolist(), strict=True):
        out.extend([1] * kk)
        out.append(0)
        out.extend((ss >> (kk - 1 - i)) & 1 for i in range(kk))
    return out


class GfvcReferenceCoder(FeatureCoder):
    """The GFVC AhG software's feature coder (CTC_FACTS section 3), for comparison.

    One adaptive binary context, Laplace counts (1, 1) reset at every frame,
    exp-Golomb order 0, one byte-padded arithmetic code per frame. The GFVC
    software writes one file per frame; here the per-frame codes are simply
    concatenated (they are self-delimiting, see ``_BinaryArithmeticEncoder.finish``),
    so the stored size equals the software's accounting (sum of per-frame file
    sizes, :meth:`frame_sizes`) up to the termination: the software's coder ends a
    code with 1 bit and relies on end-of-file zeros, the stored codes with 2 bits
    plus pending underflow bits (measured: ~2 bits/frame more before padding).
    """

    name = "gfvc-reference"
    coder_id = 2

    def describe(self) -> dict:
        return {**super().describe(), "context": "one order-0 binary context, reset per frame",
                "padding": "byte per frame", "engine": "integer binary arithmetic coder (32-bit)"}

    def _encode_frame(self, u: np.ndarray, at_eof: bool = False) -> bytes:
        enc = _BinaryArithmeticEncoder()
        c = [1, 1]
        for b in _frame_bin_string(u):
            enc.encode(b, c[0], c[0] + c[1])
            c[b] += 1
        return enc.finish_at_eof() if at_eof else enc.finish()

    def frame_payloads(self, q: np.ndarray) -> list[bytes]:
        """The stored (self-delimiting) code of each frame."""
        u = signed_to_unsigned(_check_q(q))
        return [self._encode_frame(u[t]) for t in range(u.shape[0])]

    def frame_sizes(self, q: np.ndarray) -> list[int]:
        """Bytes per frame as the GFVC software counts them: one byte-padded file per
        frame, terminated with one bit (the decoder of a file reads zeros past its end)."""
        u = signed_to_unsigned(_check_q(q))
        return [len(self._encode_frame(u[t], at_eof=True)) for t in range(u.shape[0])]

    def encode(self, q: np.ndarray) -> bytes:
        q = _check_q(q)
        if q.size == 0:
            return b""
        return b"".join(self.frame_payloads(q))

    def decode(self, data: bytes, n: int, d: int) -> np.ndarray:
        if n * d == 0:
            if data:
                raise BitstreamError(f"feature payload has {len(data)} bytes but no features are expected")
            return np.zeros((n, d), dtype=np.int64)
        if n > len(data):  # every frame's code has at least one byte
            raise BitstreamError(f"header declares {n} inter frames but the {len(data)}-byte feature payload "
                                 f"holds at most {len(data)} (corrupt header or truncated payload)")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tolist()
        out = np.zeros((n, d), dtype=np.int64)
        pos = 0
        for t in range(n):
            out[t], size = self._decode_frame(bits, pos, d, t)
            pos += size
            if pos > len(data):
                raise BitstreamError(f"frame {t + 1}: feature code runs past the end of the payload "
                                     "(truncated or corrupt stream)")
        if pos != len(data):
            raise BitstreamError(f"feature payload has {len(data) - pos} trailing bytes (corrupt stream)")
        return out

    def _decode_frame(self, bits: list[int], byte_pos: int, d: int, t: int) -> tuple[np.ndarray, int]:
        dec = _BinaryArithmeticDecoder(bits, 8 * byte_pos)
        c = [1, 1]
        u = np.zeros(d, dtype=np.int64)

        def nxt() -> int:
            b = dec.decode(c[0], c[0] + c[1])
            c[b] += 1
            return b

        for i in range(d):
            k = 0
            while nxt():
                k += 1
                if k > MAX_PREFIX:
                    raise BitstreamError(f"frame {t + 1}: exp-Golomb prefix longer than {MAX_PREFIX} bins "
                                         "(corrupt feature payload)")
            s = 0
            for _ in range(k):
                s = (s << 1) | nxt()
            u[i] = (1 << k) - 1 + s
        return unsigned_to_signed(u), dec.code_bytes()

    def ideal_bits(self, q: np.ndarray) -> float:
        u = signed_to_unsigned(_check_q(q))
        total = 0.0
        for t in range(u.shape[0]):
            b = np.array(_frame_bin_string(u[t]), dtype=np.int64)
            n1 = np.concatenate([[0], np.cumsum(b)[:-1]])
            n = np.arange(b.size)
            p1 = (n1 + 1) / (n + 2)
            total += float(-np.log2(np.where(b == 1, p1, 1 - p1)).sum())
        return total


FEATURE_CODERS: Registry[type[FeatureCoder]] = Registry("feature coder", entry_point_group="gfvc.feature_coders")
FEATURE_CODERS.add(CabacCoder.name, CabacCoder, origin=__name__)
FEATURE_CODERS.add(GfvcReferenceCoder.name, GfvcReferenceCoder, origin=__name__)


def get_feature_coder(name: str) -> FeatureCoder:
    """Coder by its condition name (condition.generative.feature_coder); a plug-in's coders included."""
    try:
        return FEATURE_CODERS.get(name)()
    except UnknownName as e:
        raise ConfigError(str(e)) from None


def feature_coder_by_id(coder_id: int) -> FeatureCoder:
    """Coder by the id byte stored in a version-1 container (the suite's own coders have ids)."""
    for name in FEATURE_CODERS.names():
        cls = FEATURE_CODERS.get(name)
        if cls.coder_id and cls.coder_id == coder_id:
            return cls()
    known = ", ".join(f"{FEATURE_CODERS.get(n).coder_id}={n}" for n in FEATURE_CODERS.names()
                      if FEATURE_CODERS.get(n).coder_id)
    raise BitstreamError(f"unknown feature coder id {coder_id} in bitstream (known: {known})")


def feature_coder_for(coder_id: int, name: str) -> FeatureCoder:
    """The coder a container names: by name (version 2) or by id (version 1)."""
    if name:
        try:
            return FEATURE_CODERS.get(name)()
        except UnknownName as e:
            raise BitstreamError(f"the stream's feature coder is not installed here: {e}") from None
    return feature_coder_by_id(coder_id)


def ideal_code_length(q: np.ndarray, coder: str = "cabac") -> float:
    """Ideal adaptive code length in bits (sum of -log2 of the model's probabilities)."""
    return get_feature_coder(coder).ideal_bits(q)
