"""Training on CUDA: fp16 with a grad scaler, bf16, resume, and weights that open on a CPU.

Skipped without a GPU; `scripts/cuda_check.sh` runs them on a GPU machine.
"""

import json
import numpy as np
import pytest
import torch

from esrforge.cli import main
from esrforge.images import read_image, write_image
from esrforge.train.loop import train
from tests.conftest import photo_like
from tests.train.test_loop import CONFIGS, interrupt_at, tiny_overrides

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if '"val"' not in line]


@pytest.mark.parametrize(
    ("config", "precision"),
    [("esrgan_gan_x4", "fp16"), ("esrgan_gan_x4", "bf16"), ("esrgan_gan_x4", "fp32"),
     ("realesrgan_x4", "fp16")],  # the U-Net's spectral norm under fp16 autocast
)
def test_gan_stage_trains_on_cuda(workspace, tmp_path, config, precision):
    cfg = CONFIGS / f"{config}.yml"
    o = tiny_overrides("g", workspace, cfg, iterations=4) + ["device=cuda", f"precision={precision}"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    assert torch.backends.cudnn.benchmark is True  # cuDNN's autotuner for the fixed crop size
    run = tmp_path / "g"
    state = torch.load(run / "training_states" / "4.state", map_location="cpu", weights_only=True)
    assert (state["scaler"] is not None) == (precision == "fp16")
    if precision == "fp16":
        assert state["scaler"]["scale"] > 0
    log = _log(run)
    assert [r["iter"] for r in log] == [1, 2, 3, 4]
    assert all(np.isfinite(r["pixel"]) and np.isfinite(r["gan_d"]) for r in log)
    # The weights trained on the GPU open on the CPU, in the upscaler.
    write_image(tmp_path / "in.png", photo_like(12, 10))
    out = tmp_path / "up.png"
    args = ["upscale", str(tmp_path / "in.png"), "-o", str(out), "-m", str(run / "models" / "net_g_latest.safetensors")]
    assert main(args + ["--device", "cpu", "-q"]) == 0
    assert read_image(out).shape == (48, 40, 3)


def test_interrupted_cuda_run_resumes_to_the_end(workspace, tmp_path):
    cfg = CONFIGS / "esrgan_gan_x4.yml"
    o = tiny_overrides("r", workspace, cfg, iterations=6) + ["device=cuda", "precision=fp16", "train.checkpoint_every=100"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True, on_iteration=interrupt_at(3)) == 130
    assert (tmp_path / "r" / "training_states" / "3.state").exists()
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True, resume=True) == 0
    log = _log(tmp_path / "r")
    assert [r["iter"] for r in log] == [1, 2, 3, 4, 5, 6]
    state = torch.load(tmp_path / "r" / "training_states" / "6.state", map_location="cpu", weights_only=True)
    assert state["scaler"]["scale"] > 0 and state["rng_cuda"] is not None
