"""gfvc.cpu_guard: which ISA oneDNN runs at, the faulty convolution family, and the hooks that route it.

The crash itself is exercised in child processes (tests/test_cpu_guard_training.py, tools/onednn_probe.py);
here the guard's decisions and its effect on autograd are checked in-process, with the guard forced on
where the machine's ISA would not need it.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gfvc import cpu_guard as G

ZEN3 = {"sse4_1", "avx", "avx2", "fma", "bmi2"}                      # AMD EPYC 7003: AVX2, no AVX-512
ALDER = ZEN3 | {"avx_vnni"}                                          # Intel client with AVX-VNNI
SPR = ZEN3 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx_vnni", "amx_tile"}


@pytest.fixture
def forced(monkeypatch):
    """The guard forced on (GFVC_CPU_GUARD=on) for this test; the cached status is refreshed after."""
    monkeypatch.setenv(G.ENV_OVERRIDE, "on")
    G.status(refresh=True)
    yield
    monkeypatch.undo()
    G.status(refresh=True)


def test_isa_cap_reads_variables_as_onednn_does():
    assert G.isa_cap({}) == (None, None)
    assert G.isa_cap({"ONEDNN_MAX_CPU_ISA": "avx2"}) == ("avx2", "ONEDNN_MAX_CPU_ISA")
    assert G.isa_cap({"DNNL_MAX_CPU_ISA": "AVX2_VNNI"}) == ("avx2_vnni", "DNNL_MAX_CPU_ISA")
    # ONEDNN_ first; an empty one falls through; an unknown value means no cap (DNNL_ then ignored)
    assert G.isa_cap({"ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "AVX2"})[0] == "sse41"
    assert G.isa_cap({"ONEDNN_MAX_CPU_ISA": "", "DNNL_MAX_CPU_ISA": "AVX2"})[0] == "avx2"
    assert G.isa_cap({"ONEDNN_MAX_CPU_ISA": "BOGUS", "DNNL_MAX_CPU_ISA": "AVX2"}) == (None, "ONEDNN_MAX_CPU_ISA")
    assert G.isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_FP16"})[0] == "avx10_1_512"   # alias


def test_machine_and_effective_isa():
    assert G.machine_isa(ZEN3) == "avx2"
    assert G.machine_isa(ALDER) == "avx2_vnni"
    assert G.machine_isa(SPR) == "avx512_core"
    assert G.machine_isa(SPR | {"avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16"}) == \
        "avx10_1_512_amx"                                    # Sapphire Rapids: what oneDNN reports there
    assert G.machine_isa({"sse4_1", "avx"}) == "avx" and G.machine_isa({"sse4_1"}) == "sse41"
    assert G.effective_isa("AVX2", SPR) == "avx2"            # an AVX-512 machine capped at AVX2
    assert G.effective_isa("AVX512_CORE", ZEN3) == "avx2"    # a cap above the machine changes nothing
    assert G.effective_isa("DEFAULT", ZEN3) == "avx2"
    assert G.effective_isa("SSE41", SPR) == "sse41"
    assert G.effective_isa(None, ZEN3, environ={"ONEDNN_MAX_CPU_ISA": "AVX"}) == "avx"


def test_status_follows_the_environment(monkeypatch):
    try:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
        st = G.status(refresh=True)
        assert st["isa"] == "sse41" and not st["active"] and "not affected" in st["reason"]
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
        st = G.status(refresh=True)
        if st["machine_isa"] in G.AFFECTED_ISAS:
            assert st["active"] and st["isa"] == "avx2" and "< 8 input channels" in st["reason"]
            assert st["isa_cap_variable"] == "ONEDNN_MAX_CPU_ISA" and st["onednn"]
        monkeypatch.setenv(G.ENV_OVERRIDE, "off")
        assert not G.status(refresh=True)["active"]
        assert set(G.provenance()) == {"active", "isa", "reason", "onednn"}
    finally:
        monkeypatch.undo()
        G.status(refresh=True)


def faulty(**changes) -> bool:
    cfg = dict(isa="avx2", dim=2, transposed=False, kernel=(1, 1), stride=(2, 2), padding=(0, 0), groups=1,
               in_channels=4, dtype=torch.float32, channels_last=True, training=True)
    cfg.update(changes)
    return G.config_is_faulty(**cfg)


def test_faulty_family():
    """The issue's convolution (TPSM's ResNet shortcut, width 4) and every single change that leaves it."""
    assert faulty()
    assert faulty(stride=(2, 1)) and faulty(in_channels=1) and faulty(in_channels=7) and faulty(dtype="float32")
    assert faulty(isa="avx2_vnni") and faulty(isa="avx512_core", in_channels=15)
    assert faulty(isa="avx10_1_512_amx", in_channels=8)
    for change in ({"in_channels": 8}, {"isa": "avx512_core", "in_channels": 16}, {"isa": "avx"},
                   {"isa": "sse41"}, {"isa": "non-x86"}, {"stride": (1, 1)}, {"kernel": (3, 3)},
                   {"padding": (1, 1)}, {"groups": 2}, {"transposed": True}, {"dim": 3}, {"channels_last": False},
                   {"training": False}, {"dtype": torch.bfloat16}):
        assert not faulty(**change), change


@pytest.mark.parametrize("make", [
    lambda: torch.randn(2, 4, 8, 8),
    lambda: torch.randn(2, 8, 8, 4).permute(0, 3, 1, 2),                 # frames from HWC images
    lambda: torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last),
    lambda: torch.randn(8, 4, 1, 1),                                       # 1x1 weight: ambiguous, NCHW
    lambda: torch.randn(8, 4, 1, 1).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
    lambda: torch.randn(1, 1, 5, 5),
    lambda: torch.randn(3, 1, 1, 1),
    lambda: torch.randn(2, 4, 1, 6).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
    lambda: torch.randn(2, 4, 8, 8)[:, :, ::2],
])
def test_channels_last_rule_is_torchs(make):
    from torch._prims_common import suggest_memory_format

    t = make()
    assert G.strides_like_channels_last(t.shape, t.stride()) == (suggest_memory_format(t) == torch.channels_last)


class FunctionalConv(torch.nn.Module):
    """A module that owns its weight and calls F.conv2d (as LIA's EqualConv2d does)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(cout, cin, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(F.conv2d(x, self.weight * 0.5, stride=2), 0.2)


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(4, 6, 1, stride=2, bias=False), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, 6, 3, padding=1), FunctionalConv(6, 4))


