"""cheng2020-attn key-frame coder: layout, conformance with CompressAI, coding, payload checks, weights.

The vectors (model_parts/learned_image/vectors/cheng2020.{pt,json}) were made by CompressAI
1.2.4 itself (tools/make_cheng2020_vectors.py) on seeded random weights that
the suite regenerates here; their sha256 is checked first, so a change in
torch's random streams fails loudly instead of comparing different models.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import constriction
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import ndtri  # what scipy.stats.norm.ppf evaluates for the standard normal
from test_weights_fetch import _Server

from gfvc import download
from gfvc.errors import BitstreamError, InputError, ModelMismatch, WeightsError
from model_parts.learned_image import checkpoints
from model_parts.learned_image.cheng2020 import (
    Cheng2020Attention,
    canonical_state_dict,
    random_state_dict,
    state_dict_sha256,
)
from model_parts.learned_image.entropy_models import TAIL_MASS, tail_multiplier
from model_parts.learned_image.keyframe import HEADER_BYTES, Cheng2020KeyFrameCoder, padding
from model_parts.learned_image.spec import QUALITIES, channels_for_quality
from model_parts.learned_image.tables import TableCoder, pmf_to_quantized_cdf

VECTORS = Path(__file__).resolve().parents[1] / "model_parts" / "learned_image" / "vectors"
META = json.loads((VECTORS / "cheng2020.json").read_text())
FORWARD_KEYS = ("y", "z", "z_hat", "z_likelihoods", "y_hat", "scales", "means", "y_likelihoods", "x_hat")


@pytest.fixture(scope="module")
def vector_data() -> dict:
    return torch.load(VECTORS / "cheng2020.pt", weights_only=True)


@pytest.fixture(scope="module")
def small_coder() -> Cheng2020KeyFrameCoder:
    return Cheng2020KeyFrameCoder.random_weights(5, channels=16)


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("quality", [1, 6])
def test_state_dict_layout_equals_compressai(quality):
    """Keys and shapes of the port equal CompressAI 1.2.4's cheng2020_attn(quality) (recorded by the official code)."""
    official = META["layout"]["qualities"][str(quality)]
    assert channels_for_quality(quality) == (128 if quality <= 3 else 192)
    mine = {k: list(v.shape) for k, v in Cheng2020Attention(channels_for_quality(quality)).state_dict().items()}
    assert mine == official
    assert len(mine) == 312


def test_official_layout_is_two_sizes():
    layouts = META["layout"]["qualities"]
    assert [layouts[str(q)] == layouts["1"] for q in QUALITIES] == [True] * 3 + [False] * 3
    assert all(layouts[str(q)] == layouts["6"] for q in (4, 5, 6))


@pytest.mark.parametrize("quality", [1, 6])
def test_strict_load_of_full_size_random_state_dict(quality):
    """A random state_dict in the official full-size layout loads strictly; tables are computed, not invented."""
    n = channels_for_quality(quality)
    sd = random_state_dict(n, 100 + quality)
    assert {k: list(v.shape) for k, v in sd.items()} == META["layout"]["qualities"][str(quality)]
    net = Cheng2020Attention(n)
    assert net.load_compressai_state_dict(sd, "test").startswith("computed by update()")
    assert net.has_tables and tuple(net.gaussian_conditional._quantized_cdf.shape)[0] == 64
    # a file saved after update() keeps its tables as stored (any size), like CompressAI's load_state_dict
    saved = net.state_dict()
    saved["entropy_bottleneck._quantized_cdf"] = saved["entropy_bottleneck._quantized_cdf"].clone()
    again = Cheng2020Attention(n)
    assert again.load_compressai_state_dict(saved, "test") == "stored in the checkpoint"
    assert torch.equal(again.gaussian_conditional._quantized_cdf, net.gaussian_conditional._quantized_cdf)
    for k, v in saved.items():
        assert torch.equal(again.state_dict()[k], v), k


