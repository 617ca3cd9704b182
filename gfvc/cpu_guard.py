"""Keep torch's CPU training off a oneDNN kernel that corrupts the heap (issue 16).

The fault. oneDNN 3.12 (bundled with torch 2.14.1) computes the weight gradient of 1x1 strided
convolutions with its JIT 1x1 kernel (``jit_1x1:avx2`` / ``jit_1x1:avx512_core`` ``backward_weights``),
which writes past a buffer when the input has fewer channels than one vector register holds: glibc then
aborts (``free(): invalid next size``, ``double free or corruption``), the process segfaults, hangs
(several threads), or the gradient is silently wrong. ``tools/onednn_probe.py`` sweeps convolution
configurations, one process each; the family it pins down (docs/running.md, "CPU guard"):

* oneDNN runs at AVX2 or above (``ONEDNN_MAX_CPU_ISA``/``DNNL_MAX_CPU_ISA`` lower it; SSE4.1 and AVX
  use a GEMM kernel and are not affected);
* 2-D convolution, not transposed, groups 1, kernel 1x1, padding 0, stride > 1;
* fewer input channels than one register of float32: < 8 at AVX2-class ISAs (``avx2``, ``avx2_vnni``,
  ``avx2_vnni_2``: AMD Zen 1-3, Intel before AVX-512), < 16 at AVX-512 ones; float32;
* channels-last layout (input or weight, as torch decides it: frames made with ``permute(2, 0, 1)``
  from HWC images are channels-last);
* the weight gradient is computed (training). The forward pass and the input gradient are fine, so
  inference is not affected. AVX2 crashes from 8x8 outputs on; AVX-512 from about 32x32.

The guard. Where oneDNN runs at such an ISA, a forward hook looks at the autograd node of each
convolution a module runs; when the node is in the family above, it gets a pre-hook that switches mkldnn
off and a post-hook that switches it back, so only that convolution's backward runs on torch's native
kernel. Everything else keeps mkldnn; elsewhere (SSE4.1/AVX, non-x86, torch without oneDNN) nothing is
installed. ``GFVC_CPU_GUARD=off`` disables the guard, ``=on`` forces it (tests, benchmarks).
:func:`status` says whether it is active and why (recorded with training runs and, through
``gfvc.devices.device_provenance``, in records).

Library floor: imports only torch (lazily) and the standard library.
"""
from __future__ import annotations

import os
import platform
import re
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

# oneDNN's CPU ISA names (ONEDNN_MAX_CPU_ISA values, lower case) from least to most capable, with the
# aliases oneDNN accepts. The x64 ISAs are not strictly nested (avx2_vnni_2 is not part of avx512_core),
# but for choosing a float32 convolution kernel this order is what matters.
ISA_ORDER = ("sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni",
             "avx512_core_bf16", "avx10_1_512", "avx10_1_512_amx", "avx10_1_512_amx_fp16", "avx10_2_512",
             "avx10_2_512_amx_2")
ISA_ALIASES = {"avx512_core_fp16": "avx10_1_512", "avx512_core_amx": "avx10_1_512_amx",
               "avx512_core_amx_fp16": "avx10_1_512_amx_fp16"}
# The ISAs at which oneDNN 3.12 computes 1x1 weight gradients with its faulty JIT kernel.
AFFECTED_ISAS = frozenset(ISA_ORDER[ISA_ORDER.index("avx2"):])
ENV_OVERRIDE = "GFVC_CPU_GUARD"
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")   # oneDNN reads ONEDNN_ first
NODE_LIMIT = 256          # autograd nodes one module's forward hook looks at (a conv is within a few)
_MARK = "gfvc_cpu_guard"  # key in an autograd node's metadata: already looked at

_FORCE = ("1", "on", "true", "yes", "force")
_OFF = ("0", "off", "false", "no")
_lock = threading.Lock()
_installed: Any = None    # handle of the global module forward hook
_cache: dict[str, Any] = {}
_stats = {"guarded_nodes": 0}


# --- which ISA will oneDNN use -------------------------------------------------------------------

