"""Damaged VVC streams never decode "successfully" (issue 16, class 2).

ffmpeg's native VVC decoder exits 0 on a truncated or bit-flipped stream after
printing "Invalid data found when processing input", writing fewer pictures
(21 or 13 of 32 before this fix, exit 0, "bit-exact"). Every VVC decode now
counts the pictures the stream's own headers hold (``vvc_stream_info``) and
reads the decoder's messages (``anchors.common.check_decoded``): a real VVenC
stream, truncated and bit-flipped at seeded random offsets, either decodes
every picture it holds with exit 0 or fails with one line and exit 2 -- never
fewer pictures with exit 0. The runner's anchor jobs fail the same way, and
so does a key frame inside a generative codec's container.

What cannot be caught: a flipped bit that leaves the stream syntactically
valid (e.g. in a parameter-set field) decodes every picture, differently, with
no error -- the anchors' streams carry no decoded-picture hash SEI (it would
add bits to the CTC rate). Such cases are counted, not hidden.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from anchors import vvenc
from anchors.common import vvc_stream_info
from gfvc.errors import BitstreamError
from gfvc.video import write_video
from suite.cli.main import main
from test_conditions.demo import demo_frames

FRAMES = 16
FRAME_BYTES = 128 * 128 * 3 // 2


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("vvc")
    clip = tmp / "clip.yuv"
    write_video(clip, demo_frames(0, FRAMES))
    bs = tmp / "a.266"
    assert main(["encode", "--codec", "vvenc", "--qp", "37", str(clip), "-o", str(bs), "--size", "128x128"]) == 0
    ref = tmp / "ref.yuv"
    assert main(["decode", str(bs), "-o", str(ref)]) == 0
    assert ref.stat().st_size == FRAMES * FRAME_BYTES
    return {"bytes": bs.read_bytes(), "ref": ref.read_bytes(), "tmp": tmp}


def nal_starts(data: bytes) -> list[int]:
    """Offsets of the Annex-B start codes (00 00 01, with a leading 00 when there is one)."""
    out, i = [], data.find(b"\x00\x00\x01")
    while i >= 0:
        out.append(i - 1 if i > 0 and data[i - 1] == 0 else i)
        i = data.find(b"\x00\x00\x01", i + 3)
    return out


def nal_type(data: bytes, start: int) -> int:
    i = start + (4 if data[start:start + 4] == b"\x00\x00\x00\x01" else 3)
    return (data[i + 1] >> 3) & 31  # nuh_unit_type, second byte of the NAL header (H.266 7.3.1.2)


def first_picture(data: bytes) -> bytes:
    """Parameter sets and the first coded picture (its VCL NAL unit, types 0..12), nothing after."""
    starts = nal_starts(data)
    k = next(i for i, o in enumerate(starts) if nal_type(data, o) <= 12)
    return data[: starts[k + 1]]


def _decode(data: bytes, tmp: Path, name: str, capsys) -> tuple[int, str, Path]:
    bs, out = tmp / f"{name}.266", tmp / f"{name}.yuv"
    bs.write_bytes(data)
    capsys.readouterr()
    rc = main(["decode", str(bs), "-o", str(out)])
    return rc, capsys.readouterr().err, out


def _damaged(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    cases = [(f"cut{n}", data[:n]) for n in sorted(rng.sample(range(60, len(data) - 1), 5))]
    for _ in range(7):
        b = bytearray(data)
        pos = rng.randrange(len(b))
        b[pos] ^= 1 << rng.randrange(8)
        cases.append((f"flip{pos}", bytes(b)))
    return cases


def test_damaged_streams_decode_every_picture_or_fail_in_one_line(stream, tmp_path, capsys):
    failed, decoded, undetectable = 0, 0, []
    for name, data in _damaged(stream["bytes"], seed=16):
        rc, err, out = _decode(data, tmp_path, name, capsys)
        if rc == 0:
            n = out.stat().st_size // FRAME_BYTES
            if name.startswith("cut"):  # a clean cut at a picture boundary is a shorter valid stream
                bs = tmp_path / f"{name}.266"
                assert n == len(vvc_stream_info(bs).pictures), name
                assert out.read_bytes() == stream["ref"][: n * FRAME_BYTES], name  # the pictures it holds, exactly
            else:
                assert n == FRAMES, f"{name}: {n} of {FRAMES} pictures with exit 0"
                if out.read_bytes() != stream["ref"]:
                    undetectable.append(name)
            decoded += 1
        else:
            assert rc == 2, (name, err)
            assert err.startswith("gfvc: error: ") and err.strip().count("\n") == 0 and "Traceback" not in err, err
            assert not out.exists(), f"{name}: failed but wrote {out}"
            failed += 1
    assert failed >= 6  # the damage was real: most cases must be refused
    assert len(undetectable) <= 2, undetectable  # only flips the syntax cannot reveal (see module docstring)


def test_the_reported_example_fewer_pictures_with_exit_0_is_refused(stream, tmp_path, capsys):
    """A cut inside the last third (the issue: 21 of 32 pictures, exit 0) names the decoder's complaint."""
    data = stream["bytes"]
    cut = data[: int(len(data) * 0.7)]
    rc, err, out = _decode(cut, tmp_path, "cut70", capsys)
    assert rc == 2 and not out.exists()
    assert "corrupt or truncated VVC stream" in err and ("Invalid data" in err or "pictures" in err), err