def test_other_compressai_key_spellings_load():
    """module. prefix, >=1.2.7 ParameterList names, early _biases.N names and 'downsample' all map to 1.2.4 keys."""
    sd = random_state_dict(16, 3)
    variants = []
    new = {}
    for k, v in sd.items():
        k2 = k.replace("entropy_bottleneck._bias", "entropy_bottleneck.biases.")
        k2 = k2.replace("entropy_bottleneck._matrix", "entropy_bottleneck.matrices.")
        k2 = k2.replace("entropy_bottleneck._factor", "entropy_bottleneck.factors.")
        new[k2] = v
    variants.append(new)
    variants.append({"module." + k.replace("entropy_bottleneck._bias", "entropy_bottleneck._biases.")
                     .replace(".skip.", ".downsample."): v for k, v in sd.items()})
    variants.append({"state_dict": sd})
    for v in variants:
        assert canonical_state_dict(v).keys() == sd.keys()
        net = Cheng2020Attention(16)
        net.load_compressai_state_dict(v, "variant")
        assert torch.equal(net.entropy_bottleneck._bias2, sd["entropy_bottleneck._bias2"])


def test_wrong_state_dict_is_refused_with_names():
    sd = random_state_dict(16, 3)
    bad = dict(sd)
    del bad["g_s.9.0.weight"]
    with pytest.raises(ModelMismatch, match="g_s.9.0.weight"):
        Cheng2020Attention(16).load_compressai_state_dict(bad, "bad")
    with pytest.raises(ModelMismatch, match="other shapes"):
        Cheng2020Attention(32).load_compressai_state_dict(sd, "wrong N")


# ---------------------------------------------------------------------------------------------- tables
def _reference_quantized_cdf(pmf: np.ndarray) -> np.ndarray:
    """Straight transcription of the tabulation rule with a full scan per empty symbol (slow, obvious)."""
    one = 1 << 16
    cdf = [0] + [int(np.floor(float(np.float32(p) * np.float32(one)) + 0.5)) for p in pmf]
    total = sum(cdf)
    cdf = [(one * c) // total for c in cdf]
    cdf = list(np.cumsum(cdf))
    cdf[-1] = one
    for i in range(len(cdf) - 1):
        if cdf[i] == cdf[i + 1]:
            best, steal = None, -1
            for j in range(len(cdf) - 1):
                f = cdf[j + 1] - cdf[j]
                if f > 1 and (best is None or f < best):
                    best, steal = f, j
            if steal < i:
                for j in range(steal + 1, i + 1):
                    cdf[j] -= 1
            else:
                for j in range(i + 1, steal + 1):
                    cdf[j] += 1
    return np.asarray(cdf)


def test_tail_multiplier_equals_scipys():
    assert tail_multiplier() == -float(ndtri(TAIL_MASS / 2))


@pytest.mark.parametrize("seed", range(6))
def test_quantized_cdf_matches_the_rule(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 300))
    pmf = rng.random(n) ** 8  # many tiny probabilities -> empty symbols that must steal
    pmf[rng.random(n) < 0.3] = 0.0
    pmf = (pmf / max(pmf.sum(), 1e-30)).astype(np.float32)
    if pmf.sum() == 0:
        pmf[0] = 1
    got = pmf_to_quantized_cdf(pmf)
    assert np.array_equal(got, _reference_quantized_cdf(pmf))
    assert got[0] == 0 and got[-1] == 1 << 16 and (np.diff(got) > 0).all()


