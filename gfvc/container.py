"""The single-file bitstream container of generative codecs (spec: docs/bitstream.md).

One coded sequence = one file; its size is the rate (every byte counted: header,
key-frame VVC bytes, feature payload, CRC). Parsing checks the magic, version,
every length and the CRC32 before anything is decoded, and raises
:class:`gfvc.errors.BitstreamError` naming what is wrong; a stream for another
codec, model or resolution raises :class:`gfvc.errors.ModelMismatch` saying
which model to use instead.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from gfvc.errors import BitstreamError, InputError, ModelMismatch

MAGIC = b"GFVC"
# Version 1: one VVC key frame at frame 0 and a feature coder with an id byte (every stream the
# suite wrote before key-frame policies existed; still written for them, byte for byte).
# Version 2: any number of key frames at listed positions, the key-frame payload format and the
# feature coder named as text (a plug-in's coder needs no id). Both versions are read.
VERSION = 1
VERSION_MULTI_KEY = 2
VERSIONS = (VERSION, VERSION_MULTI_KEY)
VVC_FORMAT = "vvc"
CHECKSUM_BYTES = 8  # prefix of the model's sha256 kept in the header
CRC_BYTES = 4
# Sanity limits of a header (far above any CTC use: 250 frames, <= 100 values/frame);
# they keep a corrupt header from making a decoder allocate or loop without bound.
MAX_FRAMES = 1_000_000
MAX_FEATURE_DIM = 4096


@dataclass(frozen=True)
class Header:
    """Everything a decoder needs besides the two payloads."""

    codec: str               # registry name of the codec that wrote the stream
    model_id: str            # e.g. "s2d-demo"
    model_checksum: str      # hex prefix (16 hex digits) of the checkpoint's sha256
    width: int
    height: int
    frames: int              # key frame + inter frames
    fps_num: int
    fps_den: int
    feature_coder: int       # gfvc.entropy coder id (0 = none)
    feature_dim: int         # values per inter frame
    quant_scale: float       # exactly representable in float32
    key_qp: int              # informative (the decoder does not need it): the rate point's value
    version: int = VERSION
    key_frames: tuple[int, ...] = (0,)   # frame index of every key frame (first 0, increasing)
    key_format: str = VVC_FORMAT          # payload format of the key frames ("vvc", a learned coder's name)
    feature_coder_name: str = ""          # the coder's registry name (version 2; "" = by id)

    @property
    def needs_version(self) -> int:
        """1 when version 1 can hold the stream (one VVC key frame, a coder with an id), else 2."""
        if self.key_frames == (0,) and self.key_format == VVC_FORMAT and self.feature_coder > 0:
            return VERSION
        return VERSION_MULTI_KEY

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den

    @property
    def codec_id(self) -> str:
        """Alias of ``codec`` (the registry name `gfvc decode` looks up)."""
        return self.codec

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fps"] = self.fps
        return d


@dataclass(frozen=True)
class Container:
    header: Header
    key_payloads: tuple[bytes, ...]
    feature_payload: bytes

    @property
    def key_payload(self) -> bytes:
        """The payload of the first key frame (the only one in version 1)."""
        return self.key_payloads[0]


def fps_to_rational(fps: float) -> tuple[int, int]:
    """The simplest fraction whose float equals ``fps`` exactly (30000/1001, 25/1, ...)."""
    if not fps > 0:
        raise InputError(f"fps must be > 0, got {fps!r}")
    for limit in (1, 1001, 100_000, 10**9):
        f = Fraction(fps).limit_denominator(limit)
        if f.numerator / f.denominator == fps:
            return f.numerator, f.denominator
    f = Fraction(fps)
    return f.numerator, f.denominator


def checksum_prefix(sha256_hex: str) -> str:
    """The part of a model sha256 stored in the container (lower-case hex)."""
    h = sha256_hex.lower()
    if len(h) < 2 * CHECKSUM_BYTES or any(c not in "0123456789abcdef" for c in h):
        raise InputError(f"model checksum must be a sha256 hex digest, got {sha256_hex!r}")
    return h[: 2 * CHECKSUM_BYTES]


def _varint(n: int) -> bytes:
    if n < 0:
        raise InputError(f"negative value {n} cannot be stored")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(s: str, what: str) -> bytes:
    b = s.encode("utf-8")
    if not 0 < len(b) < 256:
        raise InputError(f"{what} {s!r} must be 1..255 bytes of UTF-8")
    return bytes([len(b)]) + b


def _check_header(header: Header, key_payloads: tuple[bytes, ...]) -> None:
    q32 = struct.unpack("<f", struct.pack("<f", header.quant_scale))[0]
    if q32 != header.quant_scale or not q32 > 0:
        raise InputError(f"quant_scale {header.quant_scale!r} must be > 0 and exact in float32 "
                         "(use e.g. 4, 64, 127, 256)")
    if not (0 < header.width < 65536 and 0 < header.height < 65536):
        raise InputError(f"frame size {header.width}x{header.height} out of range")
    if not 1 <= header.frames <= MAX_FRAMES:
        raise InputError(f"a container holds 1..{MAX_FRAMES} frames, got {header.frames}")
    if not 0 <= header.feature_dim <= MAX_FEATURE_DIM:
        raise InputError(f"feature_dim must be 0..{MAX_FEATURE_DIM}, got {header.feature_dim}")
    if not 0 <= header.key_qp <= 63 or not 0 <= header.feature_coder <= 255:
        raise InputError("key_qp must be 0..63 and feature_coder 0..255")
    check_key_frames(header.key_frames, header.frames)
    if len(key_payloads) != len(header.key_frames):
        raise InputError(f"{len(header.key_frames)} key frame(s) need as many payloads, got {len(key_payloads)}")


def check_key_frames(key_frames: tuple[int, ...], frames: int) -> None:
    """Key-frame positions: first 0, strictly increasing, inside the sequence (InputError otherwise)."""
    k = list(key_frames)
    if not k or k[0] != 0 or any(b <= a for a, b in zip(k, k[1:], strict=False)) or k[-1] >= frames:
        raise InputError(f"key frames {k} must start at 0, increase and lie in 0..{frames - 1}")


def pack(header: Header, key_payloads: bytes | tuple[bytes, ...], feature_payload: bytes) -> bytes:
    """Serialise a container (see docs/bitstream.md for the byte layout of both versions)."""
    keys = (key_payloads,) if isinstance(key_payloads, bytes) else tuple(key_payloads)
    _check_header(header, keys)
    version = header.needs_version
    common = [
        MAGIC, bytes([version]),
        _text(header.codec, "codec name"),
        # an empty model id means "same as the codec name" (saves bytes for rule-based codecs)
        (b"\x00" if header.model_id == header.codec else _text(header.model_id, "model id")),
        bytes.fromhex(checksum_prefix(header.model_checksum)),
        _varint(header.width), _varint(header.height), _varint(header.frames),
        _varint(header.fps_num), _varint(header.fps_den),
    ]
    if version == VERSION:
        body = b"".join(common + [
            bytes([header.feature_coder]), _varint(header.feature_dim),
            struct.pack("<f", header.quant_scale), bytes([header.key_qp]),
            _varint(len(keys[0])), _varint(len(feature_payload)),
            keys[0], feature_payload,
        ])
    else:
        if not header.feature_coder_name:
            raise InputError("a version-2 container names its feature coder (feature_coder_name)")
        kf = header.key_frames
        gaps = [kf[0]] + [b - a for a, b in zip(kf, kf[1:], strict=False)]
        body = b"".join(common + [
            _text(header.feature_coder_name, "feature coder name"), _varint(header.feature_dim),
            struct.pack("<f", header.quant_scale),
            _text(header.key_format, "key-frame format"), bytes([header.key_qp]),
            _varint(len(keys)), *[_varint(g) + _varint(len(k)) for g, k in zip(gaps, keys, strict=True)],
            _varint(len(feature_payload)),
            *keys, feature_payload,
        ])
    return body + struct.pack("<I", zlib.crc32(body))


class _Reader:
    def __init__(self, data: bytes, end: int) -> None:
        self.data, self.pos, self.end = data, 0, end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise BitstreamError(f"truncated bitstream: {what} needs {n} bytes at offset {self.pos}, "
                                 f"only {self.end - self.pos} left")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str) -> int:
        n = shift = 0
        while True:
            b = self.byte(what)
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 56:
                raise BitstreamError(f"corrupt bitstream: {what} is not a valid varint")

    def text(self, what: str, allow_empty: bool = False) -> str:
        n = self.byte(what + " length")
        if n == 0 and not allow_empty:
            raise BitstreamError(f"corrupt bitstream: empty {what}")
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise BitstreamError(f"corrupt bitstream: {what} is not UTF-8") from None


def unpack(data: bytes, *, source: str = "bitstream") -> Container:
    """Parse and verify a container (version 1 or 2); raise BitstreamError on anything inconsistent."""
    data = bytes(data)
    if len(data) < len(MAGIC) + 1 + CRC_BYTES:
        raise BitstreamError(f"{source}: {len(data)} bytes is too short to be a GFVC container")
    if data[:4] != MAGIC:
        raise BitstreamError(f"{source}: not a GFVC container (magic {data[:4]!r}, expected {MAGIC!r})")
    version = data[4]
    if version not in VERSIONS:
        raise BitstreamError(f"{source}: container version {version} is not supported "
                             f"(this suite reads versions {', '.join(map(str, VERSIONS))}); "
                             "use the suite version that wrote it")
    body_end = len(data) - CRC_BYTES
    crc_stored = struct.unpack("<I", data[body_end:])[0]
    crc = zlib.crc32(data[:body_end])
    if crc != crc_stored:
        raise BitstreamError(f"{source}: CRC32 mismatch (stored {crc_stored:08x}, computed {crc:08x}): "
                             "the file is corrupt or truncated")
    r = _Reader(data, body_end)
    r.take(5, "magic and version")
    coder_name, key_format = "", VVC_FORMAT
    try:
        codec = r.text("codec name")
        model_id = r.text("model id", allow_empty=True) or codec
        checksum = r.take(CHECKSUM_BYTES, "model checksum").hex()
        width, height, frames = r.varint("width"), r.varint("height"), r.varint("frames")
        fps_num, fps_den = r.varint("fps numerator"), r.varint("fps denominator")
        if version == VERSION:
            coder = r.byte("feature coder id")
            dim = r.varint("feature dimension")
            quant = struct.unpack("<f", r.take(4, "quant scale"))[0]
            key_qp = r.byte("key-frame QP")
            key_lens = [r.varint("key-frame payload length")]
            positions = [0]
        else:
            coder = 0
            coder_name = r.text("feature coder name")
            dim = r.varint("feature dimension")
            quant = struct.unpack("<f", r.take(4, "quant scale"))[0]
            key_format = r.text("key-frame format")
            key_qp = r.byte("key-frame level")
            count = r.varint("key-frame count")
            if not 1 <= count <= min(frames, MAX_FRAMES):
                raise BitstreamError(f"corrupt bitstream: {count} key frames in {frames} frames")
            positions, key_lens, pos = [], [], 0
            for i in range(count):
                pos += r.varint(f"position of key frame {i}")
                positions.append(pos)
                key_lens.append(r.varint(f"payload length of key frame {i}"))
        feat_len = r.varint("feature payload length")
        keys = tuple(r.take(n, f"payload of key frame {i}") for i, n in enumerate(key_lens))
        feat = r.take(feat_len, "feature payload")
    except BitstreamError as e:
        raise BitstreamError(f"{source}: {e}") from None
    if r.pos != body_end:
        raise BitstreamError(f"{source}: {body_end - r.pos} unexpected bytes after the payloads")
    problems = []
    if not (0 < width < 65536 and 0 < height < 65536):
        problems.append(f"frame size {width}x{height}")
    if frames < 1 or frames > MAX_FRAMES:
        problems.append(f"frame count {frames}")
    if fps_num < 1 or fps_den < 1:
        problems.append(f"fps {fps_num}/{fps_den}")
    if dim > MAX_FEATURE_DIM:
        problems.append(f"feature dimension {dim}")
    if not quant > 0 or quant != quant or quant == float("inf"):
        problems.append(f"quant scale {quant}")
    if key_qp > 63:
        problems.append(f"key-frame QP {key_qp}")
    if not all(keys):
        problems.append("empty key-frame payload")
    try:
        check_key_frames(tuple(positions), max(frames, 1))
    except InputError:
        problems.append(f"key-frame positions {positions[:8]} for {frames} frames")
    if problems:
        raise BitstreamError(f"{source}: invalid header field(s): {', '.join(problems)}")
    header = Header(codec=codec, model_id=model_id, model_checksum=checksum, width=width,
                    height=height, frames=frames, fps_num=fps_num, fps_den=fps_den,
                    feature_coder=coder, feature_dim=dim, quant_scale=quant, key_qp=key_qp, version=version,
                    key_frames=tuple(positions), key_format=key_format, feature_coder_name=coder_name)
    return Container(header, keys, feat)


def write(path: Path, header: Header, key_payloads: bytes | tuple[bytes, ...],
          feature_payload: bytes) -> dict[str, int]:
    """Write a container; return the bit breakdown (sums to file size x 8)."""
    data = pack(header, key_payloads, feature_payload)
    Path(path).write_bytes(data)
    keys = (key_payloads,) if isinstance(key_payloads, bytes) else tuple(key_payloads)
    key_bits, feat_bits = 8 * sum(len(k) for k in keys), 8 * len(feature_payload)
    return {"container": 8 * len(data) - key_bits - feat_bits, "key_frame": key_bits, "features": feat_bits}


def read(path: Path) -> Container:
    """Read and verify a container file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"bitstream not found: {path}") from None
    return unpack(data, source=str(path))