def frames() -> torch.Tensor:
    return torch.randn(2, 16, 16, 4).permute(0, 3, 1, 2)   # channels-last, as PairDataset makes them


def test_guard_routes_only_the_faulty_nodes_and_restores_mkldnn(forced):
    m, ref = net(), net()
    st = G.guard_model({"a": m})
    assert st["active"] and st["guarded_modules"] == 3       # two Conv2d + the functional module
    assert G.guard_model(m)["guarded_modules"] == 3          # idempotent: no second hook
    seen: list[bool] = []
    x = frames()
    before = G.status()["guarded_nodes"]
    y = m(x)
    node = y.grad_fn.next_functions[0][0]                    # FunctionalConv's convolution (6 ch: guarded)
    assert node.name() == "ConvolutionBackward0" and node.metadata.get("gfvc_cpu_guard")
    node.register_prehook(lambda g: seen.append(torch.backends.mkldnn.enabled))  # runs after the guard's
    assert G.status()["guarded_nodes"] - before == 2         # the two 1x1 stride-2 convs, not the 3x3
    g = torch.randn_like(y)
    y.backward(g)
    assert seen == [False] and torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False   # the reference: no mkldnn anywhere
    try:
        yr = ref(x)
        yr.backward(g)
    finally:
        torch.backends.mkldnn.enabled = True
    torch.testing.assert_close(y, yr)
    for (n, p), (_, q) in zip(m.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_guard_leaves_other_work_alone(forced):
    m = net()
    G.guard_model(m)
    before = G.status()["guarded_nodes"]
    m(torch.randn(2, 4, 16, 16)).sum().backward()           # contiguous input: oneDNN's blocked layout
    with torch.no_grad():
        m(frames())                                         # inference
    for p in m.parameters():
        p.requires_grad_(False)
    m(frames().requires_grad_()).sum().backward()           # frozen weights: no weight gradient
    assert G.status()["guarded_nodes"] == before


def test_double_backward_is_guarded_too(forced):
    m = net()
    G.guard_model(m)
    x = frames().requires_grad_()
    before = G.status()["guarded_nodes"]
    (gx,) = torch.autograd.grad(m(x).sum(), x, create_graph=True)   # LIA's R1 penalty does this
    # the two faulty convolutions and, made by their guarded backward, their two double-backward nodes
    assert G.status()["guarded_nodes"] - before == 4 and gx.grad_fn.metadata.get("gfvc_cpu_guard")
    gx.pow(2).sum().backward()
    assert torch.backends.mkldnn.enabled and all(p.grad is not None for p in m.parameters())


def test_install_guards_modules_built_later(forced):
    try:
        assert G.install()["installed"]
        before = G.status()["guarded_nodes"]
        net()(frames()).sum().backward()
        assert G.status()["guarded_nodes"] - before == 2
    finally:
        G.uninstall()
    assert not G.status()["installed"]


def test_inactive_guard_installs_nothing(monkeypatch):
    try:
        monkeypatch.setenv(G.ENV_OVERRIDE, "off")
        G.status(refresh=True)
        m = net()
        assert G.guard_model(m)["guarded_modules"] == 0 and not G.install()["installed"]
        assert not any(mod._forward_hooks for mod in m.modules())
    finally:
        monkeypatch.undo()
        G.status(refresh=True)