def test_table_coder_round_trip_with_escapes():
    """Symbols inside and far outside the tables (bypass-coded) come back exactly; absurd values are refused."""
    cdf = np.zeros((2, 7), np.int32)
    cdf[0, :5] = pmf_to_quantized_cdf(np.array([0.25, 0.5, 0.25 - 1e-6, 1e-6], np.float32))
    cdf[1, :7] = pmf_to_quantized_cdf(np.array([0.1, 0.2, 0.4, 0.2, 0.1 - 1e-6, 1e-6], np.float32))
    coder = TableCoder(cdf, np.array([5, 7]), np.array([-1, -2]), "test")
    rng = np.random.default_rng(1)
    q = rng.integers(-3, 4, 500)
    q[::37] = rng.integers(-100000, 100000, q[::37].size)
    idx = rng.integers(0, 2, 500)
    enc = constriction.stream.queue.RangeEncoder()
    escaped = coder.encode(enc, q, idx)
    assert escaped > 14
    dec = constriction.stream.queue.RangeDecoder(enc.get_compressed())
    assert np.array_equal(coder.decode(dec, idx), q)
    with pytest.raises(InputError, match="too far outside"):
        coder.encode(constriction.stream.queue.RangeEncoder(), np.array([2 ** 40]), np.array([0]))


# ---------------------------------------------------------------------------------------------- conformance
def _close(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """|ours - theirs| <= 1e-5 + 1e-5 |theirs| everywhere.

    float32 convolutions sum in another order on another oneDNN kernel: under ONEDNN_MAX_CPU_ISA=AVX2
    the q6 latent y (values up to about 2.5) differs from CompressAI's AVX-512 run by 1.05e-5, so an
    absolute 1e-5 alone would make the test depend on the CPU. A real porting error is orders larger.
    """
    return bool(torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5))


@pytest.mark.parametrize("case", sorted(META["cases"]))
def test_conformance_with_compressai(case, vector_data):
    """Forward, tables, encoder-side y_hat, decoded x_hat and bits against CompressAI 1.2.4's own outputs."""
    c, d = META["cases"][case], vector_data[case]
    sd = random_state_dict(c["N"], c["weight_seed"])
    assert state_dict_sha256(sd) == c["random_state_dict_sha256"], "the seeded weights differ from the vectors' weights"
    net = Cheng2020Attention(c["N"])
    net.load_compressai_state_dict(sd, case)
    net.eval()
    for name, m in (("entropy_bottleneck", net.entropy_bottleneck), ("gaussian_conditional", net.gaussian_conditional)):
        ref = c["tables"][name]
        cdf = m._quantized_cdf
        assert list(cdf.shape) == ref["quantized_cdf_shape"]
        assert hashlib.sha256(cdf.numpy().tobytes()).hexdigest() == ref["quantized_cdf_sha256"]
        assert m._cdf_length.tolist() == ref["cdf_length"] and m._offset.tolist() == ref["offset"]
    assert net.gaussian_conditional.scale_table.tolist() == c["tables"]["gaussian_conditional"]["scale_table"]

    frame = d["frame"].numpy()
    h, w = frame.shape[:2]
    assert list(padding(h, w)) == c["compute_padding_min_div_64"]["pad_left_right_top_bottom"]
    x = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)).astype(np.float64) / 255.0).float()[None]
    x = F.pad(x, padding(h, w))
    out = net(x)
    for k in FORWARD_KEYS:
        assert out[k].shape == d[k].shape, k
        assert _close(out[k], d[k]), (k, float((out[k] - d[k]).abs().max()))

    enc = constriction.stream.queue.RangeEncoder()
    lat = net.encode_latents(x, enc)
    assert _close(lat.y_hat, d["y_hat_enc"])
    code_bytes = 4 * enc.num_words()
    official = c["compress"]["y_string_bytes"] + c["compress"]["z_string_bytes"]
    assert abs(code_bytes - official) <= 0.03 * official, (code_bytes, official)
    y_hat = net.decode_latents(constriction.stream.queue.RangeDecoder(enc.get_compressed()), *lat.z.shape[2:])
    assert torch.equal(y_hat, lat.y_hat)
    x_hat = net.synthesis(y_hat)
    if c["x_hat_dec_stored"]:
        assert _close(x_hat, d["x_hat_dec"])


