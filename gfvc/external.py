"""External codecs: a proposal that lives in its own code base, run as programs (``external:`` section).

A contributor's codec is described in the condition by its two commands (argv templates, never a shell
string) and the formats they read and write; the suite prepares the input in that format, runs the
commands in the job's folder with a timeout, counts every byte of what the encoder wrote as the rate,
reads the decoder's output back and scores it like any codec's. The records carry the command templates,
the commands as run and the sha256 of every program or script the commands name, so a result says
exactly which code made it. Example and reference: docs/adding-a-codec.md ("A codec that is a program").
"""
from __future__ import annotations

import shutil
import string
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gfvc.codec import Codec, Decoded, EncodeResult, Environment, RatePoint, Sequence
from gfvc.condition import Condition, ExternalCodecSpec
from gfvc.errors import ConfigError, ExternalToolError, InputError, NotAvailable
from gfvc.process import run_tool
from gfvc.video import read_rgb_planar, read_yuv420, rgb_to_yuv420, sha256_file, write_rgb_planar, write_yuv420_planes

LOG_NAME = "external.log"
SUFFIX = {"rgb24": ".rgb", "yuv420p": ".yuv"}


def bitstream_bits(path: Path) -> int:
    """Bits of a bitstream: a file's size, or every file under a folder (the rate of an external codec)."""
    path = Path(path)
    if path.is_dir():
        return 8 * sum(f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file())
    return 8 * path.stat().st_size


def _fill(argv: tuple[str, ...], values: dict[str, str]) -> list[str]:
    return [string.Formatter().vformat(a, (), values) for a in argv]


