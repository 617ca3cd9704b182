"""Swappable stages of the generative pipeline: key-frame policies, container version 2, variants."""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
from test_generative import FakeIntra, ToyColour, _sequence, demo_condition

from gfvc import container, entropy
from gfvc.codec import RatePoint
from gfvc.condition import KeyFramePolicySpec
from gfvc.errors import BitstreamError, ConfigError, ModelMismatch, UnknownName
from gfvc.factory import build_codec
from gfvc.stages import FRAME_QUALITY, KEY_FRAME_POLICIES, key_frame_policy
from test_conditions import load_condition

DEMO_FINGERPRINT = "86a72e607648faa08480f1137837d4b0b83cbf8522601e62812b55faec951434"  # before the stages


def _with_policy(policy: dict | str, **gen) -> object:
    cond = demo_condition()
    g = cond.to_dict()["generative"]
    g.update(key_frame_policy=policy, **gen)
    return cond.with_overrides(generative=g)


# ----------------------------------------------------------------------------- condition
def test_default_stages_keep_the_demo_fingerprint() -> None:
    demo = load_condition("demo")
    assert demo.generative.key_frame_policy == KeyFramePolicySpec()
    assert demo.fingerprint == DEMO_FINGERPRINT
    # a non-default stage choice is part of the identity
    assert _with_policy({"period": 8}).fingerprint != DEMO_FINGERPRINT


@pytest.mark.parametrize(("yaml_value", "kind", "period", "threshold"), [
    ("single", "single", 0, 0.0),
    ({"period": 8}, "period", 8, 0.0),
    ({"adaptive": {"measure": "psnr", "threshold": 30}}, "adaptive", 0, 30.0),
    ({"kind": "adaptive", "measure": "ssim", "threshold": 0.8}, "adaptive", 0, 0.8),
])
def test_policy_yaml_forms(yaml_value, kind, period, threshold) -> None:
    p = _with_policy(yaml_value).generative.key_frame_policy
    assert (p.kind, p.period, p.threshold) == (kind, period, threshold)


@pytest.mark.parametrize(("yaml_value", "msg"), [
    ({"period": 0}, "period must be >= 1"),
    ({"period": "x"}, "expected an integer"),
    ({"adaptive": {"treshold": 3}}, "unknown key"),
    ({"adaptive": 5}, "expected a mapping"),
    (7, "expected `single`"),
])
def test_bad_policy_is_one_config_error(yaml_value, msg) -> None:
    with pytest.raises(ConfigError, match=msg):
        c = _with_policy(yaml_value)
        c.validate()


def test_unknown_policy_measure_and_coders_are_named(tmp_path: Path) -> None:
    with pytest.raises(UnknownName, match="key-frame policy 'sometimes'"):
        ToyColour(_with_policy("sometimes")).check()
    with pytest.raises(UnknownName, match="frame-quality measure 'psnrr'.*did you mean psnr"):
        ToyColour(_with_policy({"adaptive": {"measure": "psnrr", "threshold": 1}})).check()
    with pytest.raises(UnknownName, match="key-frame coder 'jpeg'"):
        ToyColour(_with_policy("single", key_frame_coder="jpeg")).check()
    with pytest.raises(ConfigError, match="feature coder 'huffman'"):
        ToyColour(_with_policy("single", feature_coder="huffman")).check()


def test_registries_list_the_built_in_stages() -> None:
    assert {"single", "period", "adaptive"} <= set(KEY_FRAME_POLICIES.names())
    assert {"psnr", "psnr_y", "ssim"} <= set(FRAME_QUALITY.names())
    assert {"cabac", "gfvc-reference"} <= set(entropy.FEATURE_CODERS.names())


# ----------------------------------------------------------------------------- policies
def test_period_positions() -> None:
    pol = key_frame_policy(KeyFramePolicySpec(kind="period", period=8), None)  # type: ignore[arg-type]
    assert pol.positions(32) == [0, 8, 16, 24] and pol.positions(8) == [0] and pol.positions(9) == [0, 8]


