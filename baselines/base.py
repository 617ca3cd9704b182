"""The generative baselines on the codec template: one base class, one small adapter per model.

Every baseline (FOMM, MRAA, FV2V, TPSM, CFTE, LIA, MTTF, IMT, IHVC) codes
frame 0 as a VVC intra picture and each inter frame as a few dozen numbers
from its analysis network; the decoder drives its generator from the decoded
key frame. :class:`gfvc.generative.GenerativeCodec` does the coding; this
module adds what all baselines share:

* a configuration = the official constructor arguments of each module
  (:class:`BaselineConfig`), embedded in the suite's checkpoints and taken
  from the official config for official files;
* checkpoint choice (``--model CODEC=PATH``, condition ``models:``, demo
  checkpoint; :mod:`gfvc.models`), strict loading with one-line errors
  (:mod:`model_parts.checkpoint`), the file's sha256 as model checksum;
* tensors on the run's device, inference mode, batching, rounding to uint8;
* the decoded key frame made available to the encoder-side analysis (MRAA
  and TPSM send a background affine computed from the key and current frame).

A model adapter subclasses :class:`BaselineCodec` and implements
``official_config``, ``build_modules``, ``features`` and ``render``.
"""
from __future__ import annotations

import abc
import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from baselines import matching
from gfvc import models
from gfvc.devices import resolve_device
from gfvc.errors import ModelMismatch
from gfvc.fileio import read_yaml_mapping
from gfvc.generative import GenerativeCodec
from model_parts import checkpoint as ck

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


