"""Train codecs' tiny test configurations for one step each (child of tests/test_cpu_guard_training.py).

    python tests/train_tiny.py OUT_DIR CODEC [CODEC ...]

Prints ``START CODEC`` before and one JSON line after each codec, so a parent that sees the process die
knows in which codec. CODEC is ``s2d`` or one of the nine baselines. The configurations and data are the
ones the codec's own recipe test uses (tests/baselines/test_CODEC.py, tests/test_s2d_networks.py), so what
passes here is what the default tier trains. Run in a fresh process because oneDNN reads
``ONEDNN_MAX_CPU_ISA`` once, when it first runs.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS / "baselines")]

BASELINES = ("fomm", "mraa", "fv2v", "tpsm", "cfte", "lia", "mttf", "imt", "ihvc")
# image size of each recipe test (the size its tiny configuration trains at)
SIZES = {"fomm": 64, "mraa": 64, "fv2v": 64, "tpsm": 64, "lia": 64, "cfte": 128, "mttf": 128, "imt": 128}


def train_one(codec: str, out: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    from test_s2d_networks import write_tiny_config, write_tiny_data

    if codec == "s2d":
        from s2d_model.train import TrainOptions as S2DOptions
        from s2d_model.train import train as train_s2d

        data = write_tiny_data(out / "data")
        s = train_s2d(S2DOptions(config=write_tiny_config(out), data=data, vertices=data / "vertices",
                                 out=out / "run", steps=1, batch=2, progress=False))
        return {"codec": codec, "steps": s["step"], "cpu_guard": s["cpu_guard"]}
    from model_parts.training import RECIPES, TrainOptions, train

    test = importlib.import_module(f"test_{codec}")
    if codec == "ihvc":
        cfg, data = test.tiny(), test.write_data(out / "data")
    else:
        cfg = test.tiny(SIZES[codec])
        data = write_tiny_data(out / "data", size=SIZES[codec], videos=1, frames=4, vertices=False)
    s = train(RECIPES.get(codec)(cfg), TrainOptions(data=data, out=out / "run", steps=1, batch=2, threads=1,
                                                   progress=False, checkpoint_every=100))
    return {"codec": codec, "steps": s["steps"], "cpu_guard": s["cpu_guard"]}


if __name__ == "__main__":
    for name in sys.argv[2:]:
        print(f"START {name}", flush=True)
        print(json.dumps(train_one(name, Path(sys.argv[1]) / name)), flush=True)