@pytest.mark.parametrize("t", [9, 16])
def test_period_stream_roundtrip_counts_every_key_frame(tmp_path: Path, fake_intra: FakeIntra, t: int) -> None:
    codec = ToyColour(_with_policy({"period": 4}))
    seq = _sequence(t=t)
    res = codec.encode(seq, RatePoint(32), tmp_path / "enc")
    c = container.read(res.bitstream)
    want = list(range(0, t, 4))
    assert c.header.version == 2 and list(c.header.key_frames) == want and len(c.key_payloads) == len(want)
    assert res.bits_breakdown["key_frame"] == 8 * sum(len(k) for k in c.key_payloads)
    assert sum(res.bits_breakdown.values()) == 8 * res.bitstream.stat().st_size
    assert res.info["key_frames"] == want and len(res.info["key_frame_bits"]) == len(want)
    dec = codec.decode(res.bitstream, tmp_path / "dec")
    assert dec.frames.shape == seq.frames.shape and dec.extras["colour"].shape == (t, 6)
    for k, payload in zip(want, c.key_payloads, strict=True):  # every key frame is its decoded picture
        key = fake_intra.decode_intra(payload, width=48, height=32, coder="", chroma="", condition=None,
                                      env=None, workdir=None)
        assert np.array_equal(dec.frames[k], key)
    # a key frame every 4 frames follows the sequence at least as well as one key frame
    single = ToyColour(demo_condition())
    r1 = single.encode(seq, RatePoint(32), tmp_path / "enc1")
    d1 = single.decode(r1.bitstream, tmp_path / "dec1")
    assert np.abs(dec.frames.astype(float) - seq.frames).mean() <= np.abs(d1.frames.astype(float) - seq.frames).mean()
    assert res.bitstream.stat().st_size > r1.bitstream.stat().st_size


def test_single_policy_writes_version_1_byte_for_byte(tmp_path: Path, fake_intra: FakeIntra) -> None:
    """The default stages write the same version-1 stream as before the stages existed."""
    codec = ToyColour(demo_condition())
    res = codec.encode(_sequence(), RatePoint(32), tmp_path / "e")
    data = res.bitstream.read_bytes()
    assert data[4] == 1
    c = container.unpack(data)
    hd = dataclasses.replace(c.header, key_frames=(0,), feature_coder_name="")
    v1 = container.pack(hd, c.key_payload, c.feature_payload)
    assert v1 == data


class _Sends(ToyColour):
    name = "toy-sends"
    sends_key_features = True


@pytest.mark.parametrize("cls", [ToyColour, _Sends])
def test_adaptive_refresh_follows_the_threshold(tmp_path: Path, fake_intra: FakeIntra, cls) -> None:
    seq = _sequence(t=10)
    # threshold above anything reachable: every inter frame becomes a key frame
    hi = cls(_with_policy({"adaptive": {"measure": "psnr", "threshold": 99, "average": "frame"}}))
    r = hi.encode(seq, RatePoint(32), tmp_path / "hi")
    assert list(container.peek(r.bitstream).key_frames) == list(range(10))
    # threshold below anything: one key frame, and the frames decode like the single policy's
    lo = cls(_with_policy({"adaptive": {"measure": "psnr", "threshold": 0}}))
    r = lo.encode(seq, RatePoint(32), tmp_path / "lo")
    assert list(container.peek(r.bitstream).key_frames) == [0]
    d = lo.decode(r.bitstream, tmp_path / "lod")
    s = cls(demo_condition())
    rs = s.encode(seq, RatePoint(32), tmp_path / "s")
    assert np.array_equal(d.frames, s.decode(rs.bitstream, tmp_path / "sd").frames)
    # max_interval forces key frames at least that often
    mx = cls(_with_policy({"adaptive": {"measure": "psnr", "threshold": 0, "max_interval": 3}}))
    r = mx.encode(seq, RatePoint(32), tmp_path / "mx")
    assert list(container.peek(r.bitstream).key_frames) == [0, 3, 6, 9]
    dm = mx.decode(r.bitstream, tmp_path / "mxd")
    assert dm.frames.shape == seq.frames.shape and dm.extras["colour"].shape == (10, 6)