class ExternalCodec(Codec):
    """A codec run as the programs of a condition's ``external:`` entry (see module docstring)."""

    name: ClassVar[str] = "external"

    def __init__(self, codec_name: str, spec: ExternalCodecSpec, condition: Condition,
                 env: Environment | None = None) -> None:
        super().__init__(condition, env)
        self.codec_name = codec_name
        self.spec = spec
        self.family = spec.family  # type: ignore[misc]  # per instance: the condition says what it is

    @property
    def label(self) -> str:
        return self.codec_name

    @property
    def config_dir(self) -> Path:
        return Path(self.condition.source).resolve().parent if self.condition.source else Path.cwd()

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(int(v)) for v in self.spec.rate_points]

    def decoder_description(self) -> str:
        return f"external codec {self.codec_name} ({' '.join(self.spec.decode[:2])} ...)"

    # ------------------------------------------------------------------ programs
    def _values(self, workdir: Path, **kw: Any) -> dict[str, str]:
        c = self.condition
        base = {"width": c.width, "height": c.height, "frames": c.frames, "fps": repr(float(c.fps)),
                "workdir": workdir, "config_dir": self.config_dir, "input": "", "bitstream": "", "output": "",
                "rate": "", "qp": ""}
        base.update(kw)
        return {k: str(v) for k, v in base.items()}

    def programs(self) -> list[Path]:
        """The files the commands run or read: argv items that name an existing file (after filling
        {config_dir}), the first item found on PATH, and the condition's ``programs`` list."""
        found: dict[str, Path] = {}
        values = self._values(Path("."))
        for argv in (self.spec.encode, self.spec.decode):
            filled = _fill(argv, values)
            exe = shutil.which(filled[0])
            if exe:
                found.setdefault(str(Path(exe).resolve()), Path(exe).resolve())
            for a in filled:
                p = Path(a)
                if not p.is_absolute():
                    p = self.config_dir / p
                if a and p.is_file():
                    found.setdefault(str(p.resolve()), p.resolve())
        for extra in self.spec.programs:
            p = Path(_fill((extra,), values)[0])
            if not p.is_absolute():
                p = self.config_dir / p
            if not p.is_file():
                raise NotAvailable(f"external codec {self.codec_name!r}: programs lists {extra!r}, which is not "
                                   f"a file ({p})")
            found.setdefault(str(p.resolve()), p.resolve())
        return list(found.values())

    def check(self) -> None:
        for what, argv in (("encode", self.spec.encode), ("decode", self.spec.decode)):
            prog = _fill(argv, self._values(Path(".")))[0]
            if not (shutil.which(prog) or (self.config_dir / prog).is_file() or Path(prog).is_file()):
                raise NotAvailable(f"external codec {self.codec_name!r}: the {what} command's program {prog!r} "
                                   "is neither on PATH nor a file (paths are relative to the job folder; use "
                                   "{config_dir}/... for files next to the condition)")
        self.programs()

    def _run(self, argv: list[str], workdir: Path, what: str) -> None:
        run_tool(argv, timeout=self.spec.timeout_s, log=workdir / LOG_NAME, cwd=workdir,
                 what=f"external codec {self.codec_name} ({what})",
                 timeout_hint=f"raise external.{self.codec_name}.timeout_s")

    # ------------------------------------------------------------------ coding
    def encode(self, sequence: Sequence, rate_point: RatePoint, workdir: Path) -> EncodeResult:
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        src = workdir / f"input{SUFFIX[self.spec.input_format]}"
        if self.spec.input_format == "rgb24":
            write_rgb_planar(src, sequence.frames)
        else:
            c = self.condition.colour
            write_yuv420_planes(src, *rgb_to_yuv420(sequence.frames, c.matrix, c.range, c.chroma_downsampling))
        bitstream = workdir / ("bitstream" if self.spec.bitstream == "folder" else "bitstream.bin")
        if self.spec.bitstream == "folder":
            bitstream.mkdir(exist_ok=True)
        values = self._values(workdir, input=src, bitstream=bitstream, rate=rate_point.qp, qp=rate_point.qp,
                              frames=sequence.num_frames, fps=repr(float(sequence.fps)),
                              width=sequence.width, height=sequence.height)
        argv = _fill(self.spec.encode, values)
        try:
            self._run(argv, workdir, "encode")
        finally:
            src.unlink(missing_ok=True)  # a copy of the sequence; the rate is the bitstream only
        if self.spec.bitstream == "folder":
            if not any(f.is_file() for f in bitstream.rglob("*")):
                raise ExternalToolError(f"external codec {self.codec_name}: the encoder wrote no file into "
                                        f"{bitstream} (its {{bitstream}} folder)")
        elif not bitstream.is_file() or bitstream.stat().st_size == 0:
            raise ExternalToolError(f"external codec {self.codec_name}: the encoder wrote no bitstream file "
                                    f"({bitstream}, its {{bitstream}} argument)")
        bits = bitstream_bits(bitstream)
        return EncodeResult(bitstream=bitstream, bits_breakdown={"external": bits}, commands=[argv],
                            info={"files": _files(bitstream)})

    def decode(self, bitstream: Path, workdir: Path) -> Decoded:
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        fmt = self.spec.output_format or self.spec.input_format
        out = workdir / f"decoded{SUFFIX[fmt]}"
        out.unlink(missing_ok=True)
        c = self.condition
        argv = _fill(self.spec.decode, self._values(workdir, bitstream=Path(bitstream).resolve(), output=out))
        self._run(argv, workdir, "decode")
        if not out.is_file():
            raise ExternalToolError(f"external codec {self.codec_name}: the decoder wrote no {out.name} "
                                    f"(its {{output}} argument, {fmt})")
        try:
            if fmt == "rgb24":
                frames = read_rgb_planar(out, c.width, c.height)
            else:
                frames = read_yuv420(out, c.width, c.height, matrix=c.colour.matrix, range_=c.colour.range)
        except InputError as e:
            raise ExternalToolError(f"external codec {self.codec_name}: its decoded output is not {fmt} "
                                    f"{c.width}x{c.height}: {e}") from None
        finally:
            out.unlink(missing_ok=True)
        return Decoded(frames=np.ascontiguousarray(frames))

    def provenance(self) -> dict[str, Any]:
        try:
            progs = [{"file": p.name, "sha256": sha256_file(p)} for p in self.programs()]
        except (OSError, ConfigError, NotAvailable) as e:
            progs = [{"status": "not_recorded", "reason": str(e)}]
        return {"codec": self.codec_name, "family": self.family, "kind": "external",
                "input_format": self.spec.input_format,
                "output_format": self.spec.output_format or self.spec.input_format,
                "bitstream": self.spec.bitstream, "programs": progs, "rate_points": list(self.spec.rate_points),
                # the templates themselves (placeholders, no machine paths) define the results: part of the key
                "commands": {"encode": list(self.spec.encode), "decode": list(self.spec.decode)}}


def _files(bitstream: Path) -> list[dict[str, Any]]:
    """Every file counted in the rate, with its size (a folder's files in name order)."""
    if bitstream.is_dir():
        return [{"file": str(f.relative_to(bitstream)), "bytes": f.stat().st_size}
                for f in sorted(bitstream.rglob("*")) if f.is_file()]
    return [{"file": bitstream.name, "bytes": bitstream.stat().st_size}]
