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

quant_scale = 64 was chosen by measurement on the demo clip (docs/s2d.md):
the keypoint-stream rate vs the synthesis error against unquantised
keypoints.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.codec import CODECS, Decoded
from gfvc.errors import ModelMismatch, NotAvailable
from gfvc.generative import GenerativeCodec
from s2d_model import DEMO_CHECKPOINT

SYNTH_BATCH = 8


def checkpoint_header(path: Path) -> dict[str, Any]:
    """Config and metadata of a checkpoint without building the model."""
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
    takes_checkpoint = True
    checkpoint_env_var = "GFVC_S2D_CHECKPOINT"

    def __init__(self, condition, env=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(condition, env)
        from gfvc import models

        extra = self.env.extra or {}
        self.choice = models.choose(self.name, condition, self.env, DEMO_CHECKPOINT, self.checkpoint_env_var,
                                    extra_key="s2d_checkpoint")
        self.checkpoint = Path(self.choice.path)
        self.config_name = (extra.get("s2d_config") or os.environ.get("GFVC_S2D_CONFIG")
                            or (str(self.choice.config) if self.choice.config else None))
        self.device = str(extra.get("s2d_device", "cpu"))
        self._state: dict[str, Any] | None = None
        self._model = None
        self._cfg = None
        self._sha: str | None = None

    # --------------------------------------------------------------- identity
    def _ck(self) -> dict[str, Any]:
        if self._state is None:
            if self.checkpoint.is_file():
                self.model_checksum()  # a pinned sha256 (condition models:) is enforced before the file is read
            self._state = checkpoint_header(self.checkpoint)
        return self._state

    def _config(self):  # type: ignore[no-untyped-def]
        if self._cfg is None:
            from s2d_model.config import config_from_dict, load_config

            st = self._ck()
            cfg = config_from_dict(st["config"], name=st["config"].get("name", "checkpoint"))
            if self.config_name:
                want = load_config(self.config_name)
                if want.fingerprint() != cfg.fingerprint():
                    raise ModelMismatch(
                        f"{self.checkpoint} was trained with s2d config {cfg.name!r} (architecture {cfg.fingerprint()}, "
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
        return str(meta.get("model_id") or f"s2d-{self._config().name}")

    def model_checksum(self) -> str:
        if self._sha is None:
            if not self.checkpoint.is_file():
                self._ck()  # raises NotAvailable with the fix
            self._sha = self.choice.verify()
        return self._sha

    def check(self) -> None:
        self.load()

    def load(self) -> None:
        if self._model is not None:
            return
        from s2d_model.train import load_model

        cfg = self._config()
        model, _ = load_model(self.checkpoint, cfg, device=self.device)
        self._model = model

    # ------------------------------------------------------------------ model
    def _to_tensor(self, frames: np.ndarray):  # type: ignore[no-untyped-def]
        import torch

        return torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0

    def analyse(self, frames: np.ndarray) -> np.ndarray:
        import torch

        self.load()
        with torch.inference_mode():
            kp = self._model.detect(self._to_tensor(frames))
        return kp.reshape(frames.shape[0], -1).cpu().numpy().astype(np.float32)

    def _render(self, key_frame: np.ndarray, key_features: np.ndarray, features: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        self.load()
        k = self._config().kp.num_kp
        frames, verts = [], []
        with torch.inference_mode():
            tex = self._model.texture(self._to_tensor(key_frame[None]))
            kp_s = torch.from_numpy(np.asarray(key_features, np.float32).reshape(1, k, 3)).to(self.device)
            drv = torch.from_numpy(np.asarray(features, np.float32).reshape(-1, k, 3)).to(self.device)
            for i in range(0, drv.shape[0], SYNTH_BATCH):
                out = self._model.synthesise(tex, kp_s, drv[i:i + SYNTH_BATCH])
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

    def views(self, decoded: Decoded) -> dict[str, np.ndarray]:
        """The decoded frames with the predicted vertices drawn over them (for inspection)."""
        from s2d_model.overlay import draw_vertices

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
                  "training": {k: meta.get(k) for k in ("step", "perceptual", "vertex_targets", "wall_seconds", "dtype")}})
        return p
