"""Codecs used only by the runner tests (registered when this module is imported).

They are deliberately simple so that the runner's behaviour (keys, resume,
executors, failures) is tested independently of the real codecs:
``test-lossy`` quantises pixel values by a QP-dependent step (so rate and
quality move with QP), ``test-slow`` adds a delay per job (for kill tests),
``test-fail`` fails at QP 42; ``test-tool``, ``test-crash-once`` and ``test-gen`` serve
the run-control and Dask tests (external processes, transient crashes, GPU routing).
"""
from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

import numpy as np

from gfvc.codec import CODECS, Codec, Decoded, EncodeResult, RatePoint, Sequence
from gfvc.errors import BitstreamError, ExternalToolError


class _Quant(Codec):
    family = "anchor"
    description = "test only: pixel quantisation + zlib"

    def encode(self, sequence: Sequence, rate_point: RatePoint, workdir: Path) -> EncodeResult:
        step = max(1, rate_point.qp // 4)
        q = (sequence.frames // step).astype(np.uint8)
        hdr = np.array([*q.shape, step], dtype=np.int32).tobytes()
        out = workdir / "stream.bin"
        out.write_bytes(hdr + zlib.compress(q.tobytes(), 6))
        return EncodeResult(out, {"payload": out.stat().st_size * 8})

    def decode(self, bitstream: Path, workdir: Path) -> Decoded:
        data = bitstream.read_bytes()
        try:
            t, h, w, c, step = np.frombuffer(data[:20], dtype=np.int32)
            q = np.frombuffer(zlib.decompress(data[20:]), dtype=np.uint8).reshape(t, h, w, c)
        except (ValueError, zlib.error) as e:
            raise BitstreamError(f"{bitstream}: not a test-lossy stream: {e}") from None
        rec = np.clip(q.astype(np.int32) * step + step // 2, 0, 255).astype(np.uint8)
        return Decoded(rec)

    def provenance(self) -> dict:
        return {"codec": self.name, "family": self.family, "version": 1}


@CODECS.register()
class TestLossy(_Quant):
    name = "test-lossy"


@CODECS.register()
class TestSlow(_Quant):
    name = "test-slow"

    def encode(self, sequence, rate_point, workdir):
        time.sleep(float(os.environ.get("GFVC_TEST_SLOW_S", "1.0")))
        return super().encode(sequence, rate_point, workdir)


@CODECS.register()
class TestFail(_Quant):
    name = "test-fail"

    def encode(self, sequence, rate_point, workdir):
        if rate_point.qp == 42:
            raise ExternalToolError("test-fail: simulated encoder crash at QP 42")
        return super().encode(sequence, rate_point, workdir)


def vertex_template(n: int = 10475, seed: int = 7) -> np.ndarray:
    """(n, 2) normalised points: the reference vertices of every frame in the vertex tests."""
    return np.random.default_rng(seed).uniform(-0.8, 0.8, (n, 2)).astype(np.float32)


@CODECS.register()
class TestVertices(_Quant):
    """test-lossy that also outputs body vertices: the template, exact on the key frame and shifted
    right by ``step / 250`` (normalised units, step = QP // 4) on inter frames, so the vertex error
    of an inter frame is exactly ``step / 250 * (W - 1) / 2`` pixels."""

    name = "test-vertices"
    vertex_extra = "vertices"

    def decode(self, bitstream: Path, workdir: Path) -> Decoded:
        dec = super().decode(bitstream, workdir)
        step = int(np.frombuffer(bitstream.read_bytes()[16:20], dtype=np.int32)[0])
        t = dec.frames.shape[0]
        v = np.repeat(vertex_template()[None], t, axis=0)
        v[1:, :, 0] += step / 250.0
        self._frames = t
        return Decoded(dec.frames, {"vertices": v})

    def decoder_report(self) -> dict:
        return {"vertex_head_s": 0.001 * self._frames, "vertex_head_frames": self._frames,
                "vertex_head_device": "cpu", "vertex_head_device_name": "test"}
def _seconds_for(rate_point: RatePoint, var: str) -> float:
    """Seconds from $VAR: "S" for every QP, or "QP:S,QP:S,..." per QP (missing QPs: 0)."""
    spec = os.environ.get(var, "0")
    if ":" not in spec:
        return float(spec)
    table = dict(item.split(":") for item in spec.split(",") if item)
    return float(table.get(str(rate_point.qp), 0))


@CODECS.register()
class TestTool(_Quant):
    """Runs an external "encoder" (a python that sleeps $GFVC_TEST_TOOL_S) like the anchors run theirs."""

    name = "test-tool"

    def encode(self, sequence, rate_point, workdir):
        import sys

        from anchors.common import run_tool

        secs = _seconds_for(rate_point, "GFVC_TEST_TOOL_S")
        run_tool([sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))", str(secs)],
                 timeout=3600, log=Path(workdir) / "tool.log", what="test tool")
        return super().encode(sequence, rate_point, workdir)


@CODECS.register()
class TestCrashOnce(_Quant):
    """Fails transiently once per QP: $GFVC_TEST_CRASH_MODE "worker" kills the job process, "tool" an
    external tool (SIGSEGV); a marker in $GFVC_TEST_CRASH_DIR makes the second attempt succeed."""

    name = "test-crash-once"

    def encode(self, sequence, rate_point, workdir):
        import signal
        import sys

        from anchors.common import run_tool

        marker = Path(os.environ["GFVC_TEST_CRASH_DIR"]) / f"{self.name}-{rate_point.qp}"
        if not marker.exists():
            marker.write_text("crashed once")
            if os.environ.get("GFVC_TEST_CRASH_MODE", "worker") == "worker":
                os.kill(os.getpid(), signal.SIGKILL)
            run_tool([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
                     timeout=60, log=Path(workdir) / "tool.log", what="crashing tool")
        return super().encode(sequence, rate_point, workdir)


@CODECS.register()
class TestGen(_Quant):
    """A "generative" test codec (no model): its jobs are GPU jobs when the run's device is CUDA.

    Sleeps $GFVC_TEST_GEN_S per job so routing tests keep a GPU worker busy.
    """

    name = "test-gen"
    family = "generative"

    def encode(self, sequence, rate_point, workdir):
        time.sleep(float(os.environ.get("GFVC_TEST_GEN_S", "0")))
        return super().encode(sequence, rate_point, workdir)
