import json
import math
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from esrforge.cli import main
from esrforge.images import read_image, write_image
from esrforge.train import TrainingError
from esrforge.train.config import Schedule
from esrforge.train.loop import lr_factor, resolve_channels_last, train
from tests.conftest import photo_like

CONFIGS = Path(__file__).parents[2] / "configs"

def tiny_overrides(name: str, ws: Path, cfg_path: Path, iterations: int = 3) -> list[str]:
    import yaml

    raw = yaml.safe_load(cfg_path.read_text())
    o = [
        f"name={name}", f"data.train.hr=[{ws / 'hr'}]", "data.train.lr=null", "data.train.hr_size=32",
        "data.train.batch_size=2", "data.train.workers=0", f"train.iterations={iterations}",
        "train.checkpoint_every=2", "train.log_every=1", "precision=fp32", "device=cpu",
    ]
    if raw["generator"]["arch"] == "rrdbnet":
        o += ["generator.num_feat=4", "generator.num_block=1", "generator.num_grow_ch=4"]
    else:
        o += ["generator.num_feat=4", "generator.num_conv=1"]
    if "discriminator" in raw:
        o.append("discriminator.num_feat=4")
    if "perceptual" in raw.get("losses", {}):
        o.append(f"losses.perceptual.vgg_weights={ws / 'vgg19.pth'}")
    if "pretrain" in raw:
        o.append(f"pretrain.generator={ws / 'pre.pth'}" if raw["generator"]["arch"] == "rrdbnet" else "pretrain=null")
    if "val" in raw["data"]:
        o += [f"data.val.hr=[{ws / 'val'}]", "data.val.lr=null", "data.val.every=2"]
    return o


@pytest.mark.parametrize(
    "cfg_name", ["esrgan_psnr_x4", "esrgan_gan_x4", "realesrnet_x4", "realesrgan_x4", "compact_x4", "finetune",
                 "models/photo_x4_base", "models/photo_x4", "models/photo_x4_gan"]
)
def test_example_configs_train_a_few_iterations(workspace, tmp_path, cfg_name):
    cfg = CONFIGS / f"{cfg_name}.yml"
    name = Path(cfg_name).name
    rc = train(cfg, runs_dir=tmp_path, overrides=tiny_overrides(name, workspace, cfg), quiet=True)
    assert rc == 0
    run = tmp_path / name
    models = run / "models"
    pth = torch.load(models / "net_g_3.pth", weights_only=True)
    assert set(pth) == {"params", "params_ema"}
    assert (models / "net_g_3.safetensors").exists() and (models / "net_g_latest.pth").exists()
    assert (run / "training_states" / "3.state").exists()
    assert (models / "net_d_3.pth").exists() == ("\ndiscriminator:" in cfg.read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "iter" in r and "val" not in r]
    assert [r["iter"] for r in steps] == [1, 2, 3] and all(np.isfinite(r["pixel"]) for r in steps)
    assert steps[-1]["images"] == 6
    if "val" in cfg.read_text():
        vals = [r for r in log if "val" in r]
        assert vals and {"psnr", "ssim", "psnr_rgb"} <= set(vals[0]["val"])
        assert list((run / "visualization").rglob("*.png"))
    # The weights users take away open in the upscaler.
    out = tmp_path / "up.png"
    write_image(tmp_path / "in.png", photo_like(12, 10))
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(out), "-m", str(models / "net_g_latest.safetensors"), "-q"]) == 0
    assert read_image(out).shape == (48, 40, 3)


def _weights(run_dir: Path, it: int) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "training_states" / f"{it}.state", weights_only=True)
    out = {f"g.{k}": v for k, v in state["net_g"].items()} | {f"ema.{k}": v for k, v in state["net_ema"].items()}
    out |= {f"d.{k}": v for k, v in (state["net_d"] or {}).items()}
    for name in ("opt_g", "opt_d"):
        for pid, st in (state[name] or {"state": {}})["state"].items():
            out |= {f"{name}.{pid}.{k}": v for k, v in st.items() if isinstance(v, torch.Tensor)}
    return out


def interrupt_at(it: int, sig: int = signal.SIGINT):
    """An on_iteration hook that sends this process `sig` (Ctrl-C by default) after iteration `it`."""

    def hook(run):
        if run.iteration == it:
            os.kill(os.getpid(), sig)

    return hook


def test_interrupted_and_resumed_run_is_bit_identical(workspace, tmp_path):
    cfg = CONFIGS / "esrgan_gan_x4.yml"
    base = tiny_overrides("x", workspace, cfg, iterations=6) + ["train.checkpoint_every=100", "data.train.augment=true"]
    assert train(cfg, runs_dir=tmp_path / "a", overrides=base, quiet=True) == 0
    assert train(cfg, runs_dir=tmp_path / "b", overrides=base, quiet=True, on_iteration=interrupt_at(3)) == 130
    assert (tmp_path / "b" / "x" / "training_states" / "3.state").exists()
    assert train(cfg, runs_dir=tmp_path / "b", overrides=base, quiet=True, resume=True) == 0
    a, b = _weights(tmp_path / "a" / "x", 6), _weights(tmp_path / "b" / "x", 6)
    assert a.keys() == b.keys() and len(a) > 10
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_stops_and_saves_like_ctrl_c(workspace, tmp_path):
    """What a cluster scheduler sends before it kills a job."""
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("term", workspace, cfg, iterations=5) + ["train.checkpoint_every=100"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True, on_iteration=interrupt_at(2, signal.SIGTERM)) == 130
    assert (tmp_path / "term" / "training_states" / "2.state").exists()
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True, resume=True) == 0
    assert (tmp_path / "term" / "training_states" / "5.state").exists()


def test_resume_from_a_state_file_alone(workspace, tmp_path):
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("solo", workspace, cfg, iterations=2)
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    state = tmp_path / "solo" / "training_states" / "2.state"
    # No config given: the state describes the run; the finished run has nothing left to do.
    assert main(["train", "--resume", str(state), "--runs-dir", str(tmp_path), "-q"]) == 0