def peek(path: Path) -> Header:
    """Header of a container file (fully verified), e.g. to pick the codec that decodes it.

    ``gfvc decode`` uses ``peek(path).codec`` to look the decoder up in the codec registry.
    Raises BitstreamError if the file is not a valid GFVC container.
    """
    return read(path).header


def is_container(path: Path) -> bool:
    """True if the file starts with the container magic (cheap, no verification)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def check_compatible(header: Header, *, codec: str, model_id: str, model_checksum: str,
                     feature_dim: int, quant_scale: float, source: str = "bitstream") -> None:
    """Raise ModelMismatch unless the stream was written by this codec and model."""
    if header.codec != codec:
        raise ModelMismatch(f"{source} was written by codec {header.codec!r}, not {codec!r}: "
                            f"decode it with `gfvc decode` (it picks the codec) or codec {header.codec!r}")
    want = checksum_prefix(model_checksum)
    if header.model_id == model_id and header.model_checksum != want:  # same id, another file: say what differs
        raise ModelMismatch(f"{source} needs model {model_id!r} with sha256 {header.model_checksum}..., but codec "
                            f"{codec!r} has another checkpoint under the same id (sha256 {want}...): select the "
                            f"checkpoint the stream was encoded with (--model {codec}=PATH)")
    if header.model_id != model_id or header.model_checksum != want:
        raise ModelMismatch(f"{source} needs model {header.model_id!r} (sha256 {header.model_checksum}...), "
                            f"but codec {codec!r} has model {model_id!r} (sha256 {want}...): "
                            "install/select the checkpoint the stream was encoded with")
    if header.feature_dim != feature_dim or header.quant_scale != quant_scale:
        raise ModelMismatch(f"{source} has {header.feature_dim} features at quant scale {header.quant_scale}, "
                            f"codec {codec!r} uses {feature_dim} at {quant_scale}: "
                            "it was written by another version of the codec")