# ---------------------------------------------------------------------------------------------- coder API
@pytest.mark.parametrize("size", [(64, 64), (40, 100)])
def test_round_trip(small_coder, size):
    h, w = size
    frame = _frame(h, w)
    payload, recon, info = small_coder.compress_frame(frame, 3)
    assert len(payload) > HEADER_BYTES and info["bytes"] == len(payload) and info["bits"] == 8 * len(payload)
    assert info["padded_size"] == [64, (w + 63) // 64 * 64]
    decoded = small_coder.decompress(payload, w, h)
    assert decoded.shape == (h, w, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, recon)
    # the reconstruction is g_s(y_hat) of the encoder's latents, rounded: recompute it independently
    net = small_coder._load(3).net
    x = torch.from_numpy(frame.transpose(2, 0, 1).astype(np.float64) / 255.0).float()[None]
    lat = net.encode_latents(F.pad(x, padding(h, w)), constriction.stream.queue.RangeEncoder())
    left, _, top, _ = padding(h, w)
    ref = (net.synthesis(lat.y_hat)[0, :, top:top + h, left:left + w] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(decoded, ref)
    as_float = small_coder.decompress_float(payload, w, h)
    assert as_float.dtype == np.float32 and as_float.shape == (h, w, 3)
    assert np.array_equal(np.round(as_float * 255).astype(np.uint8), decoded)
    assert small_coder.encode(frame, 3)[0] == payload  # deterministic, with or without the reconstruction


def test_decoder_threads_do_not_matter(small_coder):
    """Encode with 1 torch thread, decode with 2: the same picture (the context loop is single-threaded)."""
    frame = _frame(64, 128, 4)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        payload, recon, _ = small_coder.compress_frame(frame, 2)
        torch.set_num_threads(2)
        assert np.array_equal(small_coder.decompress(payload, 128, 64), recon)
    finally:
        torch.set_num_threads(old)


def test_truncation_rounding_option():
    frame = _frame(64, 64, 2)
    nearest = Cheng2020KeyFrameCoder.random_weights(5, channels=16)
    trunc = Cheng2020KeyFrameCoder.random_weights(5, channels=16, rounding="truncate")
    p, r_near, _ = nearest.compress_frame(frame, 1)
    r_trunc = trunc.decompress(p, 64, 64)
    diff = r_near.astype(int) - r_trunc.astype(int)
    assert set(np.unique(diff)) <= {0, 1} and diff.any()


def test_corrupt_and_truncated_payloads_are_refused(small_coder):
    frame = _frame(64, 64, 1)
    payload = small_coder.compress(frame, 1)
    rng = np.random.default_rng(3)
    bad = [payload[:-1], payload[:-4], payload[:HEADER_BYTES], payload[:3], payload + b"\0\0\0\0",
           bytes([0x00]) + payload[1:], payload[:1] + bytes([payload[1] | 0x0F]) + payload[2:]]
    for _ in range(12):
        b = bytearray(payload)
        b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        bad.append(bytes(b))
    for b in bad:
        with pytest.raises(BitstreamError) as e:
            small_coder.decompress(b, 64, 64)
        assert "\n" not in str(e.value)
    with pytest.raises(BitstreamError, match="another picture size"):
        small_coder.decompress(payload, 64, 60)
    other = Cheng2020KeyFrameCoder.random_weights(6, channels=16)
    with pytest.raises(BitstreamError, match="other weights"):
        other.decompress(payload, 64, 64)
    ssim = Cheng2020KeyFrameCoder.random_weights(5, channels=16, metric="ms-ssim")
    with pytest.raises(ModelMismatch, match="mse"):
        ssim.decompress(payload, 64, 64)


def test_bad_inputs(small_coder):
    with pytest.raises(InputError):
        small_coder.compress(np.zeros((64, 64, 3), np.float32), 1)
    with pytest.raises(InputError, match="quality"):
        small_coder.compress(_frame(64, 64), 7)
    with pytest.raises(InputError, match="metric"):
        Cheng2020KeyFrameCoder("psnr")


def test_provenance_labels_random_weights(small_coder):
    small_coder.compress(_frame(64, 64), 1)
    prov = small_coder.provenance()
    assert prov["random_weights"] is True and prov["reference"]["version"] == "1.2.4"
    assert prov["qualities"][1]["random_weights"] is True and "NOT a trained model" in prov["qualities"][1]["note"]
    assert "constriction" in prov["entropy_coder"]["engine"]
    json.dumps(prov)


# ---------------------------------------------------------------------------------------------- weights
def test_registry_names_the_official_files():
    assert len(checkpoints.REGISTRY) == 12
    e = checkpoints.official(6, "mse")
    assert e.url == "https://compressai.s3.amazonaws.com/models/v1/cheng2020_attn-mse-6-730501f2.pth.tar"
    assert checkpoints.official(1, "ms-ssim").filename == "cheng2020_attn-ms-ssim-1-c5381d91.pth.tar"
    assert {r.channels for r in checkpoints.REGISTRY.values()} == {128, 192}


@pytest.fixture
def empty_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GFVC_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("GFVC_OFFLINE", "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_missing_weights_name_file_and_fix(empty_caches):
    coder = Cheng2020KeyFrameCoder()
    with pytest.raises(WeightsError) as e:
        coder.check([6])
    msg = str(e.value)
    assert "cheng2020_attn-mse-6-730501f2.pth.tar" in msg and "fix:" in msg and "GFVC_OFFLINE" in msg
    assert "\n" not in msg
    with pytest.raises(WeightsError, match="cheng2020_attn-mse-2-e0805385"):
        coder.compress(_frame(64, 64), 2)  # never falls back to random weights


def test_wrong_file_under_the_official_name_is_refused(empty_caches):
    empty_caches.mkdir(parents=True)
    (empty_caches / checkpoints.official(1).filename).write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="does not start with 465f2b64"):
        Cheng2020KeyFrameCoder().check([1])
    rows = {r["name"]: r for r in checkpoints.status()}
    assert rows["cheng2020-attn-mse-1"]["state"] == "mismatch" and rows["cheng2020-attn-mse-2"]["state"] == "missing"


def test_checkpoint_file_is_used_and_recorded(tmp_path):
    sd = random_state_dict(128, 9)
    path = tmp_path / "mine.pth.tar"
    torch.save(sd, path)
    coder = Cheng2020KeyFrameCoder(checkpoint_files={1: path})
    coder.check([1])
    frame = _frame(64, 64)
    payload = coder.compress(frame, 1)
    assert coder.decompress(payload, 64, 64).shape == (64, 64, 3)
    q1 = coder.provenance()["qualities"][1]
    assert q1["official"] is False and q1["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert q1["entropy_tables"].startswith("computed by update()")
    with pytest.raises(ModelMismatch, match="N=128"):
        Cheng2020KeyFrameCoder(checkpoint_files={6: path}).check([6])


def test_download_through_the_shared_downloader(monkeypatch, tmp_path):
    """GFVC_WEIGHTS_MIRROR + the suite's verified downloader: the pinned prefix is fetched, other files refused."""
    monkeypatch.delenv("GFVC_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GFVC_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(download, "_HOSTS", {})
    root = tmp_path / "srv"
    root.mkdir()
    data = b"pretend checkpoint " * 50
    entry = checkpoints.official(3)
    (root / entry.filename).write_bytes(data)
    srv = _Server(root)
    try:
        monkeypatch.setenv("GFVC_WEIGHTS_MIRROR", srv.url)
        with pytest.raises(WeightsError, match="refused and deleted"):
            checkpoints.locate(3)
        assert not (tmp_path / "torch" / "hub" / "checkpoints" / entry.filename).exists()
        prefix = hashlib.sha256(data).hexdigest()[:8]
        monkeypatch.setitem(checkpoints.REGISTRY, ("mse", 3), checkpoints.OfficialWeights(3, "mse", prefix))
        (root / checkpoints.official(3).filename).write_bytes(data)
        path, digest = checkpoints.locate(3)
        assert path.read_bytes() == data and digest == hashlib.sha256(data).hexdigest()
        assert path.parent == tmp_path / "torch" / "hub" / "checkpoints"
    finally:
        srv.close()