def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags (Linux /proc/cpuinfo), None where that file does not exist."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def machine_isa(flags: Iterable[str] | None = None) -> str:
    """The most capable oneDNN ISA this CPU supports ("" on a CPU without SSE4.1, "non-x86" elsewhere).

    From the CPU flags, after oneDNN's tests (avx512_core = AVX-512 F+BW+VL+DQ, then VNNI, BF16, FP16
    (avx10_1_512), AMX; avx2_vnni adds AVX-VNNI to AVX2, avx2_vnni_2 AVX-VNNI-INT8 and AVX-NE-CONVERT).
    Without /proc/cpuinfo, torch's ATen CPU capability stands in (AVX512 -> avx512_core, AVX2 -> avx2).
    """
    if flags is None:
        if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
            return "non-x86"
        found = cpu_flags()
        if found is None:
            import torch  # lazy: torch is heavy; only needed without /proc/cpuinfo

            cap = torch.backends.cpu.get_cpu_capability()
            return {"AVX512": "avx512_core", "AVX2": "avx2"}.get(cap, "avx")
        flags = found
    f = set(flags)
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= f:
        levels = [("avx512_core_vnni", {"avx512_vnni"}), ("avx512_core_bf16", {"avx512_bf16"}),
                  ("avx10_1_512", {"avx512_fp16"}), ("avx10_1_512_amx", {"amx_tile", "amx_int8", "amx_bf16"}),
                  ("avx10_1_512_amx_fp16", {"amx_fp16"})]
        isa = "avx512_core"
        for name, need in levels:   # each level includes the ones before it
            if not need <= f:
                break
            isa = name
        return isa
    if "avx2" in f:
        if {"avx_vnni", "avx_vnni_int8", "avx_ne_convert"} <= f:
            return "avx2_vnni_2"
        return "avx2_vnni" if "avx_vnni" in f else "avx2"
    if "avx" in f:
        return "avx"
    return "sse41" if "sse4_1" in f else ""


def isa_cap(environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(cap, variable): the ISA ``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA`` caps oneDNN at.

    As oneDNN reads them: the first non-empty variable counts; its value is case-insensitive; a value
    oneDNN does not know (or ``ALL``/``DEFAULT``) means no cap.
    """
    env = os.environ if environ is None else environ
    for var in ISA_VARIABLES:
        raw = env.get(var, "")
        if raw:
            name = ISA_ALIASES.get(raw.lower(), raw.lower())
            return (name if name in ISA_ORDER else None), var
    return None, None


def effective_isa(cap: str | None = None, flags: Iterable[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> str:
    """The ISA oneDNN dispatches to: the machine's, lowered to the cap (``cap`` or the environment's).

    ``cap`` may be an ISA name or ``DEFAULT``; None reads the environment.
    """
    if cap is None:
        cap, _ = isa_cap(environ)
    else:
        cap = ISA_ALIASES.get(cap.lower(), cap.lower())
        cap = cap if cap in ISA_ORDER else None
    top = machine_isa(flags)
    if top not in ISA_ORDER or cap is None:
        return top
    return ISA_ORDER[min(ISA_ORDER.index(top), ISA_ORDER.index(cap))]


# --- the faulty family -----------------------------------------------------------------------------

def simd_floats(isa: str) -> int:
    """float32 lanes of the vector registers oneDNN's kernels use at ``isa`` (16 from avx512_core on)."""
    return 16 if isa in ISA_ORDER and ISA_ORDER.index(isa) >= ISA_ORDER.index("avx512_core") else 8


def config_is_faulty(*, isa: str, dim: int, transposed: bool, kernel: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], groups: int, in_channels: int, dtype: Any, channels_last: bool,
                     training: bool, dilation: Sequence[int] = (), out_channels: int = 0) -> bool:
    """Whether a convolution is in the family oneDNN 3.12 corrupts the heap on (module docstring).

    ``dtype`` is a torch dtype or its name; ``training`` means the weight gradient is computed.
    Dilation and output channels do not matter (a 1x1 kernel has no dilation; every output-channel
    count crashed in the sweep); they are accepted so callers can pass a whole configuration.
    """
    return bool(isa in AFFECTED_ISAS and training and dim == 2 and not transposed and groups == 1
                and all(k == 1 for k in kernel) and all(p == 0 for p in padding) and any(s > 1 for s in stride)
                and in_channels < simd_floats(isa) and str(dtype).replace("torch.", "") == "float32"
                and channels_last)