def test_adaptive_decision_matches_a_hand_computed_one(tmp_path: Path, fake_intra: FakeIntra) -> None:
    """DAC's rule, replayed by hand: animate each inter frame from the key frame in force with the features
    the decoder will get; key frame when the running mean of those frames' PSNR (never reset) drops below
    the threshold."""
    from metrics.classic import psnr_rgb_frames

    seq = _sequence(t=12, seed=3)
    seq.frames[6:] = 255 - seq.frames[6:]  # a cut: animating the old key frame fails after it
    thr = 24.0
    codec = ToyColour(_with_policy({"adaptive": {"measure": "psnr", "threshold": thr}}))
    keys = list(container.peek(codec.encode(seq, RatePoint(32), tmp_path / "e").bitstream).key_frames)

    def decoded_key(frame: np.ndarray) -> np.ndarray:  # what FakeIntra gives back
        return frame // 8 * 8 + 4

    want, total, n = [0], 0.0, 0
    key = decoded_key(seq.frames[0])
    key_feat = prev = codec.analyse(key[None])[0]
    for t in range(1, 12):
        q, rec = entropy.dpcm_encode(codec.analyse(seq.frames[t:t + 1]), prev, codec.quant_scale)
        animated, _ = codec.synthesise(key, key_feat, rec)
        total += float(psnr_rgb_frames(seq.frames[t:t + 1], animated)[0])
        n += 1
        if total / n < thr:
            want.append(t)
            key = decoded_key(seq.frames[t])
            key_feat = prev = codec.analyse(key[None])[0]
        else:
            prev = rec[0]
    assert keys == want
    # the running mean lags behind the cut (DAC's AverageMeter is never reset); not every frame refreshes
    assert len(keys) == 2 and keys[1] >= 6
    # judged frame by frame, the cut itself becomes the key frame
    per_frame = ToyColour(_with_policy({"adaptive": {"measure": "psnr", "threshold": thr, "average": "frame"}}))
    keys_f = list(container.peek(per_frame.encode(seq, RatePoint(32), tmp_path / "f").bitstream).key_frames)
    assert 6 in keys_f


def test_container_v2_fuzz_gives_one_line(tmp_path: Path, fake_intra: FakeIntra) -> None:
    codec = ToyColour(_with_policy({"period": 3}))
    data = codec.encode(_sequence(t=9), RatePoint(32), tmp_path / "e").bitstream.read_bytes()
    rng = random.Random(0)
    for n in range(200):
        b = bytearray(data)
        if n % 2:
            b = b[: rng.randrange(len(b))]
        else:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        with pytest.raises(BitstreamError) as e:
            container.unpack(bytes(b))
        assert "\n" not in str(e.value)


def test_v2_header_fields_parsed_with_their_checks() -> None:
    sha = "ab" * 32
    hd = container.Header(codec="toy", model_id="m", model_checksum=sha, width=8, height=8, frames=10, fps_num=25,
                          fps_den=1, feature_coder=0, feature_dim=2, quant_scale=4.0, key_qp=3,
                          key_frames=(0, 4, 9), key_format="cheng2020-attn", feature_coder_name="my-coder")
    c = container.unpack(container.pack(hd, (b"a", b"bb", b"ccc"), b"f"))
    assert c.header == dataclasses.replace(hd, version=2, model_checksum="ab" * 8)
    assert c.key_payloads == (b"a", b"bb", b"ccc")
    with pytest.raises(Exception, match="key frames"):
        container.pack(dataclasses.replace(hd, key_frames=(1, 4)), (b"a", b"b"), b"")
    with pytest.raises(BitstreamError, match="not installed here"):
        entropy.feature_coder_for(0, "my-coder")


def test_key_frame_format_comes_from_the_stream(tmp_path: Path, fake_intra: FakeIntra) -> None:
    """A stream names its key-frame format: decoded by the coder of that format whatever the condition says;
    a format no installed coder decodes is refused naming the installed ones."""
    from gfvc.codec import Environment

    env = Environment(extra={"cheng2020_random_seed": 0, "cheng2020_channels": 8})
    lic = ToyColour(_with_policy("single", key_frame_coder="cheng2020-attn", key_frame_qps=[1]), env)
    seq = _sequence(t=3, h=64, w=64)
    res = lic.encode(seq, RatePoint(1), tmp_path / "e")
    vvc_condition = ToyColour(demo_condition(), env)  # condition says vvenc; the stream says cheng2020-attn
    assert np.array_equal(vvc_condition.decode(res.bitstream, tmp_path / "d").frames,
                          lic.decode(res.bitstream, tmp_path / "d2").frames)
    c = container.read(res.bitstream)
    other = container.pack(dataclasses.replace(c.header, key_format="jpeg-xl"), c.key_payloads, c.feature_payload)
    p = tmp_path / "other.gfvc"
    p.write_bytes(other)
    with pytest.raises(ModelMismatch, match="'jpeg-xl' key frames and no installed key-frame coder"):
        vvc_condition.decode(p, tmp_path / "d3")