@dataclass(frozen=True)
class BaselineConfig:
    """Everything that builds a baseline: official constructor kwargs per module + suite options.

    ``modules`` maps the official module name (``kp_detector``, ``generator``,
    ...) to the keyword arguments of its official constructor; ``options``
    holds the suite's documented choices where the papers are silent (e.g.
    LIA's adaptation to 384 px). ``fingerprint`` identifies the architecture.
    """

    model: str
    image_size: int
    modules: dict[str, dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)
    name: str = "official"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "name": self.name, "image_size": self.image_size,
                "modules": copy.deepcopy(self.modules), "options": copy.deepcopy(self.options)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineConfig:
        try:
            return cls(model=str(d["model"]), image_size=int(d["image_size"]), modules=dict(d["modules"]),
                       options=dict(d.get("options") or {}), name=str(d.get("name", "custom")))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelMismatch(f"baseline configuration is incomplete ({type(e).__name__}: {e}); "
                                "expected model, image_size, modules") from None

    def fingerprint(self) -> str:
        blob = json.dumps({k: v for k, v in self.to_dict().items() if k != "name"}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_image_size(self, size: int) -> BaselineConfig:
        d = self.to_dict()
        d["image_size"] = int(size)
        return BaselineConfig.from_dict(d)


def build_from_table(model: str, constructors: Mapping[str, Callable[..., nn.Module]], name: str,
                     kwargs: Mapping[str, Any]) -> nn.Module:
    """One module of ``model`` from its official constructor kwargs: ``constructors[name](**kwargs)``.

    The adapters' ``build_module`` functions share it so that each only lists
    its {official module name: constructor} table: the kwargs are deep-copied
    (the configuration is never aliased by a module) and an unknown name is one
    ModelMismatch line, ``"<MODEL> has no module 'x' (a, b, c)"``, naming the
    table's modules in order.
    """
    kw = copy.deepcopy(dict(kwargs))
    if name not in constructors:
        raise ModelMismatch(f"{model} has no module {name!r} ({', '.join(constructors)})")
    return constructors[name](**kw)


def modules_from_common_params(model_params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Official FOMM-style ``model_params`` (config/vox-256.yaml) -> {module: constructor kwargs}.

    As the official run.py of FOMM and CFTE builds them: ``common_params``
    merged into ``kp_detector_params``, ``generator_params`` and (when present)
    ``discriminator_params``. Shared by :mod:`baselines.fomm` and
    :mod:`baselines.cfte`, whose official configs have this layout (each keeps
    the name ``modules_from_model_params``).
    """
    common = dict(model_params["common_params"])
    out = {"kp_detector": {**model_params["kp_detector_params"], **common},
           "generator": {**model_params["generator_params"], **common}}
    if "discriminator_params" in model_params:
        out["discriminator"] = {**model_params["discriminator_params"], **common}
    return copy.deepcopy(out)


def config_from_yaml_sections(model: str, data: Mapping[str, Any],
                               modules_of: Callable[[Mapping[str, Any]], dict[str, dict[str, Any]]],
                               size_of: Callable[[Mapping[str, Any]], int], expected: str) -> BaselineConfig:
    """An official repository's YAML config (``model_params`` + ``dataset_params``) as a configuration.

    ``modules_of`` maps ``model_params`` to constructor kwargs per module, ``size_of`` reads the frame
    size from the whole file; any missing or malformed section is one ModelMismatch naming what a
    config of this model must have (``expected``), never a KeyError from deep inside.
    """
    try:
        mods = modules_of(data["model_params"])
        size = int(size_of(data))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise ModelMismatch(f"not a {expected} config: {type(e).__name__} {e}") from None
    return BaselineConfig(model=model, image_size=size, modules=mods, name="official-yaml")


class BaselineCodec(GenerativeCodec):
    """Base of the baseline codecs (see module docstring)."""

    # Official module names needed at inference, in checkpoint order (e.g. ("kp_detector", "generator")).
    inference_modules: ClassVar[tuple[str, ...]] = ()
    # Frames per render() call (bounds memory; results do not depend on it).
    synth_batch: ClassVar[int] = 4
    # Environment variable naming a checkpoint (optional, lowest precedence before the demo file).
    checkpoint_env_var: ClassVar[str | None] = None
    # The checkpoint is chosen by gfvc.models.choose (`--model CODEC=PATH`, condition models:).
    takes_checkpoint: ClassVar[bool] = True

    def __init__(self, condition: Any, env: Any = None) -> None:
        super().__init__(condition, env)

        self.choice = models.choose(self.name, condition, self.env, self.default_checkpoint(),
                                    self.checkpoint_env_var)
        self._ckpt: ck.CheckpointFile | None = None
        self._cfg: BaselineConfig | None = None
        self._cfg_how = ""
        self._sha: str | None = None
        self.nets: dict[str, Any] | None = None
        self._key_tensor: torch.Tensor | None = None
        self._device: str | None = None

    # ------------------------------------------------------------ model (subclass)
    @classmethod
    @abc.abstractmethod
    def official_config(cls) -> BaselineConfig:
        """Configuration of the official released checkpoint (used for files without embedded config)."""

    @classmethod
    @abc.abstractmethod
    def build_modules(cls, cfg: BaselineConfig) -> dict[str, Any]:
        """Construct the inference modules (official names) from ``cfg`` (random weights)."""

    @abc.abstractmethod
    def features(self, frames: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """frames (N, 3, H, W) in [0, 1] and the decoded key frame (1, 3, H, W) -> (N, feature_dim)."""

    @abc.abstractmethod
    def render(self, key: torch.Tensor, key_features: torch.Tensor, features: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Key frame (1, 3, H, W), its features (D,), reconstructed features (N, D)
        -> frames (N, 3, H, W) in [0, 1] and extras {name: (N, ...)}."""

    @classmethod
    def named_configs(cls) -> dict[str, BaselineConfig]:
        """Configurations selectable by name (``gfvc train CODEC --config NAME``).

        At least ``official`` (the released checkpoint's) and ``demo`` (small
        widths at 128x128 for the CPU demo checkpoint).
        """
        return {"official": cls.official_config()}

    @classmethod
    def values_per_frame(cls, cfg: BaselineConfig) -> int:
        """Values sent per inter frame under ``cfg`` (default ``feature_dim``; CFTE's depends on the size)."""
        return int(cls.feature_dim)

    @classmethod
    def parameter_counts(cls, cfg: BaselineConfig) -> dict[str, int]:
        """Parameters per module built from ``cfg``, counted on the ``meta`` device (no memory, no time)."""
        import torch

        try:
            with torch.device("meta"):
                mods = cls.build_modules(cfg)
        except (NotImplementedError, RuntimeError):  # a constructor that cannot run on meta: build for real
            mods = cls.build_modules(cfg)
        return {name: int(sum(p.numel() for p in m.parameters())) for name, m in mods.items()}

    @classmethod
    def config_from_official_yaml(cls, data: dict[str, Any]) -> BaselineConfig:
        """Build the configuration from the official repository's YAML config (``model_params``...).

        Adapters override this where their official config files differ from
        ``official_config``; the default refuses with the fix.
        """
        raise ModelMismatch(f"codec {cls.name!r}: reading official YAML configs is not supported; "
                            "use a checkpoint written by `gfvc train` (it embeds its configuration)")

    # ------------------------------------------------------------ identity
    @classmethod
    def default_checkpoint(cls) -> Path | None:
        p = CHECKPOINT_DIR / f"{cls.name}-demo.pt"
        return p if p.is_file() else None

    def _checkpoint(self) -> ck.CheckpointFile:
        if self._ckpt is None:
            self._sha = self.choice.verify()
            self._ckpt = ck.read_checkpoint(self.choice.path, self.name, self.inference_modules)
        return self._ckpt

    def config(self) -> BaselineConfig:
        """The architecture of the chosen checkpoint, from (first found): the configuration embedded by
        the suite, the official-config YAML or named configuration given for it (condition models:
        entry, ``--model-config``), the named configuration of the registry entry the file is installed
        as or whose sha256 it has, the one known configuration its keys and shapes fit
        (:mod:`baselines.matching`), else the codec's official configuration (whose strict load then
        names the keys that differ)."""
        if self._cfg is None:
            st = self._checkpoint()
            if st.meta.get("config"):
                cfg, how = BaselineConfig.from_dict(st.meta["config"]), "embedded"
                self._check_installed_config(cfg)
            elif self.choice.config is not None:
                cfg = self.config_from_official_yaml(read_yaml_mapping(self.choice.config, f"{self.name} config"))
                how = f"yaml:{self.choice.config.name}"
            else:
                cfg, how = self._registry_config()
            if cfg.model != self.name:
                raise ModelMismatch(f"{self.choice.path}: configuration is for model {cfg.model!r}, not {self.name!r}")
            self._cfg, self._cfg_how = cfg, how
        return self._cfg

    def _check_installed_config(self, cfg: BaselineConfig) -> None:
        """A file installed as a registry checkpoint must be that entry's architecture and size."""
        if not self.choice.source.startswith("installed:") or not self.choice.config_name:
            return
        want = self.named_configs().get(self.choice.config_name)
        if want is not None and (cfg.fingerprint() != want.fingerprint() or cfg.image_size != want.image_size):
            entry = self.choice.source.split(":", 1)[1]
            raise ModelMismatch(f"{self.choice.path} is installed as registry checkpoint {entry} ({want.name}, "
                                f"{want.image_size} px) but holds configuration {cfg.name!r} at {cfg.image_size} px: "
                                f"not that file; remove it and install the right one (`gfvc models status`)")

    def _registry_config(self) -> tuple[BaselineConfig, str]:
        entry = models.identify(self.model_checksum())
        name = self.choice.config_name or (entry.config if entry else None)
        if name:
            configs = self.named_configs()
            if name not in configs:
                who = ("the registry says this checkpoint needs" if not self.choice.config_name or
                       self.choice.source.startswith("installed:") else "you asked for")
                raise ModelMismatch(f"{self.choice.path}: {who} configuration {name!r}, which codec {self.name!r} "
                                    f"does not provide (it has {', '.join(sorted(configs))}); give the official "
                                    "YAML as `config:` in the condition's models: entry or --model-config "
                                    f"{self.name}=FILE.yaml")
            src = (f"registry:{entry.name}" if entry is not None and not self.choice.config_name
                   else f"named:{name}")
            return configs[name], src
        size = self.condition.width if self.condition.width == self.condition.height else None
        cfg, how = matching.choose_config(self.name, self._checkpoint().shapes, size, str(self.choice.path))
        if cfg is None:
            return self.official_config(), "official (the file fits none of the known configurations exactly)"
        return cfg, how

    def registry_entry(self) -> Any:
        """The model-registry entry of the chosen file (by sha256), or None."""
        return models.identify(self.model_checksum())

    @property
    def resolution(self) -> tuple[int, int]:  # type: ignore[override]
        s = self.config().image_size
        return (s, s)

    def model_id(self) -> str:
        meta = self._checkpoint().meta
        if meta.get("model_id"):
            return str(meta["model_id"])
        entry = self.registry_entry()
        if entry is not None:
            return entry.name
        if meta.get("training"):  # trained by the suite, exported without an id: never a shipped id's twin
            return f"{self.name}-{self.config().name}-{self.model_checksum()[:8]}"
        return f"{self.name}-{self.config().name}"

    def model_checksum(self) -> str:
        if self._sha is None:
            self._checkpoint()
        assert self._sha is not None
        return self._sha

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = resolve_device(getattr(self.env, "device", "cpu") or "cpu")
        return self._device

    def check(self) -> None:
        self.model_checksum()  # missing file / pinned-hash mismatch: the chooser's own error, first
        super().check()
        self.load()
        w, h = self.resolution
        if (self.condition.width, self.condition.height) != (w, h):
            cw, chh = self.condition.width, self.condition.height
            raise ModelMismatch(
                f"codec {self.name!r}: model {self.model_id()!r} ({self.choice.path.name}, from {self.choice.source}) "
                f"works at {w}x{h} but condition {self.condition.name!r} is {cw}x{chh}: "
                + models.fix_for_size(self.name, cw if cw == chh else None))

    def load(self) -> None:
        if self.nets is not None:
            return
        cfg = self.config()
        st = self._checkpoint()
        nets = self.build_modules(cfg)
        for name in self.inference_modules:
            try:
                ck.load_strict(nets[name], ck.as_float32(st.modules[name]), model=self.name, name=name,
                               source=str(self.choice.path))
            except ModelMismatch as e:
                other = [m for m in st.looks_like if m != self.name]
                if other:
                    raise ModelMismatch(f"{e}; the file looks like a {' or '.join(other)} checkpoint") from None
                if self._cfg_how.startswith("official (the file fits none"):
                    known = ", ".join(n for _, names, _ in matching.known_configs(self.name) for n in names)
                    raise ModelMismatch(f"{e}; its keys and shapes fit none of the known {self.name} configurations "
                                        f"({known}): pass its official YAML with --model-config {self.name}=FILE.yaml "
                                        "(or config: in the condition's models: entry)") from None
                mine = f"the file looks like a {self.name} checkpoint, but " if self.name in st.looks_like else ""
                raise ModelMismatch(f"{e}; {mine}its tensors do not fit configuration {cfg.name!r} (from "
                                    f"{self._cfg_how}): a damaged or edited file, or the wrong configuration "
                                    "given for it") from None
            nets[name].to(self.device).eval()
        self.nets = nets

    # ------------------------------------------------------------ numpy <-> torch
    def _tensor(self, frames: np.ndarray) -> torch.Tensor:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return t.permute(0, 3, 1, 2).float().div_(255.0)

    @staticmethod
    def _uint8(x: torch.Tensor) -> np.ndarray:
        import torch

        return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def _key_features(self, key: np.ndarray) -> np.ndarray:
        self.load()
        self._key_tensor = self._tensor(key[None])
        return self._features(key[None])[0]

    def analyse(self, frames: np.ndarray) -> np.ndarray:
        import torch

        self.load()
        if self._key_tensor is None:
            raise ModelMismatch(f"codec {self.name!r}: analyse() called before the key frame was analysed")
        with torch.inference_mode():
            f = self.features(self._tensor(frames), self._key_tensor)
        return f.reshape(frames.shape[0], -1).float().cpu().numpy()

    def synthesise(self, key_frame: np.ndarray, key_features: np.ndarray, features: np.ndarray
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        import torch

        self.load()
        out: list[np.ndarray] = []
        extras: dict[str, list[np.ndarray]] = {}
        with torch.inference_mode():
            key = self._tensor(key_frame[None])
            kf = torch.from_numpy(np.asarray(key_features, np.float32)).to(self.device)
            feats = torch.from_numpy(np.asarray(features, np.float32)).to(self.device)
            for i in range(0, feats.shape[0], self.synth_batch):
                frames, ex = self.render(key, kf, feats[i:i + self.synth_batch])
                out.append(self._uint8(frames))
                for k, v in ex.items():
                    extras.setdefault(k, []).append(v.float().cpu().numpy())
        return np.concatenate(out), {k: np.concatenate(v) for k, v in extras.items()}

    # ------------------------------------------------------------ provenance
    def provenance(self) -> dict[str, Any]:
        """Adds the checkpoint's identity (sha256, registry name, configuration, training record).

        ``checkpoint_path`` and ``checkpoint_source`` say where the file was and
        how it was chosen, ``checkpoint_verification`` what vouches for it
        (:func:`gfvc.models.verification`: ``unverified`` for a registry file
        without a public hash) and ``config_from`` why this configuration; they
        describe this machine's choice, not the result, and are left out of the job key
        (suite.runner.jobs.identity_provenance), so the same file chosen two ways gives
        the same key.
        """
        p = super().provenance()
        cfg = self.config()
        meta = self._checkpoint().meta
        entry = self.registry_entry()
        state, why = models.verification(self.choice, self.model_checksum())
        p.update({"checkpoint_path": str(self.choice.path), "checkpoint_source": self.choice.source,
                  "checkpoint_verification": state, "checkpoint_verification_note": why,
                  "config_from": self._cfg_how,
                  "checkpoint_sha256": self.model_checksum(),
                  "checkpoint_registry": entry.name if entry is not None else None,
                  "config": cfg.to_dict(), "architecture": cfg.fingerprint(), "image_size": cfg.image_size,
                  "values_per_frame": self.values_per_frame(cfg), "training": meta.get("training")})
        return p