def strides_like_channels_last(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """torch's (c10's) rule for "this 4-D tensor is channels-last": N, H, W, C ordering of the strides,
    size-1 dimensions ambiguous and NCHW preferred when in doubt (c10/core/MemoryFormat.h,
    is_channels_last_strides_2d). Convolutions choose their layout with it."""
    if len(shape) != 4 or strides[1] == 0:
        return False
    lowest = 0
    for d in (1, 3, 2, 0):
        if shape[d] == 0 or strides[d] < lowest:
            return False
        if d == 0 and lowest == strides[1]:
            return False
        lowest = strides[d] * (shape[d] if shape[d] > 1 else 1)
    return True


def _channels_last(t: torch.Tensor) -> bool:
    return strides_like_channels_last(tuple(t.shape), t.stride())


def node_is_faulty(node: Any, isa: str) -> bool:
    """Whether a ``ConvolutionBackward0`` autograd node's backward would run the faulty kernel."""
    try:
        if node.next_functions[1][0] is None:      # the weight needs no gradient
            return False
        w, x = node._saved_weight, node._saved_input
        if w.device.type != "cpu":
            return False
        return config_is_faulty(isa=isa, dim=w.dim() - 2, transposed=bool(node._saved_transposed),
                                kernel=tuple(w.shape[2:]), stride=tuple(node._saved_stride),
                                padding=tuple(node._saved_padding), groups=int(node._saved_groups),
                                in_channels=int(x.shape[1]), dtype=w.dtype,
                                channels_last=_channels_last(x) or _channels_last(w), training=True)
    except (AttributeError, RuntimeError, IndexError):
        return isa in AFFECTED_ISAS    # a torch that hides the saved values: guard the node to be safe


# --- status ---------------------------------------------------------------------------------------

def _onednn_version() -> str | None:
    import torch  # lazy: torch is heavy

    m = re.search(r"MKL-DNN v([0-9][0-9.]*)", torch.__config__.show())
    return m.group(1) if m else None


def status(refresh: bool = False) -> dict[str, Any]:
    """Whether the guard is active and why (a JSON-ready dict for records and training summaries)."""
    if "status" in _cache and not refresh:
        return {**_cache["status"], "installed": _installed is not None, **_stats}
    _cache.pop("hook_isa", None)
    import torch  # lazy: torch is heavy

    override = os.environ.get(ENV_OVERRIDE, "auto").strip().lower() or "auto"
    cap, var = isa_cap()
    top = machine_isa()
    isa = effective_isa()
    mkldnn = bool(torch.backends.mkldnn.is_available())
    affected = mkldnn and isa in AFFECTED_ISAS
    if override in _OFF:
        active, reason = False, f"{ENV_OVERRIDE}={override}: guard switched off"
    elif override in _FORCE:
        active, reason = True, f"{ENV_OVERRIDE}={override}: guard forced on"
    elif not mkldnn:
        active, reason = False, "torch has no oneDNN (mkldnn) CPU backend"
    elif affected:
        how = f"{var}={os.environ.get(var or '', '')}, CPU {top}" if cap and cap != top else f"CPU {top}"
        active, reason = True, (f"oneDNN runs at {isa} ({how}): the weight gradient of 1x1 strided "
                                f"channels-last float32 convolutions with < {simd_floats(isa)} input channels "
                                "runs on torch's native kernel")
    else:
        active, reason = False, (f"oneDNN runs at {isa or 'no JIT ISA'}: below AVX2 its 1x1 weight gradient is "
                                 "not affected, nothing to avoid")
    st = {"active": active, "reason": reason, "isa": isa, "machine_isa": top, "isa_cap": cap,
          "isa_cap_variable": var, "override": override, "torch": str(torch.__version__), "onednn": _onednn_version()}
    _cache["status"] = st
    return {**st, "installed": _installed is not None, **_stats}


def active() -> bool:
    return bool(status()["active"])


def provenance() -> dict[str, Any]:
    """The part of :func:`status` a record states about CPU torch work (gfvc.devices.device_provenance)."""
    st = status()
    return {k: st[k] for k in ("active", "isa", "reason", "onednn")}


# --- hooks ----------------------------------------------------------------------------------------

_hooked_modules: weakref.WeakSet[Any] = weakref.WeakSet()   # modules guard_model hooked
_local = threading.local()   # mkldnn flags saved by the pre-hooks of this thread's running backward


def _tensors(obj: Any) -> Iterable[Any]:
    import torch  # lazy: torch is heavy

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _saved() -> list[bool]:
    if not hasattr(_local, "saved"):
        _local.saved = []
    return _local.saved


def _mkldnn_off(_grad_outputs: Any) -> None:
    import torch  # lazy: already loaded when a hook runs

    _saved().append(torch._C._get_mkldnn_enabled())
    torch._C._set_mkldnn_enabled(False)


def _mkldnn_back(grad_inputs: Any, _grad_outputs: Any) -> None:
    import torch  # lazy: already loaded when a hook runs

    saved = _saved()
    torch._C._set_mkldnn_enabled(saved.pop() if saved else True)
    # create_graph=True: the double-backward node of this convolution comes from the same configuration
    for g in _tensors(grad_inputs):
        fn = g.grad_fn
        if fn is not None and fn.name().startswith("ConvolutionBackwardBackward") and not fn.metadata.get(_MARK):
            _attach(fn)


def _attach(node: Any) -> None:
    node.metadata[_MARK] = True
    node.register_prehook(_mkldnn_off)
    node.register_hook(_mkldnn_back)
    _stats["guarded_nodes"] += 1


def _restore_after_error() -> None:
    """A backward that raised inside a guarded node skipped its post-hook: switch mkldnn back on.

    Called from forward hooks, which never run inside a convolution's backward."""
    import torch  # lazy: already loaded when a hook runs

    saved = _saved()
    if saved:
        torch._C._set_mkldnn_enabled(saved[0])
        saved.clear()


def guard_output(output: Any, inputs: Any = (), isa: str | None = None) -> int:
    """Attach the mkldnn-off hooks to the faulty convolution nodes between ``inputs`` and ``output``.

    Walks the autograd graph back from ``output``, stopping at the inputs' nodes (they belong to
    earlier modules) and after NODE_LIMIT nodes. Returns the number of nodes guarded.
    """
    import torch  # lazy: already loaded when a hook runs

    _restore_after_error()
    if not torch.is_grad_enabled():
        return 0
    roots = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
    if not roots:
        return 0
    isa = isa or _hook_isa()
    stop = {t.grad_fn for t in _tensors(inputs) if t.grad_fn is not None}
    seen: set[Any] = set()
    stack, guarded = roots, 0
    while stack and len(seen) < NODE_LIMIT:
        node = stack.pop()
        if node in seen or node in stop:
            continue
        seen.add(node)
        if node.name() == "ConvolutionBackward0" and not node.metadata.get(_MARK):
            if node_is_faulty(node, isa):
                _attach(node)
                guarded += 1
            else:
                node.metadata[_MARK] = True
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
    return guarded


def _hook_isa() -> str:
    """The ISA the hooks judge nodes at: the effective one, or (guard forced on an unaffected machine) the
    affected ISA with the wider registers, so the forced guard covers both families."""
    if "hook_isa" not in _cache:
        st = status()
        _cache["hook_isa"] = st["isa"] if st["isa"] in AFFECTED_ISAS else "avx512_core"
    return str(_cache["hook_isa"])


def _owns_conv_weight(module: torch.nn.Module) -> bool:
    return any(p is not None and p.dim() == 4 for p in module._parameters.values())


def _after_forward(module: torch.nn.Module, args: Any, output: Any) -> None:
    if _owns_conv_weight(module):
        guard_output(output, args)


def guard_model(*modules: Any) -> dict[str, Any]:
    """Guard every convolution run by these modules (nn.Modules, or dicts/lists of them) in training.

    A no-op where :func:`status` is inactive. Hooks the submodules that own a 4-D weight (nn.Conv2d
    and modules that call F.conv2d on their own weight alike); idempotent. Returns what a training record
    states: :func:`status` without its process-wide counters, plus ``guarded_modules`` (how many of these
    modules carry the hook).
    """
    import torch  # lazy: torch is heavy

    st = {k: v for k, v in status().items() if k not in ("installed", "guarded_nodes")}
    if not st["active"]:
        return {**st, "guarded_modules": 0}
    stack: list[Any] = list(modules)
    hooked: set[int] = set()
    while stack:
        m = stack.pop()
        if isinstance(m, Mapping):
            stack.extend(m.values())
        elif isinstance(m, (list, tuple)):
            stack.extend(m)
        elif isinstance(m, torch.nn.Module):
            for sub in m.modules():
                if _owns_conv_weight(sub):
                    if sub not in _hooked_modules:
                        sub.register_forward_hook(_after_forward)
                        _hooked_modules.add(sub)
                    hooked.add(id(sub))
    return {**st, "guarded_modules": len(hooked)}


def install() -> dict[str, Any]:
    """Guard every module of this process, present and future (one global forward hook); idempotent.

    A no-op where :func:`status` is inactive. Returns :func:`status`.
    """
    global _installed
    st = status()
    if not st["active"]:
        return st
    import torch  # lazy: torch is heavy

    with _lock:
        if _installed is None:
            _installed = torch.nn.modules.module.register_module_forward_hook(_after_forward)
    return status()


def uninstall() -> None:
    """Remove the global hook of :func:`install` (per-module hooks of :func:`guard_model` stay)."""
    global _installed
    with _lock:
        if _installed is not None:
            _installed.remove()
            _installed = None