# ----------------------------------------------------------------------------- variants
def _variant_condition(tmp_path: Path) -> object:
    base = load_condition("demo").to_dict()
    base.update(codecs=["keyframe-repeat", "kr-p8"], variants={
        "kr-p8": {"codec": "keyframe-repeat", "key_frame_policy": {"period": 8},
                  "description": "keyframe-repeat with a key frame every 8 frames"}})
    base["manifest"] = str(load_condition("demo").manifest_path)
    p = tmp_path / "v.yaml"
    p.write_text(json.dumps(base))
    return load_condition(p)


def test_variant_codec_has_its_stages_and_its_name(tmp_path: Path) -> None:
    cond = _variant_condition(tmp_path)
    v = build_codec("kr-p8", cond, None)  # type: ignore[arg-type]
    base = build_codec("keyframe-repeat", cond, None)  # type: ignore[arg-type]
    assert v.label == "kr-p8" and v.name == "keyframe-repeat" and base.label == "keyframe-repeat"
    assert v.condition.generative.key_frame_policy.period == 8
    pv, pb = v.provenance(), base.provenance()
    assert pv["variant"]["name"] == "kr-p8" and pv["key_frame_policy"]["period"] == 8
    assert "variant" not in pb and "key_frame_policy" not in pb
    assert v.stages()["key_frame_policy_text"] == "a key frame every 8 frames"


@pytest.mark.parametrize(("variants", "msg"), [
    ({"x": {"codec": "s2d"}}, "changes nothing"),
    ({"x": {"codec": "x", "feature_coder": "cabac"}}, "its own name"),
    ({"x": {"codec": "y", "feature_coder": "cabac"}, "y": {"codec": "s2d", "feature_coder": "cabac"}},
     "not the variant"),
    ({"x": {"codec": "s2d", "key_frame_qps": [70]}}, "outside 0..63"),
])
def test_bad_variants_are_refused(tmp_path: Path, variants, msg) -> None:
    d = load_condition("demo").to_dict()
    d.update(variants=variants, manifest=str(load_condition("demo").manifest_path))
    p = tmp_path / "v.yaml"
    p.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=msg):
        load_condition(p)


# ----------------------------------------------------------------------------- learned key frames
def test_cheng2020_key_frames_through_the_stage(tmp_path: Path) -> None:
    """A generative codec with cheng2020-attn key frames (seeded RANDOM weights, small widths: the
    arithmetic, not the pictures): version-2 stream, key format named, decodes to the encoder's keys."""
    cond = _with_policy({"period": 4}, key_frame_coder="cheng2020-attn", key_frame_qps=[1, 2])
    from gfvc.codec import Environment

    env = Environment(extra={"cheng2020_random_seed": 0, "cheng2020_channels": 8})
    codec = ToyColour(cond, env)
    codec.check()
    seq = _sequence(t=6, h=64, w=64)
    res = codec.encode(seq, RatePoint(1), tmp_path / "e")
    c = container.read(res.bitstream)
    assert c.header.version == 2 and c.header.key_format == "cheng2020-attn" and list(c.header.key_frames) == [0, 4]
    assert res.bits_breakdown["key_frame"] == 8 * sum(len(k) for k in c.key_payloads)
    dec = codec.decode(res.bitstream, tmp_path / "d")
    assert dec.frames.shape == seq.frames.shape
    prov = codec.provenance()
    assert prov["key_frame"]["coder"] == "cheng2020-attn" and prov["key_frame"]["intra"]["random_weights"] is True
    # VVC rate points are not qualities: one line naming the fix
    with pytest.raises(ConfigError, match="key_frame_qps to qualities"):
        ToyColour(_with_policy("single", key_frame_coder="cheng2020-attn"), env).check()