@pytest.mark.parametrize("content, says", [(b"\x89PNG\r\n\x1a\n" + bytes(32), "it is a PNG image"), (None, "truncated")])
def test_an_unreadable_state_is_a_one_line_error(workspace, tmp_path, capsys, content, says):
    cfg = CONFIGS / "compact_x4.yml"
    assert train(cfg, runs_dir=tmp_path, overrides=tiny_overrides("bad", workspace, cfg, iterations=1), quiet=True) == 0
    state = tmp_path / "bad" / "training_states" / "1.state"
    state.write_bytes(content if content is not None else state.read_bytes()[:1000])
    assert main(["train", "--resume", str(state), "--runs-dir", str(tmp_path), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"esrforge train: error: {state}") and says in err and len(err.splitlines()) == 1


def test_set_extends_a_finished_run_resumed_from_its_state_alone(workspace, tmp_path, capsys):
    cfg = CONFIGS / "compact_x4.yml"
    assert train(cfg, runs_dir=tmp_path, overrides=tiny_overrides("more", workspace, cfg, iterations=2), quiet=True) == 0
    state = tmp_path / "more" / "training_states" / "2.state"
    assert main(["train", "--resume", str(state), "--set", "train.iterations=3", "-q"]) == 0
    assert (tmp_path / "more" / "training_states" / "3.state").exists()
    assert main(["train", "--resume", str(state), "--set", "train.iterations=zero", "-q"]) == 1
    assert f"esrforge train: error: {state}: --set train.iterations: expected a whole number, got 'zero'" in capsys.readouterr().err


def test_resuming_says_which_config_values_changed(workspace, tmp_path, capsys):
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("steer", workspace, cfg, iterations=4) + ["train.checkpoint_every=100"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True, on_iteration=interrupt_at(2)) == 130
    capsys.readouterr()
    assert train(cfg, runs_dir=tmp_path, overrides=o + ["train.iterations=5", "optim.generator.lr=5e-5"], resume=True) == 0
    err = capsys.readouterr().err
    assert "config changes since the state was saved: optim.generator.lr: 0.0002 -> 5e-05; train.iterations: 4 -> 5" in err


def test_train_takes_what_load_config_returns(workspace, tmp_path):
    from esrforge.train.config import load_config

    cfg = CONFIGS / "compact_x4.yml"
    loaded = load_config(cfg, tiny_overrides("typed", workspace, cfg, iterations=1))
    assert train(loaded, runs_dir=tmp_path, quiet=True) == 0
    assert (tmp_path / "typed" / "training_states" / "1.state").exists()


def test_a_run_whose_crop_grows_on_resume_keeps_its_vgg_discriminator(workspace, tmp_path):
    """Train at a small crop, continue at 256 px (a common way to speed up early training): the
    VGG discriminator keeps the five-stage layout it was built with; its pool takes the new size."""
    for i in range(2):
        write_image(tmp_path / "big" / f"{i}.png", photo_like(256, 256, seed=i))
    cfg = CONFIGS / "esrgan_gan_x4.yml"
    o = tiny_overrides("grow", workspace, cfg, iterations=2) + [
        f"data.train.hr=[{tmp_path / 'big'}]", "losses.perceptual=null", "data.val=null", "train.checkpoint_every=1"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    grown = o + ["data.train.hr_size=256", "train.iterations=3"]
    assert train(cfg, runs_dir=tmp_path, overrides=grown, quiet=True, resume=True) == 0
    d = torch.load(tmp_path / "grow" / "models" / "net_d_3.pth", weights_only=True)["params"]
    assert "conv4_1.weight" in d and "conv5_0.weight" not in d


def test_a_missing_state_file_is_named_as_such(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope.state"), "-q"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"esrforge train: error: {tmp_path / 'nope.state'}: no such file; expected a training state (RUN/training_states/N.state)"
    )


def test_every_missing_file_is_named_with_its_field_before_anything_loads(workspace, tmp_path, capsys):
    cfg = CONFIGS / "esrgan_gan_x4.yml"
    o = tiny_overrides("gone", workspace, cfg, iterations=1) + [
        f"data.train.hr=[{tmp_path / 'nodata'}]", f"losses.perceptual.vgg_weights={tmp_path / 'novgg.pth'}",
        f"pretrain.generator={tmp_path / 'nomodel.pth'}", f"pretrain.discriminator={tmp_path}",
    ]
    assert main(["train", str(cfg), "--runs-dir", str(tmp_path), "-q"] + sum((["--set", x] for x in o), [])) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "esrforge train: error: 4 missing file(s) or folder(s):"
    assert lines[1] == f"  data.train.hr: {tmp_path / 'nodata'}: no such folder"
    assert lines[2].startswith(f"  pretrain.generator: {tmp_path / 'nomodel.pth'}: no such model file")
    assert lines[3] == f"  pretrain.discriminator: {tmp_path}: is a folder, not a model file"
    assert lines[4].startswith(f"  losses.perceptual.vgg_weights: {tmp_path / 'novgg.pth'}: no such VGG19 weights file")
    assert not (tmp_path / "gone").exists()


def test_a_pretrain_file_of_another_architecture_is_refused_even_when_not_strict(workspace, tmp_path):
    from esrforge.archs.compact import SRVGGNetCompact

    sd = SRVGGNetCompact(num_feat=4, num_conv=1).state_dict()
    torch.save({"params": sd}, tmp_path / "compact.pth")
    cfg = CONFIGS / "finetune.yml"
    o = tiny_overrides("other", workspace, cfg, iterations=1) + [f"pretrain.generator={tmp_path / 'compact.pth'}", "pretrain.strict=false"]
    with pytest.raises(TrainingError, match=rf"pretrain.generator: .*compact.pth: none of its {len(sd)} tensors fits the generator .*; the file is compact, the config's generator rrdbnet; leave the generator section out"):
        train(cfg, runs_dir=tmp_path, overrides=o, quiet=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_that_stops_decoding_mid_run_saves_the_state_and_resumes_exactly(workspace, tmp_path, workers):
    """A file that passed the header check but fails to decode (a truncated copy, a disk error)
    stops the run with its name and a saved state; fixed, the run resumes bit-identically."""
    import shutil

    hr = tmp_path / "hr"
    shutil.copytree(workspace / "hr", hr)
    cfg = CONFIGS / "compact_x4.yml"
    # 12 iterations: DataLoader workers load up to 2 x workers batches ahead, and the run must
    # still ask for 1.png after it is truncated at iteration 2.
    o = tiny_overrides("flaky", workspace, cfg, iterations=12) + [
        f"data.train.hr=[{hr}]", f"data.train.workers={workers}", "train.checkpoint_every=100", "data.val=null"]
    assert train(cfg, runs_dir=tmp_path / "a", overrides=o, quiet=True) == 0
    good = (hr / "1.png").read_bytes()

    def truncate_at_2(run):
        if run.iteration == 2:
            (hr / "1.png").write_bytes(good[: len(good) // 2])

    with pytest.raises(TrainingError) as e:
        train(cfg, runs_dir=tmp_path / "b", overrides=o, quiet=True, on_iteration=truncate_at_2)
    msg = str(e.value)
    assert msg.startswith(f"while loading a training sample: {hr / '1.png'}: not a readable image")
    assert len(msg.splitlines()) == 1 and "Traceback" not in msg
    stopped = int(re.search(r"state saved at iteration (\d+)\)$", msg).group(1))
    assert 2 <= stopped < 12
    (hr / "1.png").write_bytes(good)
    assert train(cfg, runs_dir=tmp_path / "b", overrides=o, quiet=True, resume=True) == 0
    a, b = _weights(tmp_path / "a" / "flaky", 12), _weights(tmp_path / "b" / "flaky", 12)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_needs_resume(workspace, tmp_path, capsys):
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("dup", workspace, cfg, iterations=1)
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    args = ["train", str(cfg), "--runs-dir", str(tmp_path), "-q"] + sum((["--set", x] for x in o), [])
    assert main(args) == 1
    assert "already holds a run; use --resume" in capsys.readouterr().err


def test_bf16_on_a_cpu_without_bf16_units_warns_and_trains(workspace, tmp_path, capsys, monkeypatch):
    import esrforge.infer.device as device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("slow", workspace, cfg, iterations=1) + ["precision=bf16"]
    assert main(["train", str(cfg), "--runs-dir", str(tmp_path), "-q"] + sum((["--set", x] for x in o), [])) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warned == [
        "esrforge train: warning: precision bf16: this CPU has no bf16 units (AVX512-BF16 or AMX), "
        "so bf16 runs many times slower than fp32 here; use auto or fp32"
    ]
    assert (tmp_path / "slow" / "models" / "net_g_1.safetensors").exists()


def test_training_on_cpu_tunes_the_allocator(workspace, tmp_path, monkeypatch):
    import esrforge.train.loop as loop

    calls = []
    monkeypatch.setattr(loop, "tune_cpu_allocator", lambda: calls.append(1) or True)
    cfg = CONFIGS / "compact_x4.yml"
    assert train(cfg, runs_dir=tmp_path, overrides=tiny_overrides("alloc", workspace, cfg, iterations=1), quiet=True) == 0
    assert calls == [1]


def test_channels_last_auto_is_off_for_fp32_on_cpu_only():
    """fp32 forward + backward ran 1.5x slower in channels_last on an AVX2 CPU; half precision gains."""
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert resolve_channels_last("auto", cpu, None) is False
    assert resolve_channels_last("auto", cpu, torch.bfloat16) is True
    assert resolve_channels_last("auto", cuda, None) is True
    assert resolve_channels_last("auto", cuda, torch.float16) is True
    assert resolve_channels_last(True, cpu, None) is True
    assert resolve_channels_last(False, cuda, torch.float16) is False
    assert resolve_channels_last(True, mps, None) is False  # not used there


@pytest.mark.parametrize("setting, shown", [(None, "off"), ("true", "on")])
def test_startup_line_says_what_auto_resolved_to(workspace, tmp_path, capsys, setting, shown):
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("hello", workspace, cfg, iterations=1) + ([f"train.channels_last={setting}"] if setting else [])
    assert main(["train", str(cfg), "--runs-dir", str(tmp_path)] + sum((["--set", x] for x in o), [])) == 0
    assert "hello: cpu x 1 process(es), precision fp32, channels_last " + shown + ", 4 training image(s)" in capsys.readouterr().err


@pytest.mark.parametrize("cfg_name, forwards", [("realesrgan_x4", 3), ("esrgan_gan_x4", 4)])
def test_the_discriminator_sees_hr_in_the_generator_step_only_when_the_loss_uses_it(workspace, tmp_path, cfg_name, forwards):
    """Real-ESRGAN's plain GAN loss needs D(SR) only: G step 1 forward, D step 2. The relativistic
    loss (ESRGAN) also compares with D(HR): 4. An unused D(HR) cost a forward and, with spectral
    norm, an extra power iteration per step."""
    cfg = CONFIGS / f"{cfg_name}.yml"
    counts = []

    def count(run):
        if run.iteration == 1:
            run.net_d.register_forward_hook(lambda *_: counts.append(1))
        elif run.iteration == 2:
            counts.append(None)

    o = tiny_overrides("dfw", workspace, cfg, iterations=2) + ["data.val=null"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True, on_iteration=count) == 0
    assert counts.index(None) == forwards


def test_a_log_file_gets_plain_progress_lines_not_a_bar(workspace, tmp_path, capsys):
    """Under nohup or a cluster job stderr is a file: one line per log_every iterations, no \\r."""
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("lines", workspace, cfg, iterations=4) + ["train.log_every=2", "data.val=null"]
    assert train(cfg, runs_dir=tmp_path, overrides=o) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    progress = [line for line in err.splitlines() if line.startswith("iter ")]
    assert [p.split(" (")[0] for p in progress] == ["iter 2/4", "iter 4/4"]
    assert re.fullmatch(r"iter 2/4 \(50\.0%\) epoch \d+, [\d.e+]+ it/s, eta [\d:d ]+, pixel [\d.e-]+", progress[0])


def test_only_the_newest_checkpoints_are_kept(workspace, tmp_path):
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("keep", workspace, cfg, iterations=5) + ["train.checkpoint_every=1", "train.keep_checkpoints=2"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    states = sorted(p.name for p in (tmp_path / "keep" / "training_states").iterdir())
    assert states == ["4.state", "5.state"]
    models = {p.name for p in (tmp_path / "keep" / "models").iterdir()}
    assert "net_g_3.pth" not in models and {"net_g_4.pth", "net_g_5.safetensors", "net_g_latest.pth"} <= models
    assert not list((tmp_path / "keep").rglob("*.partial"))


def spoil_after(monkeypatch, cls: type, method: str, good_calls: int, spoil: Callable) -> None:
    """Patch cls.method so that after `good_calls` calls its result is spoil(result, *args)."""
    real, calls = getattr(cls, method), {"n": 0}

    def patched(self, *args):
        calls["n"] += 1
        out = real(self, *args)
        return spoil(out, *args) if calls["n"] > good_calls else out

    monkeypatch.setattr(cls, method, patched)


def test_nan_losses_stop_the_run_naming_the_last_good_checkpoint(workspace, tmp_path, monkeypatch):
    from esrforge.losses import pixel

    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("nan", workspace, cfg, iterations=6) + ["train.checkpoint_every=1", "train.max_bad_steps=2"]
    spoil_after(monkeypatch, pixel.PixelLoss, "forward", 2, lambda loss, *_: loss * float("nan"))
    with pytest.raises(TrainingError, match=r"iteration 3 was skipped 2 times in a row \(last: NaN/inf pixel loss\).*"
                       r"last good checkpoint: training_states/2.state") as e:
        train(cfg, runs_dir=tmp_path, overrides=o, quiet=True)
    assert "lower optim lr, set train.grad_clip;" in str(e.value)  # fp32 already: no "use fp32" advice


def _count_optimizer_steps(monkeypatch) -> list[int]:
    steps = []
    real = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or real(self, *a, **k))
    return steps


def test_a_nan_discriminator_loss_skips_the_generator_step_too(workspace, tmp_path, monkeypatch):
    from esrforge.losses import gan

    cfg = CONFIGS / "esrgan_gan_x4.yml"
    o = tiny_overrides("nand", workspace, cfg, iterations=6) + ["train.checkpoint_every=1", "train.max_bad_steps=2"]
    spoil_after(monkeypatch, gan.GANLoss, "discriminator_loss", 2, lambda loss, *_: loss * float("inf"))
    steps = _count_optimizer_steps(monkeypatch)
    with pytest.raises(TrainingError, match=r"iteration 3 was skipped 2 times in a row \(last: NaN/inf gan_d"):
        train(cfg, runs_dir=tmp_path, overrides=o, quiet=True)
    assert len(steps) == 4  # G and D of the two good iterations; nothing stepped in the skipped ones


def test_nan_gradients_under_a_finite_loss_are_skipped_and_never_saved(workspace, tmp_path, monkeypatch):
    from esrforge.losses import pixel

    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("nang", workspace, cfg, iterations=6) + ["train.checkpoint_every=1", "train.max_bad_steps=2"]
    # d/dx sqrt(|x - x|) is inf at 0: the loss stays finite, its gradient does not.
    spoil_after(monkeypatch, pixel.PixelLoss, "forward", 2, lambda loss, a, b: loss + 0 * (a - a.detach()).abs().sqrt().sum())
    with pytest.raises(TrainingError, match=r"\(last: NaN/inf generator gradients\).*training_states/2.state"):
        train(cfg, runs_dir=tmp_path, overrides=o, quiet=True)
    state = torch.load(tmp_path / "nang" / "training_states" / "2.state", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["net_g"].values())


def test_pretrain_strict_and_partial(workspace, tmp_path, capsys):
    cfg = CONFIGS / "finetune.yml"
    o = tiny_overrides("ft", workspace, cfg, iterations=1)
    bad = o + ["generator.num_grow_ch=6"]
    with pytest.raises(TrainingError, match=r"does not fit the generator .*; the file has num_grow_ch 4 \(config: 6\); leave the generator section out to take the file's; or set pretrain.strict: false"):
        train(cfg, runs_dir=tmp_path, overrides=bad, quiet=True)
    assert train(cfg, runs_dir=tmp_path, overrides=bad + ["pretrain.strict=false", "name=ft2"]) == 0
    out = capsys.readouterr().out
    assert "not loaded:" in out and "body.0.rdb1.conv1.weight" in out and "conv_first.weight" not in out.split("not loaded:")[1]


def test_resume_needs_neither_the_pretrain_file_nor_a_runs_dir(workspace, tmp_path, monkeypatch):
    """The state holds every weight and knows its run folder: move the pretrain file, resume."""
    import shutil

    cfg = CONFIGS / "finetune.yml"
    pre = tmp_path / "pre.pth"
    shutil.copy(workspace / "pre.pth", pre)
    o = tiny_overrides("self", workspace, cfg, iterations=4) + [f"pretrain.generator={pre}", "train.checkpoint_every=100"]
    runs = tmp_path / "elsewhere"
    assert train(cfg, runs_dir=runs, overrides=o, quiet=True, on_iteration=interrupt_at(2)) == 130
    pre.unlink()
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", str(runs / "self" / "training_states" / "2.state"), "-q"]) == 0
    assert (runs / "self" / "training_states" / "4.state").exists()
    assert not (tmp_path / "runs").exists()


def test_resume_with_another_network_is_a_one_line_error(workspace, tmp_path, capsys):
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("chg", workspace, cfg, iterations=4) + ["train.checkpoint_every=100"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True, on_iteration=interrupt_at(2)) == 130
    args = ["train", str(cfg), "--runs-dir", str(tmp_path), "--resume", "-q"] + sum((["--set", x] for x in o + ["generator.num_feat=6"]), [])
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"2.state: the networks differ from the run's (generator.num_feat: 4 -> 6); resume with the config the run started with, or with --resume {tmp_path / 'chg'} alone" in err


def test_resume_refuses_a_network_added_since_and_another_runs_config(workspace, tmp_path):
    psnr, gan = CONFIGS / "esrgan_psnr_x4.yml", CONFIGS / "esrgan_gan_x4.yml"
    o = tiny_overrides("grow", workspace, psnr, iterations=4) + ["train.checkpoint_every=100"]
    assert train(psnr, runs_dir=tmp_path, overrides=o, quiet=True, on_iteration=interrupt_at(2)) == 130
    state = tmp_path / "grow" / "training_states" / "2.state"
    og = tiny_overrides("grow", workspace, gan, iterations=4)
    with pytest.raises(TrainingError, match=r"2.state: the run has no discriminator and the config does; resume with the config"):
        train(gan, runs_dir=tmp_path, overrides=og, quiet=True, resume=state)
    with pytest.raises(TrainingError, match=r"2.state belongs to run 'grow', but .*esrgan_psnr_x4.yml names 'other'"):
        train(psnr, overrides=o + ["name=other"], quiet=True, resume=state)
    with pytest.raises(TrainingError) as e:
        train(psnr, runs_dir=tmp_path, overrides=o + ["train.ema=null"], quiet=True, resume=state)
    assert str(e.value) == f"{state}: the run has an EMA of the generator (train.ema) and the config does not; resume with the config the run started with"


def test_a_relative_state_path_resumes_in_its_own_run_folder(workspace, tmp_path, monkeypatch):
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("rel", workspace, cfg, iterations=4) + ["train.checkpoint_every=100"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True, on_iteration=interrupt_at(2)) == 130
    monkeypatch.chdir(tmp_path / "rel" / "training_states")
    assert main(["train", "--resume", "2.state", "-q"]) == 0
    assert (tmp_path / "rel" / "training_states" / "4.state").exists()
    assert not (tmp_path / "rel" / "training_states" / "runs").exists()


@pytest.mark.parametrize("what, says", [("missing", "no such VGG19 weights file"), ("an image", "not a model file: it is a PNG image")])
def test_missing_or_wrong_vgg_weights_are_a_one_line_error(workspace, tmp_path, capsys, what, says):
    cfg = CONFIGS / "esrgan_gan_x4.yml"
    if what == "an image":
        (tmp_path / "nope.pth").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    o = tiny_overrides("novgg", workspace, cfg, iterations=1) + [f"losses.perceptual.vgg_weights={tmp_path / 'nope.pth'}"]
    assert main(["train", str(cfg), "--runs-dir", str(tmp_path), "-q"] + sum((["--set", x] for x in o), [])) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("esrforge train: error: losses.perceptual.vgg_weights: ") and "nope.pth" in err and len(err.splitlines()) == 1
    assert says in err


@pytest.mark.parametrize("problem, message", [
    ("missing", "data.val.hr: {val}: no such folder"),
    ("empty", "data.val.hr: no images in {val}"),
    ("small", "data.val.hr: {val}/s.png is 16x16; SSIM needs 11x11 pixels after cropping"),
    ("unpaired", "data.val.lr: no LR image named like v.png"),
    ("mis-sized", "data.val.lr: {vlr}/v.png (10x8) is not {val}/v.png (32x32) / 4"),
])
def test_a_bad_validation_set_is_refused_before_training(workspace, tmp_path, problem, message):
    val = tmp_path / "val"
    extra = ["data.val.every=2"]
    if problem == "empty":
        val.mkdir()
    elif problem == "small":
        write_image(val / "s.png", photo_like(16, 16))
    elif problem == "unpaired":
        write_image(val / "v.png", photo_like(32, 32))
        write_image(tmp_path / "vlr" / "other.png", photo_like(8, 8))
        extra.append(f"data.val.lr={tmp_path / 'vlr'}")
    elif problem == "mis-sized":  # it used to fail at the first validation, after training
        write_image(val / "v.png", photo_like(32, 32))
        write_image(tmp_path / "vlr" / "v.png", photo_like(8, 10))
        extra.append(f"data.val.lr={tmp_path / 'vlr'}")
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("badval", workspace, cfg, iterations=2) + [f"data.val.hr=[{val}]"] + extra
    with pytest.raises(TrainingError, match=re.escape(message.format(val=val, vlr=tmp_path / "vlr"))):
        train(cfg, runs_dir=tmp_path, overrides=o, quiet=True)
    assert not (tmp_path / "badval").exists()


def test_each_process_needs_a_full_batch(workspace, tmp_path, monkeypatch):
    """4 images, batch 3, 2 processes: each would get 2 samples and no batch (it used to spin)."""
    import esrforge.train.loop as loop

    monkeypatch.setattr(loop, "init_distributed", lambda device: (0, 2, None))
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("ddp", workspace, cfg, iterations=2) + ["data.train.batch_size=3"]
    with pytest.raises(TrainingError, match=r"4 samples per epoch \(2 processes, 2 each\), fewer than batch_size 3"):
        train(cfg, runs_dir=tmp_path, overrides=o, quiet=True)


def test_lr_schedules():
    ms = Schedule(type="multistep", milestones=[2, 4], gamma=0.5)
    assert [lr_factor(ms, i) for i in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    cos = Schedule(type="cosine_restarts", periods=[4, 4], restart_weights=[1, 0.5], eta_min=0.1)
    f = [lr_factor(cos, i) for i in range(9)]

    def basicsr(it, base=1.0, eta=0.1, periods=(4, 4), weights=(1, 0.5)):
        """CosineAnnealingRestartLR.get_lr with last_epoch = it, transcribed (eta_min absolute)."""
        cumulative = [sum(periods[: i + 1]) for i in range(len(periods))]
        idx = next(i for i, c in enumerate(cumulative) if it <= c)
        restart = 0 if idx == 0 else cumulative[idx - 1]
        return eta + weights[idx] * 0.5 * (base - eta) * (1 + math.cos(math.pi * (it - restart) / periods[idx]))

    assert f == pytest.approx([basicsr(i) for i in range(9)], abs=1e-12)
    assert f[0] == 1 and f[4] == pytest.approx(0.1) and f[8] == pytest.approx(0.1)  # the restart's own iteration: eta_min
    warm = Schedule(type="constant", warmup=4)
    assert [lr_factor(warm, i) for i in range(5)] == [0.25, 0.5, 0.75, 1, 1]


def torchrun_train(cfg: Path, runs_dir: Path, overrides: list[str]) -> list[str]:
    """`torchrun --nproc-per-node 2 -m esrforge train`, each process with batch size 1."""
    import sys

    ddp = [o for o in overrides if not o.startswith("data.train.batch_size")] + ["data.train.batch_size=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "esrforge", "train", str(cfg), "--runs-dir", str(runs_dir), "-q"]
    return cmd + [arg for o in ddp for arg in ("--set", o)]


def run_torchrun(cmd: list[str]):
    import subprocess

    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_cpu_processes_with_torchrun_match_one_process(workspace, tmp_path):
    """DDP with 2 gloo processes x batch 1 sees the same samples as 1 process x batch 2 and
    averages the same gradients, so the weights agree to float rounding; only rank 0 writes."""
    cfg = CONFIGS / "compact_x4.yml"
    base = tiny_overrides("ddp", workspace, cfg, iterations=3) + ["data.val=null", "train.ema=null"]
    assert train(cfg, runs_dir=tmp_path / "one", overrides=base, quiet=True) == 0
    cmd = torchrun_train(cfg, tmp_path / "two", base)
    proc = run_torchrun(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "ddp" / "models" / "net_g_3.pth", weights_only=True)["params"]
    b = torch.load(tmp_path / "two" / "ddp" / "models" / "net_g_3.pth", weights_only=True)["params"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)
    log = (tmp_path / "two" / "ddp" / "log.jsonl").read_text().splitlines()
    assert len(log) == 3 and json.loads(log[-1])["images"] == 6  # one writer; 2 ranks x batch 1 x 3 its
    # The logged losses are the whole batch's, not rank 0's half of it.
    one = [json.loads(line)["pixel"] for line in (tmp_path / "one" / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [json.loads(line)["pixel"] for line in log] == pytest.approx(one, rel=1e-4)
    # Resume works under torchrun too: extend the run by two iterations.
    cmd2 = cmd + ["--resume", "--set", "train.iterations=5"]
    proc = run_torchrun(cmd2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "two" / "ddp" / "training_states" / "5.state").exists()


def test_an_undecodable_image_under_torchrun_stops_every_process_with_the_state_saved(workspace, tmp_path):
    """One process cannot decode an image mid-run: all stop at the same iteration (none hangs in a
    collective), rank 0 saves the state first, the file is named; fixed, the run resumes and ends
    where an uninterrupted run ends."""
    import shutil

    hr = tmp_path / "hr"
    shutil.copytree(workspace / "hr", hr)
    good = (hr / "0.png").read_bytes()
    (hr / "0.png").write_bytes(good[: len(good) // 2])  # the header still reads: the check up front passes
    cfg = CONFIGS / "compact_x4.yml"
    base = tiny_overrides("ddp", workspace, cfg, iterations=4) + [
        f"data.train.hr=[{hr}]", "data.val=null", "train.ema=null", "train.checkpoint_every=100"]
    cmd = torchrun_train(cfg, tmp_path / "two", base)
    proc = run_torchrun(cmd)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("esrforge train: error:")]
    named = [line for line in errors if f"{hr / '0.png'}: not a readable image" in line]
    assert len(named) == 1 and len(errors) == 2, proc.stderr[-3000:]  # the other process says it stops too
    stopped = int(re.search(r"state saved at iteration (\d+)\)$", named[0]).group(1))
    assert 1 <= stopped < 4 and (tmp_path / "two" / "ddp" / "training_states" / f"{stopped}.state").exists()
    (hr / "0.png").write_bytes(good)
    proc = run_torchrun(cmd + ["--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert train(cfg, runs_dir=tmp_path / "one", overrides=base, quiet=True) == 0
    a = torch.load(tmp_path / "one" / "ddp" / "models" / "net_g_4.pth", weights_only=True)["params"]
    b = torch.load(tmp_path / "two" / "ddp" / "models" / "net_g_4.pth", weights_only=True)["params"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)


def test_plot_draws_losses_and_validation(workspace, tmp_path, capsys):
    cfg = CONFIGS / "compact_x4.yml"
    assert train(cfg, runs_dir=tmp_path, overrides=tiny_overrides("plot", workspace, cfg, iterations=4), quiet=True) == 0
    out = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "plot"), "-o", str(out)]) == 0
    img = read_image(out)
    # panels of 480 x 260, two to a row: the pixel loss, the learning rate, then psnr, ssim,
    # psnr_rgb; each with its curve
    assert img.shape == (3 * 260, 2 * 480, 3)
    for y, x in ((0, 0), (0, 480), (260, 0), (260, 480), (520, 0)):
        panel = img[y + 40 : y + 220, x + 64 : x + 440]  # inside the frame
        assert ((panel < 250).any(axis=2) & (panel.std(axis=2) > 20)).sum() > 100  # coloured pixels drawn
    assert main(["plot", str(tmp_path / "plot" / "log.jsonl"), "-o", str(tmp_path / "same.png")]) == 0  # the log itself
    assert np.array_equal(read_image(tmp_path / "same.png"), img)
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "x.png")]) == 1
    assert "no training log" in capsys.readouterr().err


def test_best_validation_is_logged_and_shown(workspace, tmp_path, capsys):
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("best", workspace, cfg, iterations=4) + ["data.val.every=1"]
    assert train(cfg, runs_dir=tmp_path, overrides=o) == 0
    vals = [json.loads(line) for line in (tmp_path / "best" / "log.jsonl").read_text().splitlines() if '"val"' in line]
    assert [v["iter"] for v in vals] == [1, 2, 3, 4]
    top = max(vals, key=lambda v: v["val"]["psnr"])
    assert vals[-1]["best"] == {"psnr": top["val"]["psnr"], "ssim": top["val"]["ssim"], "iteration": top["iter"]}
    assert f"(best psnr {top['val']['psnr']:.4f} @ {top['iter']})" in capsys.readouterr().out


def test_validation_runs_without_cudnn_autotuning_and_restores_it(workspace, tmp_path, monkeypatch):
    """Training on CUDA turns cuDNN's autotuner on (one crop size); validation images each have
    their own size, so it is off while they run, and back on afterwards."""
    import esrforge.train.loop as loop

    seen = []
    real = loop._validate
    monkeypatch.setattr(loop, "_validate", lambda run: seen.append(torch.backends.cudnn.benchmark) or real(run))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    cfg = CONFIGS / "compact_x4.yml"
    assert train(cfg, runs_dir=tmp_path, overrides=tiny_overrides("tune", workspace, cfg, iterations=2) + ["data.val.every=1"], quiet=True) == 0
    assert seen == [False, False] and torch.backends.cudnn.benchmark is True


def test_a_resumed_run_drops_the_log_records_it_redoes_and_a_torn_line(workspace, tmp_path, capsys):
    """kill -9 after iteration 3 was logged but before its checkpoint: the resumed run logs 3
    again; the log (and the plot) must show each iteration once."""
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("cut", workspace, cfg, iterations=4) + ["train.checkpoint_every=100", "train.log_every=1", "data.val=null"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True, on_iteration=interrupt_at(2)) == 130
    log = tmp_path / "cut" / "log.jsonl"
    with log.open("a") as f:
        f.write('{"iter": 3, "epoch": 0, "pixel": 0.5}\n{"iter": 4, "pix')  # logged, then killed mid-write
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True, resume=True) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3, 4] and records[2]["pixel"] != 0.5
    with log.open("a") as f:
        f.write('{"iter": 5, "pix')
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "cut"), "-o", str(tmp_path / "c.png")]) == 0
    assert f"esrforge plot: warning: {log}: skipped 1 unreadable line(s): 5" in capsys.readouterr().err


def test_a_fresh_start_in_a_failed_runs_folder_starts_a_fresh_log(workspace, tmp_path):
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("again", workspace, cfg, iterations=2) + ["train.log_every=1", "data.val=null"]
    log = tmp_path / "again" / "log.jsonl"
    log.parent.mkdir()
    log.write_text('{"iter": 1, "lr": 1000000.0}\n')  # a run that diverged before its first checkpoint
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    assert [json.loads(line)["lr"] != 1e6 for line in log.read_text().splitlines()] == [True, True]


def test_gradient_accumulation_matches_the_bigger_batch(workspace, tmp_path):
    cfg = CONFIGS / "compact_x4.yml"
    base = tiny_overrides("acc", workspace, cfg, iterations=2) + ["data.val=null", "data.train.augment=false"]
    assert train(cfg, runs_dir=tmp_path / "big", overrides=base, quiet=True) == 0
    acc = [o for o in base if not o.startswith("data.train.batch_size")] + ["data.train.batch_size=1", "train.accumulate=2"]
    assert train(cfg, runs_dir=tmp_path / "acc", overrides=acc, quiet=True) == 0
    a = torch.load(tmp_path / "big" / "acc" / "models" / "net_g_2.pth", weights_only=True)["params"]
    b = torch.load(tmp_path / "acc" / "acc" / "models" / "net_g_2.pth", weights_only=True)["params"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_discriminator_start_pretrained_d_and_given_val_lr(workspace, tmp_path):
    from esrforge.archs.discriminators import build_discriminator

    torch.save({"params": build_discriminator("vgg", num_feat=4).state_dict()}, tmp_path / "d.pth")
    for i in range(2):  # validation with LR images given (not made from HR)
        write_image(tmp_path / "vlr" / f"v{i}.png", photo_like(8, 10, seed=20 + i))
    cfg = CONFIGS / "esrgan_gan_x4.yml"
    o = tiny_overrides("dstart", workspace, cfg, iterations=3) + [
        "train.d_start=2", f"pretrain.discriminator={tmp_path / 'd.pth'}", f"data.val.lr=[{tmp_path / 'vlr'}]",
    ]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    log = [json.loads(line) for line in (tmp_path / "dstart" / "log.jsonl").read_text().splitlines()]
    steps = {r["iter"]: r for r in log if "val" not in r}
    assert "gan_g" not in steps[1] and "gan_d" not in steps[2] and {"gan_g", "gan_d"} <= set(steps[3])
    assert any("val" in r for r in log)


def test_discriminator_optimizer_and_partial_pretrained_d(workspace, tmp_path, capsys):
    from esrforge.archs.discriminators import build_discriminator
    from esrforge.train.config import load_config
    from esrforge.train.loop import setup

    d = build_discriminator("vgg", num_feat=4).state_dict()
    d["linear9.weight"] = torch.zeros(3, 3)  # a tensor the config's D has no place for
    torch.save({"params": d}, tmp_path / "d.pth")
    cfg = CONFIGS / "esrgan_gan_x4.yml"
    o = tiny_overrides("dopt", workspace, cfg, iterations=1) + [
        f"pretrain.discriminator={tmp_path / 'd.pth'}", "pretrain.strict=false",
        "optim.discriminator={type: adamw, lr: 3.0e-4, betas: [0.5, 0.9], weight_decay: 0.01}",
    ]
    run = setup(load_config(cfg, o), tmp_path / "dopt", log=print)
    assert "pretrain discriminator: loaded" in capsys.readouterr().out
    assert type(run.opt_d) is torch.optim.AdamW and type(run.opt_g) is torch.optim.Adam
    g, dg = run.opt_g.param_groups[0], run.opt_d.param_groups[0]
    assert (dg["lr"], dg["betas"], dg["weight_decay"]) == (3.0e-4, (0.5, 0.9), 0.01)
    assert g["lr"] != dg["lr"]
    assert torch.equal(run.net_d.state_dict()["conv0_0.weight"], d["conv0_0.weight"])


@pytest.mark.parametrize("source", ["pipeline file", "lr folder"])
def test_training_from_a_pipeline_file_or_a_made_lr_folder(workspace, tmp_path, source):
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("src", workspace, cfg, iterations=2)
    if source == "pipeline file":
        (tmp_path / "mine.yml").write_text("steps:\n  - {type: blur, sigma: [0.2, 1.0]}\n  - {type: resize, to: target}\n")
        o += [f"data.train.degradation={tmp_path / 'mine.yml'}"]
    else:
        for i in range(4):  # the workspace's HR photos are 48x48: LR partners at x4
            write_image(tmp_path / "lr" / f"{i}.png", photo_like(12, 12, seed=i))
        o += [f"data.train.lr={tmp_path / 'lr'}", "data.train.degradation=null"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    assert (tmp_path / "src" / "models" / "net_g_2.safetensors").exists()


def test_feature_matching_loss_is_trained_and_logged(workspace, tmp_path):
    cfg = CONFIGS / "esrgan_gan_x4.yml"
    o = tiny_overrides("fm", workspace, cfg, iterations=2) + ["losses.feature_matching.weight=0.5"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    log = [json.loads(line) for line in (tmp_path / "fm" / "log.jsonl").read_text().splitlines() if '"val"' not in line]
    assert [r["iter"] for r in log] == [1, 2]
    assert all(np.isfinite(r["feature_matching"]) and r["feature_matching"] > 0 for r in log)


def test_tensorboard_scalars_and_validation_images(workspace, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("tb", workspace, cfg, iterations=2) + ["train.tensorboard=true"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()
    assert {"train/pixel", "train/lr", "val/psnr", "val/ssim"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/pixel")] == [1, 2]
    assert any(t.startswith("val/") for t in tags["images"])


def test_fp16_grad_scaler_adamw_and_clipping_paths(workspace, tmp_path, monkeypatch):
    """The CUDA recipe (fp16 autocast + GradScaler) runs on CPU too; clipping is applied."""
    calls = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, c, *a, **k: calls.append(c) or real_clip(p, c, *a, **k))
    cfg = CONFIGS / "esrgan_gan_x4.yml"
    o = tiny_overrides("fp16", workspace, cfg, iterations=2) + [
        "precision=fp16", "optim.generator.type=adamw", "optim.generator.weight_decay=0.01", "train.grad_clip=0.5",
    ]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    state = torch.load(tmp_path / "fp16" / "training_states" / "2.state", weights_only=True)
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    assert calls and set(calls) == {0.5}
    log = [json.loads(line) for line in (tmp_path / "fp16" / "log.jsonl").read_text().splitlines() if '"val"' not in line]
    assert all(np.isfinite(r["pixel"]) and np.isfinite(r["gan_d"]) for r in log)


def test_ema_update_and_warmup():
    from esrforge.train.loop import ema_decay, update_ema

    assert ema_decay(0.999, 0, True) == pytest.approx(0.1)
    assert ema_decay(0.999, 2000, True) == pytest.approx(2001 / 2010)
    assert ema_decay(0.999, 100_000, True) == 0.999 and ema_decay(0.999, 0, False) == 0.999
    ema, net = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = ema.weight.detach().clone()
    update_ema(ema, net, 0.9)
    assert torch.allclose(ema.weight, 0.9 * before + 0.1 * net.weight.detach())
    # A network that stopped moving at w: after 2000 steps the warmed-up EMA is at w, while the
    # fixed decay still carries 0.999**2000 = 13.5% of the initial weights.
    start, w = torch.zeros(1), torch.ones(1)
    for warm in (True, False):
        e = start.clone()
        for it in range(2000):
            d = ema_decay(0.999, it, warm)
            e = d * e + (1 - d) * w
        assert (float(e) > 0.99) == warm


def test_too_few_images_for_a_batch_points_to_repeat(workspace, tmp_path):
    cfg = CONFIGS / "compact_x4.yml"
    base = tiny_overrides("few", workspace, cfg, iterations=1) + ["data.val=null", "data.train.batch_size=6"]
    with pytest.raises(TrainingError, match=r"4 usable image\(s\) x repeat 1 = 4 samples per epoch, fewer than batch_size 6"):
        train(cfg, runs_dir=tmp_path, overrides=base, quiet=True)
    assert train(cfg, runs_dir=tmp_path, overrides=base + ["data.train.repeat=2"], quiet=True) == 0


def test_ema_warmup_config_reaches_the_loop(workspace, tmp_path):
    """After one step ema = d * init + (1 - d) * net, so net - ema = d * (net - init): d = 0.1
    with warmup, 0.999 with train.ema_warmup: false; the same seed gives the same init and net."""
    cfg = CONFIGS / "compact_x4.yml"
    gaps = {}
    for warm in ("true", "false"):
        o = tiny_overrides(f"ew_{warm}", workspace, cfg, iterations=1) + ["data.val=null", f"train.ema_warmup={warm}"]
        assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
        pth = torch.load(tmp_path / f"ew_{warm}" / "models" / "net_g_1.pth", weights_only=True)
        gaps[warm] = torch.cat([(pth["params"][k] - pth["params_ema"][k]).flatten() for k in pth["params"]])
    assert gaps["true"].abs().max() > 0
    torch.testing.assert_close(gaps["false"], gaps["true"] * (0.999 / 0.1), rtol=1e-3, atol=1e-7)


def test_training_batches_keep_their_workers_across_epochs_and_resume_at_any_position(tmp_path):
    """One DataLoader serves every epoch: its worker processes start once (restarting them each
    epoch cost seconds where workers are spawned), and the batches, their epochs and a resume
    from any position are those of a single-process run."""
    from types import SimpleNamespace

    from esrforge.data.datasets import SRDataset
    from esrforge.train.loop import batches, data_workers

    for i in range(5):
        write_image(tmp_path / "hr" / f"{i}.png", photo_like(24, 24, seed=i))

    class PidDataset(SRDataset):
        def item(self, index, epoch):
            return {**super().item(index, epoch), "pid": os.getpid()}

    ds = PidDataset(tmp_path / "hr", scale=2, hr_size=8, pipeline="bicubic")

    def take(workers, epoch, done, n):
        cfg = SimpleNamespace(seed=3, data=SimpleNamespace(train=SimpleNamespace(batch_size=2, workers=workers)))
        run = SimpleNamespace(cfg=cfg, world=1, rank=0, dataset=ds, epoch=epoch, batches_done=done, device=torch.device("cpu"))
        out, data = [], batches(run)
        for _ in range(n):
            b = next(data)
            out.append((b, (run.epoch, run.batches_done)))
        return out

    ref = take(0, 0, 0, 7)  # 5 images, batch 2: 2 batches an epoch, the 5th image left out
    assert [pos for _, pos in ref] == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2), (3, 1)]
    keys = [tuple(b["key"]) for b, _ in ref]
    assert len(set(keys[0] + keys[1])) == 4 and keys[:2] != keys[2:4]  # an epoch draws 4 images, reshuffled
    with_workers = take(2, 0, 0, 7)
    pids = {int(p) for b, _ in with_workers for p in b["pid"]}
    assert len(pids) == data_workers(2) and os.getpid() not in pids  # the same workers for 3.5 epochs
    for (a, pa), (b, pb) in zip(ref, with_workers):
        assert pa == pb and torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    for k in range(len(ref) - 1):  # resumed after batch k (the state written then holds ref[k]'s position)
        again = take(0, *ref[k][1], len(ref) - k - 1)
        for (a, pa), (b, pb) in zip(ref[k + 1 :], again):
            assert pa == pb and torch.equal(a["hr"], b["hr"]), k


def test_sharpen_hr_auto_follows_the_pipelines_opening_sharpen_step():
    """Real-ESRGAN degrades the USM-sharpened HR and trains towards it; LR from a sharpened HR
    with plain targets would teach the model to blur."""
    from types import SimpleNamespace

    from esrforge.data.pipeline import load_pipeline
    from esrforge.train.config import load_config
    from esrforge.train.loop import target_sharpening

    def usm(degradation, sharpen_hr="auto", lr=None):
        cfg = load_config({"name": "t", "scale": 4, "generator": {"arch": "compact"}, "train": {"sharpen_hr": sharpen_hr},
                           "data": {"train": {"hr": "x", "lr": lr}}})
        return target_sharpening(cfg, SimpleNamespace(pipeline=load_pipeline(degradation)))

    assert usm("realesrgan") == ((0.5, 50, 10.0), "train.sharpen_hr auto: HR targets sharpened as the degradation "
                                 "pipeline's first step (amount 0.5, radius 50, threshold 10)")
    assert usm([{"type": "sharpen", "amount": 0.8, "radius": 20, "threshold": 5}])[0] == (0.8, 20, 5.0)
    assert usm("bicubic") == (None, "")
    assert usm("realesrgan", lr="lr") == (None, "")  # LR files: their HR was never sharpened by esrforge
    assert usm("realesrgan", sharpen_hr=0) == (None, "") and usm("bicubic", sharpen_hr=0.3) == ((0.3, 50, 10.0), "")
    none, why = usm([{"type": "sharpen", "amount": [0.3, 0.7]}])
    assert none is None and "random sharpen step" in why and "set train.sharpen_hr" in why


def test_resume_takes_a_run_folder_and_never_rolls_a_run_back(workspace, tmp_path, capsys):
    """An older state resumed over a newer one, or a finished one resumed again, overwrote the
    later log records, final_iteration and *_latest files (from a new-user audit)."""
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("back", workspace, cfg, iterations=4) + ["train.checkpoint_every=2", "train.keep_checkpoints=5"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    run = tmp_path / "back"
    files = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run / "training_states" / "2.state"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "2.state is iteration 2, but" in err and "holds a newer state (4.state)" in err
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert f"{run}: already finished at iteration 4 (train.iterations 4); --set train.iterations=N to go on" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == files
    assert main(["train", "--resume", str(run), "--set", "train.iterations=6", "-q"]) == 0
    assert (run / "training_states" / "6.state").exists() and (run / "final_iteration").read_text() == "6"
    assert main(["train", "--resume", str(tmp_path / "hr-less"), "-q"]) == 1


def test_data_workers_are_capped_at_the_cpus_the_process_may_use(monkeypatch):
    from esrforge.train.loop import data_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert data_workers(4) == 2 and data_workers(1) == 1 and data_workers(0) == 0


def test_a_run_validates_at_its_last_iteration_too(workspace, tmp_path):
    """A run that ends between two validations still reports its final weights' scores."""
    cfg = CONFIGS / "compact_x4.yml"
    o = tiny_overrides("last", workspace, cfg, iterations=3) + ["train.checkpoint_every=100"]
    assert train(cfg, runs_dir=tmp_path, overrides=o, quiet=True) == 0
    records = [json.loads(line) for line in (tmp_path / "last" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "val" in r] == [2, 3]
    assert (tmp_path / "last" / "visualization" / "00000003").is_dir()
