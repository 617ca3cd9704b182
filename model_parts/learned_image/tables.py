"""Quantized CDF tables of learned entropy models and the range coding that uses them.

Learned image codecs (Ballé et al., "Variational image compression with a
scale hyperprior", ICLR 2018; Minnen et al., NeurIPS 2018) do not code with
the continuous densities of their entropy models: after training, each
density is tabulated once as an integer CDF with 16-bit precision, and the
entropy coder only ever sees those tables plus a table index per symbol.
CompressAI stores the tables in every released checkpoint
(``_quantized_cdf``, ``_cdf_length``, ``_offset``), so encoder and decoder
share them bit for bit whatever the float arithmetic of the machine.

This module holds

* :func:`pmf_to_quantized_cdf`: the tabulation rule CompressAI applies when a
  model is ``update()``-d (its C++ ``pmf_to_quantized_cdf``, 16-bit), written
  here with numpy so a checkpoint without tables gets exactly the tables
  CompressAI would give it (checked against CompressAI 1.2.4's own tables by
  the conformance vectors);
* :class:`TableCoder`: codes integer symbols with such tables through
  ``constriction``'s range coder (Python API of a Rust coder; queue semantics,
  so the decoder reads symbols in the order the encoder wrote them).

Symbol mapping (as in CompressAI's rANS interface): a symbol ``q`` coded with
table ``t`` becomes ``v = q - offset[t]``; values ``0 .. L_t - 2`` (``L_t`` =
``cdf_length[t]``) are coded directly except the last one, ``L_t - 2``, the
table's tail symbol, which escapes to a bypass code: ``v < 0`` maps to the
odd number ``-2 v - 1`` and ``v >= L_t - 2`` to the even ``2 (v - L_t + 2)``,
sent as a count of 4-bit groups (itself in 4-bit groups, 15 meaning "more")
and then the groups, least significant first. Only the order in which a batch
of symbols is written differs from CompressAI (table by table instead of
interleaved, see :meth:`TableCoder.encode`): the code lengths are the same
up to the range coder's own rounding and flush.
"""
from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from gfvc.errors import BitstreamError, InputError

PRECISION = 16           # bits of CompressAI's quantized CDFs
BYPASS_BITS = 4          # escape values travel in groups of 4 bits
_BYPASS_MAX = (1 << BYPASS_BITS) - 1
MAX_BYPASS_GROUPS = 8    # 32 bits: an escape longer than this is garbage


def pmf_to_quantized_cdf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer CDF (length ``len(pmf) + 1``, from 0 to ``2**precision``) of a float32 pmf.

    The rule is CompressAI's: scale each probability (float32) by
    ``2**precision`` and round half away from zero; renormalise the integers
    by ``floor(2**precision * f / total)``; accumulate, forcing the last entry
    to ``2**precision``; then give every symbol left with frequency zero one
    unit, taken from the symbol with the smallest frequency above one
    (the first such symbol on ties), in symbol order. A heap finds that symbol
    (CompressAI scans the whole table for each zero), so tables of several
    thousand entries with long empty tails take milliseconds.
    """
    p = np.asarray(pmf, dtype=np.float32).reshape(-1)
    if p.size == 0 or not np.isfinite(p).all() or (p < 0).any():
        raise InputError("pmf must be a non-empty array of finite non-negative probabilities")
    one = 1 << precision
    # float32 * 2**k is exact; +0.5 and floor in float64 are exact too: round half away from zero
    scaled = np.floor((p * np.float32(one)).astype(np.float64) + 0.5).astype(np.int64)
    total = int(scaled.sum())
    if total == 0:
        raise InputError("pmf has no probability mass at 16-bit precision")
    freq = (one * scaled) // total
    cdf = np.zeros(p.size + 1, dtype=np.int64)
    cdf[1:] = np.cumsum(freq)
    cdf[-1] = one
    freq = np.diff(cdf)
    zeros = np.flatnonzero(freq == 0)
    if zeros.size:
        heap = [(int(f), int(j)) for j, f in enumerate(freq) if f > 1]
        heapq.heapify(heap)
        for i in zeros:
            while True:
                if not heap:
                    raise InputError("pmf cannot be quantized: no frequency left to give to empty symbols")
                f, j = heapq.heappop(heap)
                if freq[j] == f:  # else a stale entry
                    break
            freq[j] -= 1
            freq[i] = 1
            if freq[j] > 1:
                heapq.heappush(heap, (int(freq[j]), j))
        cdf[1:] = np.cumsum(freq)
    return cdf.astype(np.int32)


def pmfs_to_cdf_table(pmfs: list[np.ndarray], tail_masses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cdf table (T, max_len + 2) int32 zero-padded, cdf_length (T,) int32) for T pmfs plus tail masses.

    Row ``t`` is the quantized CDF of ``pmfs[t]`` followed by the tail mass as
    one extra symbol (the escape), so it has ``len(pmfs[t]) + 2`` entries.
    """
    width = max(len(p) for p in pmfs) + 2
    table = np.zeros((len(pmfs), width), dtype=np.int32)
    lengths = np.zeros(len(pmfs), dtype=np.int32)
    for t, p in enumerate(pmfs):
        row = pmf_to_quantized_cdf(np.concatenate([np.asarray(p, np.float32), np.float32(tail_masses[t]).reshape(1)]))
        table[t, :row.size] = row
        lengths[t] = row.size
    return table, lengths