def test_cheng2020_without_weights_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gfvc.codec import Environment
    from gfvc.errors import NotAvailable

    monkeypatch.setenv("GFVC_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("GFVC_MODELS_DIR", str(tmp_path / "models"))
    cond = _with_policy("single", key_frame_coder="cheng2020-attn", key_frame_qps=[1])
    with pytest.raises(NotAvailable, match="cheng2020_attn-mse-1"):
        ToyColour(cond, Environment()).check()


def test_variants_run_and_the_report_compares_them_with_their_base(tmp_path: Path, fake_intra: FakeIntra) -> None:
    from gfvc.codec import Environment
    from reports.document import build_report
    from suite.runner.plan import execute, plan_run, write_run_json

    d = load_condition("demo").to_dict()
    d.update(frames=9, codecs=["vvenc", "keyframe-repeat", "kr-p4"], manifest=str(load_condition("demo").manifest_path),
             variants={"kr-p4": {"codec": "keyframe-repeat", "key_frame_policy": {"period": 4}}})
    d["metrics"]["names"] = ["psnr", "ssim"]
    d["bdrate"]["metrics"] = ["psnr", "ssim"]
    p = tmp_path / "c.yaml"
    p.write_text(json.dumps(d))
    cond = load_condition(p)
    plan = plan_run(cond, tmp_path / "run", Environment(), codecs=["keyframe-repeat", "kr-p4"])
    recs = execute(plan.jobs)
    write_run_json(plan, ["gfvc", "run"])
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    for r in recs:  # the rate is the container's size, key frames included
        bs = tmp_path / "run" / r["artifacts"]["bitstream"]
        c = container.read(bs)
        assert r["bits"] == 8 * bs.stat().st_size
        assert r["bits_breakdown"]["key_frame"] == 8 * sum(len(k) for k in c.key_payloads)
        assert list(c.header.key_frames) == ([0, 4, 8] if r["codec"] == "kr-p4" else [0])
        assert r["stages"]["key_frame_policy"]["kind"] == ("period" if r["codec"] == "kr-p4" else "single")
    out = build_report(tmp_path / "run", anchor="keyframe-repeat", formats=("json", "md", "txt"))
    summary = json.loads(out["json"].read_text())
    v = summary["variants"]["kr-p4"]
    assert v["base"] == "keyframe-repeat" and v["stages"]["key_frame_policy_text"] == "a key frame every 4 frames"
    assert {"psnr", "ssim"} <= set(v["bd_rate_vs_base"])
    md = out["md"].read_text()
    assert "Stage variants" in md and "kr-p4 | keyframe-repeat | a key frame every 4 frames" in md


@pytest.mark.slow
def test_demo_keyframes_condition_end_to_end(tmp_path: Path) -> None:
    """The built-in demo-keyframes condition (s2d and fomm: single, every 8 frames, adaptive) on 12 frames:
    every stream's bits (key frames included) are its container's size, and the report compares each
    variant with its single-key-frame codec."""
    from suite.cli.main import main

    run = tmp_path / "dk"
    codecs = ["vvenc", "s2d", "s2d-p8", "s2d-adaptive", "fomm", "fomm-p8", "fomm-adaptive"]
    argv = ["run", "--condition", "demo-keyframes", "--workdir", str(run), "--frames", "12", "-j", "2"]
    for c in codecs:
        argv += ["--codec", c]
    assert main(argv) == 0
    recs = [json.loads(p.read_text()) for p in (run / "records").glob("*.json")]
    assert len(recs) == 4 * len(codecs) and all(r["status"] == "ok" for r in recs)
    for r in recs:
        bs = run / r["artifacts"]["bitstream"]
        assert r["bits"] == 8 * bs.stat().st_size
        if r["family"] == "generative":
            c = container.read(bs)
            assert r["bits_breakdown"]["key_frame"] == 8 * sum(len(k) for k in c.key_payloads)
            if r["codec"].endswith("-p8"):
                assert list(c.header.key_frames) == [0, 8]
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert {"s2d-p8", "s2d-adaptive", "fomm-p8", "fomm-adaptive"} <= set(summary["variants"])
    assert summary["variants"]["fomm-p8"]["base"] == "fomm"
