"""scripts/train_bundled.py: a bundled model built in stages fine-tunes each stage's final weights."""

import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from esrforge.cli import main as cli
from esrforge.images import write_image
from esrforge.modelio import BUNDLED
from esrforge.train.config import load_config
from tests.conftest import photo_like

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
import train_bundled  # noqa: E402

ROOT = Path(__file__).parents[2]


def _tiny_config(path: Path, name: str, hr: Path, **extra) -> Path:
    cfg = {
        "name": name, "scale": 4, "seed": 0, "device": "cpu", "precision": "fp32",
        "data": {"train": {"hr": [str(hr)], "degradation": "bicubic", "hr_size": 32, "batch_size": 2, "workers": 0}},
        "generator": {"arch": "compact", "num_feat": 4, "num_conv": 1, "activation": "prelu"},
        "losses": {"pixel": {"type": "l1", "weight": 1.0}},
        "optim": {"generator": {"type": "adam", "lr": 1.0e-3}},
        "train": {"iterations": 2, "ema": None, "checkpoint_every": 2, "log_every": 1},
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_later_stage_fine_tunes_the_earlier_one_which_is_not_trained_twice(tmp_path, capsys):
    for i in range(2):
        write_image(tmp_path / "hr" / f"{i}.png", photo_like(40, 40, seed=i))
    runs = tmp_path / "runs"
    first = _tiny_config(tmp_path / "a.yml", "stage_a", tmp_path / "hr")
    # The committed name points at the default runs folder; the script points it at this one.
    second = _tiny_config(tmp_path / "b.yml", "stage_b", tmp_path / "hr",
                          pretrain={"generator": "runs/stage_a/models/net_g_latest.safetensors"})

    rc, out_a, ran = train_bundled.train_stage(first, runs, None, last=False, resume=False, cli=cli)
    assert (rc, ran) == (0, True) and out_a == runs / "stage_a" / "models" / "net_g_latest.safetensors"
    weights_a = load_file(out_a)
    rc, out_b, ran = train_bundled.train_stage(second, runs, out_a, last=True, resume=False, cli=cli)
    assert (rc, ran) == (0, True)
    assert f"pretrain generator: loaded {out_a}" in capsys.readouterr().out
    # Stage b started from stage a's weights: 2 Adam steps of lr 1e-3 move each weight <= 2e-3.
    weights_b = load_file(out_b)
    assert all(torch.allclose(weights_a[k], weights_b[k], atol=2.5e-3) for k in weights_a)
    assert any(not torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    # Rebuilding: the finished earlier stage is kept, not retrained (its files stay as they were).
    mtime = out_a.stat().st_mtime_ns
    calls = []
    rc, out, ran = train_bundled.train_stage(first, runs, None, last=False, resume=False, cli=calls.append)
    assert (rc, out, ran, calls) == (0, out_a, False, []) and out_a.stat().st_mtime_ns == mtime


def test_resume_is_passed_only_to_a_stage_that_has_a_state(tmp_path):
    cfg = _tiny_config(tmp_path / "a.yml", "fresh", tmp_path / "hr")
    calls = []
    train_bundled.train_stage(cfg, tmp_path / "runs", None, last=True, resume=True, cli=lambda c: calls.append(c) or 0)
    assert calls == [["train", str(cfg), "--runs-dir", str(tmp_path / "runs")]]


def test_every_stage_of_a_bundled_model_is_a_committed_config_with_its_network():
    for m in BUNDLED:
        final = load_config(ROOT / m.config)
        for stage in m.stages:
            cfg = load_config(ROOT / stage)
            assert cfg.name != final.name and cfg.generator == final.generator and cfg.scale == final.scale
        if m.stages:  # the last stage fine-tunes the one before it
            assert final.pretrain is not None and load_config(ROOT / m.stages[-1]).name in final.pretrain.generator