def test_a_cut_at_a_picture_boundary_decodes_the_pictures_it_holds(stream, tmp_path, capsys):
    data = stream["bytes"]
    cut = data[: nal_starts(data)[-1]]  # drop the last picture's NAL unit: a valid stream of FRAMES - 1
    rc, err, out = _decode(cut, tmp_path, "boundary", capsys)
    assert rc == 0, err
    assert out.read_bytes() == stream["ref"][: (FRAMES - 1) * FRAME_BYTES]


def test_vtm_decoderapp_writing_fewer_pictures_is_refused(stream, tmp_path, capsys, monkeypatch):
    """The same check on VTM's DecoderApp (the fake one decodes with ffmpeg, so a cut stream gives fewer)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fakevtm", Path(__file__).parent / "fake_vtm" / "fakevtm.py")
    fakevtm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fakevtm)
    vtm = fakevtm.install(tmp_path / "VTM", layout="bin")
    monkeypatch.delenv("GFVC_VTM_DIR", raising=False)
    data = stream["bytes"]
    bs, out = tmp_path / "cut.266", tmp_path / "cut.yuv"
    bs.write_bytes(data[: int(len(data) * 0.7)])
    capsys.readouterr()
    rc = main(["decode", str(bs), "-o", str(out), "--vtm-dir", str(vtm)])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert "corrupt or truncated VVC stream: VTM DecoderApp output" in err and not out.exists(), err


def test_check_decoded_reads_the_decoders_messages_and_counts(tmp_path):
    from anchors.common import check_decoded, decoder_errors

    ff = ("[vist#0:0/vvc @ 0x55d] [dec:vvc @ 0x55e] Decoding error: Invalid data found when processing input\n"
          "frame=   21 fps=0.0 q=-0.0 size=N/A\n")
    assert decoder_errors(ff) == ["Decoding error: Invalid data found when processing input"]
    with pytest.raises(BitstreamError, match="reported 1 error.*Invalid data"):
        check_decoded(tmp_path / "x.266", ff, 21, 32, what="ffmpeg", log=tmp_path / "log")
    with pytest.raises(BitstreamError, match="output 21 pictures, the stream's headers hold 32"):
        check_decoded(tmp_path / "x.266", "", 21, 32, what="ffmpeg", log=tmp_path / "log")
    check_decoded(tmp_path / "x.266", "frame=   32 fps=0.0\n", 32, 32, what="ffmpeg", log=tmp_path / "log")
    assert decoder_errors("POC    3 LId:  0 TId: 0 ( B-SLICE, nQP 37 QP 37 )\n***ERROR*** MD5 mismatch\n") == [
        "***ERROR*** MD5 mismatch"]


# --- the runner: an anchor job whose decode is damaged fails, it is never scored ---------------------------

@pytest.mark.parametrize("where", ["mid-picture", "picture-boundary"])
def test_anchor_job_with_a_damaged_stream_fails(where, tmp_path, monkeypatch):
    from gfvc.codec import Environment
    from suite.runner.jobs import run_job
    from suite.runner.plan import plan_run
    from test_conditions import load_condition

    original = vvenc.VvencCodec.encode

    def encode_then_damage(self, sequence, rate_point, workdir):
        res = original(self, sequence, rate_point, workdir)
        data = Path(res.bitstream).read_bytes()
        cut = data[: int(len(data) * 0.6)] if where == "mid-picture" else data[: nal_starts(data)[-1]]
        Path(res.bitstream).write_bytes(cut)
        res.bits_breakdown["vvc"] = len(cut) * 8
        return res

    monkeypatch.setattr(vvenc.VvencCodec, "encode", encode_then_damage)
    d = load_condition("demo").to_dict()
    d.update(frames=4, codecs=["vvenc"], manifest=str(load_condition("demo").manifest_path))
    d["anchor"]["qps"] = [42]
    d["metrics"]["names"] = ["psnr"]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    plan = plan_run(load_condition(p), tmp_path / "run", Environment())
    rec = run_job(plan.jobs[0])
    assert rec["status"] == "failed", rec
    assert not rec.get("metrics"), "a damaged decode must not be scored"
    msg = rec["error"]["message"]
    assert ("corrupt or truncated VVC stream" in msg) if where == "mid-picture" else ("3 frames" in msg), msg


def test_a_damaged_key_frame_in_a_container_is_a_bitstream_error(stream, tmp_path):
    from anchors.intra import decode_intra
    from gfvc.codec import Environment
    from test_conditions import load_condition

    cond = load_condition("demo")
    one = first_picture(stream["bytes"])  # parameter sets + the intra picture: what a key-frame payload holds
    frame = decode_intra(one, width=128, height=128, coder="vvenc", chroma="420", condition=cond,
                         env=Environment(), workdir=tmp_path)
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8
    with pytest.raises(BitstreamError, match="key-frame payload does not decode as VVC"):
        decode_intra(one[: len(one) * 3 // 4], width=128, height=128, coder="vvenc", chroma="420",
                     condition=cond, env=Environment(), workdir=tmp_path)
