"""Progress of long runs: a bar in a terminal, one line per finished job elsewhere (Slurm, CI, nohup).

The ETA weights what is left by what each codec has cost so far: a VTM
anchor job and a keyframe-repeat job differ by orders of magnitude, so the
mean over all finished jobs would mislead. ETA = sum over pending jobs of the
mean seconds of a finished job of the same codec (the mean over all finished
jobs for a codec with none finished yet), divided by the number of parallel
slots.
"""
from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import IO, Any


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class RunProgress:
    """Reports finished jobs of a run; ``done(rec)`` per record."""

    def __init__(self, jobs: Iterable[Any], slots: int, stream: IO[str] | None = None,
                 tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.pending = Counter(j.codec for j in jobs)
        self.total = sum(self.pending.values())
        self.slots = max(1, slots)
        self.finished = 0
        self.failed = 0
        self.cost: dict[str, list[float]] = defaultdict(list)
        self.t0 = time.monotonic()
        self._bar = None
        if self.tty and self.total:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit="job", file=self.stream, dynamic_ncols=True)

    def eta(self) -> float | None:
        """Seconds left, from per-codec mean job cost; None before any job finished."""
        all_costs = [c for v in self.cost.values() for c in v]
        if not all_costs:
            return None
        overall = sum(all_costs) / len(all_costs)
        left = 0.0
        for codec, n in self.pending.items():
            costs = self.cost.get(codec)
            left += n * (sum(costs) / len(costs) if costs else overall)
        running = sum(self.pending.values())
        return left / max(1, min(self.slots, running)) if running else 0.0

    def done(self, rec: dict[str, Any]) -> None:
        codec = rec.get("codec", "?")
        self.pending[codec] = max(0, self.pending[codec] - 1)
        self.finished += 1
        secs = float((rec.get("timings") or {}).get("total_s") or 0.0)
        ok = rec.get("status") == "ok"
        if ok:
            self.cost[codec].append(secs)
        else:
            self.failed += 1
        label = f"{codec}/{(rec.get('sequence') or {}).get('name')}/{(rec.get('rate_point') or {}).get('label')}"
        err = rec.get("error") or {}
        tag = "ok" if ok else f"FAILED ({err.get('reason') or err.get('type')})"
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"{label} {tag}, ETA {fmt_duration(self.eta())}", refresh=False)
            if not ok:
                self._bar.write(f"job {label} failed: {str(err.get('message', '')).splitlines()[0][:300]}",
                                file=self.stream)
            return
        width = len(str(self.total))
        line = (f"gfvc: [{self.finished:>{width}}/{self.total}] {label} {tag} in {secs:.1f} s | "
                f"elapsed {fmt_duration(time.monotonic() - self.t0)} | ETA {fmt_duration(self.eta())}")
        if not ok:
            line += f" | {str(err.get('message', '')).splitlines()[0][:300]}"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class MetricProgress:
    """`gfvc metrics` on long sequences: a bar per metric in a terminal, else a line per quarter."""

    def __init__(self, stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._bars: dict[str, Any] = {}
        self._last: dict[str, int] = {}
        self.t0 = time.monotonic()

    def __call__(self, metric: str, done: int, total: int) -> None:
        unit = "clip" if metric == "fvd" else "frame"
        if self.tty:
            from tqdm import tqdm

            bar = self._bars.get(metric)
            if bar is None:
                bar = self._bars[metric] = tqdm(total=total, desc=metric, unit=unit, file=self.stream, leave=False)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
            return
        quarter = (4 * done) // max(1, total)
        if quarter > self._last.get(metric, 0) or done >= total:
            self._last[metric] = quarter
            print(f"gfvc metrics: {metric} {done}/{total} {unit}s ({100 * done // max(1, total)}%), "
                  f"elapsed {fmt_duration(time.monotonic() - self.t0)}", file=self.stream, flush=True)

    def close(self) -> None:
        for b in self._bars.values():
            b.close()
        self._bars.clear()
