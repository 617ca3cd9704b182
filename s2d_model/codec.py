"""The ``s2d`` codec: Sparse2Dense on the generative-codec template.

Per inter frame the encoder sends the 15 3D keypoints of the keypoint
detector (45 values), DPCM-coded against the previous reconstruction and
quantised with ``q = round(residual * quant_scale)`` by
:class:`gfvc.generative.GenerativeCodec`. The decoder builds the texture
volume of the decoded key frame once, detects the key frame's keypoints with
the same detector, and synthesises every inter frame plus its 10475 x 2
vertices (``Decoded.extras["vertices"]``, (T, 10475, 2), normalised image
coordinates; row 0 is the key frame).

Checkpoint: chosen like every generative codec's (:func:`gfvc.models.choose`):
``--model s2d=PATH`` (``Environment.models``; ``env.extra["s2d_checkpoint"]``
is its programmatic equivalent), the condition's ``models:`` entry,
``$GFVC_S2D_CHECKPOINT``, else the committed CPU demo checkpoint
(s2d_model/checkpoints/s2d-small-demo.pt, 128x128). ``env.extra["s2d_config"]``
/ ``$GFVC_S2D_CONFIG`` (or the ``config`` of the models: entry) optionally
names the config the checkpoint must match. The checkpoint's sha256 is the
model checksum carried in every bitstream and recorded in the provenance.
The model runs on ``Environment.device`` (``--device``; gfvc.devices.resolve_device).

quant_scale = 64 was chosen by measurement on the demo clip (docs/s2d.md):
the keypoint-stream rate vs the synthesis error against unquantised
keypoints.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gfvc import models
from gfvc.codec import CODECS, Decoded, Environment
from gfvc.devices import resolve_device
from gfvc.errors import ModelMismatch, NotAvailable
from gfvc.generative import GenerativeCodec
from gfvc.timing import ModuleTimer
from model_parts.overlay import draw_vertices
from s2d_model import DEMO_CHECKPOINT
from s2d_model.config import config_from_dict, load_config

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from gfvc.timing import ModuleTimer
    from s2d_model.config import S2DConfig
    from s2d_model.networks import Sparse2Dense
    from test_conditions import Condition

SYNTH_BATCH = 8


def checkpoint_header(path: Path) -> dict[str, Any]:
    """Config and metadata of a checkpoint without building the model."""
    # lazy: loads torch (start-up time of the modules that import this one)
    from s2d_model.train import MODEL_FORMAT, TRAIN_FORMAT, read_checkpoint

    if not path.is_file():
        raise NotAvailable(
            f"Sparse2Dense checkpoint {path} not found: restore s2d_model/checkpoints/ from the repository, or train "
            "one (`gfvc train s2d --config small --data DIR --out OUT --export CKPT`) and point "
            "$GFVC_S2D_CHECKPOINT (or Environment.extra['s2d_checkpoint']) at it")
    st = read_checkpoint(path)
    if not isinstance(st, dict) or st.get("format") not in (MODEL_FORMAT, TRAIN_FORMAT) or "config" not in st:
        raise ModelMismatch(f"{path}: not a Sparse2Dense checkpoint; export one with `gfvc train s2d ... --export`")
    return st


@CODECS.register()
class S2DCodec(GenerativeCodec):
    name = "s2d"
    description = ("Sparse2Dense: VVC key frame + 15 3D keypoints (45 values) per inter frame; "
                   "decodes frames and 10475x2 body vertices")
    feature_dim = 45
    quant_scale = 64.0
    vertex_extra = "vertices"  # measured against the sequence's reference vertices (metrics/vertices.py)
    takes_checkpoint = True
    checkpoint_env_var = "GFVC_S2D_CHECKPOINT"

    def __init__(self, condition: Condition, env: Environment | None = None) -> None:
        super().__init__(condition, env)

        extra = self.env.extra or {}
        self.choice = models.choose(self.name, condition, self.env, DEMO_CHECKPOINT, self.checkpoint_env_var,
                                    extra_key="s2d_checkpoint")
        self.checkpoint = Path(self.choice.path)
        self.config_name = (extra.get("s2d_config") or os.environ.get("GFVC_S2D_CONFIG")
                            or (str(self.choice.config) if self.choice.config else None))
        self._device: str | None = None
        self._state: dict[str, Any] | None = None
        self._model: Sparse2Dense | None = None
        self._cfg: S2DConfig | None = None
        self._sha: str | None = None
        self._vertex_timer: ModuleTimer | None = None  # times the vertex head in every decode (decoder_report)

    @property
    def device(self) -> str:
        """The torch device of the model: Environment.device (auto|cpu|cuda|cuda:N), resolved once."""
        if self._device is None:
            self._device = resolve_device(self.env.device or "auto")
        return self._device

    @classmethod
    def benchmark_instance(cls, condition: Condition, env: Environment, size: int,
                           config: str = "reference") -> S2DCodec:
        """A codec of the named architecture at size x size with RANDOM weights, for cost benchmarks only.

        (benchmarks/ctc_cost_model.py; speed does not depend on the weight values.)
        """
        # lazy: loads torch (start-up time of the modules that import this one)
        from s2d_model.networks import Sparse2Dense

        d = load_config(config).to_dict()
        d["image_size"] = int(size)
        c = cls(condition, env)
        c._cfg = config_from_dict(d, name=f"{config}@{size}")
        c._model = Sparse2Dense(c._cfg).to(c.device).eval()
        c._sha = "0" * 64
        return c

    # --------------------------------------------------------------- identity
    def _ck(self) -> dict[str, Any]:
        if self._state is None:
            if self.checkpoint.is_file():
                self.model_checksum()  # a pinned sha256 (condition models:) is enforced before the file is read
            elif self.choice.source != "default":
                self.choice.verify()  # missing: say where the path came from (--model, condition, $ENV)
            self._state = checkpoint_header(self.checkpoint)
        return self._state

    def _config(self) -> S2DConfig:
        if self._cfg is None:
            st = self._ck()
            cfg = config_from_dict(st["config"], name=st["config"].get("name", "checkpoint"))
            if self.config_name:
                want = load_config(self.config_name)
                if want.fingerprint() != cfg.fingerprint():
                    raise ModelMismatch(
                        f"{self.checkpoint} was trained with s2d config {cfg.name!r} "
                        f"(architecture {cfg.fingerprint()}, "
                        f"{cfg.image_size}px) but config {want.name!r} (architecture {want.fingerprint()}, "
                        f"{want.image_size}px) was asked: drop s2d_config, set it to {cfg.name!r}, or use a "
                        f"checkpoint trained with {want.name!r}")
            if cfg.feature_dim != self.feature_dim:
                raise ModelMismatch(f"{self.checkpoint}: {cfg.kp.num_kp} keypoints give {cfg.feature_dim} values per "
                                    f"frame, the s2d codec sends {self.feature_dim} (15 x 3)")
            self._cfg = cfg
        return self._cfg

    @property
    def resolution(self) -> tuple[int, int]:  # type: ignore[override]
        s = self._config().image_size
        return (s, s)

    def model_id(self) -> str:
        meta = self._ck().get("meta") or {}
        if meta.get("model_id"):
            return str(meta["model_id"])
        if meta.get("step") is not None:  # trained, exported without an id: never a shipped id's twin
            return f"s2d-{self._config().name}-{self.model_checksum()[:8]}"
        return f"s2d-{self._config().name}"

    def model_checksum(self) -> str:
        if self._sha is None:
            if not self.checkpoint.is_file():
                self._ck()  # raises NotAvailable with the fix
            self._sha = self.choice.verify()
        return self._sha

    def check(self) -> None:
        """Checkpoint loads and its resolution is the condition's: fail once, before any job."""
        self.load()
        w, h = self.resolution
        c = self.condition
        if (c.width, c.height) != (w, h):
            raise ModelMismatch(
                f"codec 's2d': checkpoint {self.checkpoint.name} (model {self.model_id()!r}) works at {w}x{h} but "
                f"condition {c.name!r} is {c.width}x{c.height}: point $GFVC_S2D_CHECKPOINT at a checkpoint trained "
                f"at {c.width}x{c.height} (docs/s2d.md), or run a condition at {w}x{h} (e.g. demo)")

    def load(self) -> None:
        if self._model is not None:
            return
        # lazy: loads torch (start-up time of the modules that import this one)
        from s2d_model.train import load_model

        cfg = self._config()
        model, _ = load_model(self.checkpoint, cfg, device=self.device)
        self._model = model

        self._vertex_timer = ModuleTimer(model.vertex_head, "vertex_head")

    # ------------------------------------------------------------------ model
    def _net(self) -> Sparse2Dense:
        self.load()
        assert self._model is not None
        return self._model

    def _to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0

    def analyse(self, frames: np.ndarray) -> np.ndarray:
        import torch

        net = self._net()
        with torch.inference_mode():
            kp = net.detect(self._to_tensor(frames))
        return kp.reshape(frames.shape[0], -1).cpu().numpy().astype(np.float32)

    def _render(self, key_frame: np.ndarray, key_features: np.ndarray, features: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        net = self._net()
        k = self._config().kp.num_kp
        frames, verts = [], []
        with torch.inference_mode():
            tex = net.texture(self._to_tensor(key_frame[None]))
            kp_s = torch.from_numpy(np.asarray(key_features, np.float32).reshape(1, k, 3)).to(self.device)
            drv = torch.from_numpy(np.asarray(features, np.float32).reshape(-1, k, 3)).to(self.device)
            for i in range(0, drv.shape[0], SYNTH_BATCH):
                out = net.synthesise(tex, kp_s, drv[i:i + SYNTH_BATCH])
                img = (out["prediction"].clamp(0, 1) * 255.0).round().to(torch.uint8)
                frames.append(img.permute(0, 2, 3, 1).cpu().numpy())
                verts.append(out["vertices"].float().cpu().numpy())
        return np.concatenate(frames), np.concatenate(verts).astype(np.float32)

    def synthesise(self, key_frame: np.ndarray, key_features: np.ndarray, features: np.ndarray
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        frames, verts = self._render(key_frame, key_features, features)
        return frames, {"vertices": verts}

    def key_extras(self, key_frame: np.ndarray, key_features: np.ndarray) -> dict[str, np.ndarray]:
        """Vertices of the key frame: the generator driven by the key frame's own keypoints."""
        _, verts = self._render(key_frame, key_features, np.asarray(key_features)[None])
        return {"vertices": verts}

    def decode(self, bitstream: Path, workdir: Path) -> Decoded:
        if self._vertex_timer is not None:
            self._vertex_timer.reset()
        return super().decode(bitstream, workdir)

    def decoder_report(self) -> dict[str, Any]:
        """Vertex head time of the last decode (key frame + inter frames, batches of <= 8) and its device."""
        return self._vertex_timer.report() if self._vertex_timer is not None else {}

    def views(self, decoded: Decoded) -> dict[str, np.ndarray]:
        """The decoded frames with the predicted vertices drawn over them (for inspection)."""
        if "vertices" not in decoded.extras:
            return {}
        return {"vertices_overlay": draw_vertices(decoded.frames, decoded.extras["vertices"])}

    def provenance(self) -> dict[str, Any]:
        p = super().provenance()
        st = self._ck()
        cfg = self._config()
        meta = dict(st.get("meta") or {})
        # checkpoint_path/_source are machine-local (left out of job keys); the sha256 is the identity
        p.update({"checkpoint_path": str(self.checkpoint), "checkpoint_source": self.choice.source,
                  "checkpoint_sha256": self.model_checksum(), "config": cfg.name, "architecture": cfg.fingerprint(),
                  "image_size": cfg.image_size,
                  "training": {k: meta.get(k) for k in ("step", "perceptual", "vertex_targets", "wall_seconds",
                                                        "dtype", "init")}})
        return p