def check_tables(cdf: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, what: str) -> None:
    """Refuse tables a decoder could loop or crash on (InputError naming ``what``)."""
    if cdf.ndim != 2 or lengths.shape != (cdf.shape[0],) or offsets.shape != (cdf.shape[0],):
        raise InputError(f"{what}: entropy tables have inconsistent shapes {cdf.shape}, {lengths.shape}, "
                         f"{offsets.shape}")
    if (lengths < 3).any() or (lengths > cdf.shape[1]).any():
        raise InputError(f"{what}: cdf lengths out of range")
    for t in range(cdf.shape[0]):
        row = cdf[t, :lengths[t]]
        if row[0] != 0 or row[-1] != 1 << PRECISION or (np.diff(row) <= 0).any():
            raise InputError(f"{what}: quantized CDF {t} is not a strictly increasing 16-bit CDF")


class TableCoder:
    """Range coding of integer symbols with CompressAI-style quantized CDF tables (see module docstring)."""

    def __init__(self, cdf: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, what: str) -> None:
        import constriction  # lazy: compiled extension, only needed when coding

        self._constriction = constriction
        self.cdf = np.asarray(cdf, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        check_tables(self.cdf, self.lengths, self.offsets, what)
        self.max_value = self.lengths - 2  # the escape symbol of each table
        self._models: dict[int, Any] = {}
        self._nibble = constriction.stream.model.Uniform(1 << BYPASS_BITS)

    def model(self, t: int) -> Any:
        """constriction model of table ``t`` (built once): probabilities freq / 2**16, exact in float64."""
        m = self._models.get(t)
        if m is None:
            freq = np.diff(self.cdf[t, :self.lengths[t]]).astype(np.float64) / float(1 << PRECISION)
            m = self._constriction.stream.model.Categorical(freq, perfect=False)
            self._models[t] = m
        return m

    def encode(self, enc: Any, q: np.ndarray, idx: np.ndarray) -> int:
        """Append symbols ``q`` (ints) coded with tables ``idx`` to ``enc``; returns how many escaped.

        Order: the table symbols grouped by table index (ascending), each group
        in the given order; then the escape codes in the given order. The
        decoder knows ``idx`` before it reads, so it reads the same order.
        """
        q = np.asarray(q, dtype=np.int64).reshape(-1)
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        v = q - self.offsets[idx]
        top = self.max_value[idx]
        low, high = v < 0, v >= top
        sym = np.where(low | high, top, v)
        for t in np.unique(idx):
            sel = idx == t
            enc.encode(sym[sel].astype(np.int32), self.model(int(t)))
        esc = np.flatnonzero(low | high)
        if esc.size:
            raw = np.where(low[esc], -2 * v[esc] - 1, 2 * (v[esc] - top[esc]))
            if (raw >= 1 << (BYPASS_BITS * MAX_BYPASS_GROUPS)).any():
                raise InputError("a latent value is too far outside its entropy model's range to code "
                                 "(input or weights produce non-image latents)")
            for r in raw.tolist():
                self._encode_bypass(enc, int(r))
        return int(esc.size)

    def _encode_bypass(self, enc: Any, raw: int) -> None:
        groups = 0
        while raw >> (groups * BYPASS_BITS):
            groups += 1
        nibbles = []
        n = groups
        while n >= _BYPASS_MAX:
            nibbles.append(_BYPASS_MAX)
            n -= _BYPASS_MAX
        nibbles.append(n)
        nibbles += [(raw >> (j * BYPASS_BITS)) & _BYPASS_MAX for j in range(groups)]
        enc.encode(np.asarray(nibbles, dtype=np.int32), self._nibble)

    def decode(self, dec: Any, idx: np.ndarray) -> np.ndarray:
        """Read the symbols coded by :meth:`encode` with tables ``idx`` (int64 array in ``idx``'s order)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        sym = np.empty(idx.size, dtype=np.int64)
        try:
            for t in np.unique(idx):
                sel = np.flatnonzero(idx == t)
                sym[sel] = dec.decode(self.model(int(t)), int(sel.size))
            v = sym.copy()
            top = self.max_value[idx]
            for i in np.flatnonzero(sym == top).tolist():
                raw = self._decode_bypass(dec)
                v[i] = -((raw + 1) // 2) if raw & 1 else top[i] + raw // 2
        except (ValueError, RuntimeError, AssertionError) as e:  # constriction's reports of unreadable data
            raise BitstreamError(f"learned-codec payload cannot be decoded ({e})") from None
        return v + self.offsets[idx]

    def _decode_bypass(self, dec: Any) -> int:
        groups = 0
        while True:
            n = int(dec.decode(self._nibble, 1)[0])
            groups += n
            if groups > MAX_BYPASS_GROUPS:
                raise BitstreamError("learned-codec payload is corrupt (escape code longer than 32 bits)")
            if n < _BYPASS_MAX:
                break
        nibbles = dec.decode(self._nibble, groups) if groups else np.zeros(0, dtype=np.int32)
        return sum(int(x) << (j * BYPASS_BITS) for j, x in enumerate(nibbles.tolist()))
