"""Rebuild a bundled model from its committed config: data, training, export into the package.

    python scripts/train_bundled.py photo_x4        # the PSNR default
    python scripts/train_bundled.py photo_x4_gan    # the GAN fine-tune (starts from photo_x4)

Steps: prepare build/model-data (scripts/model_data.py); `esrforge train
configs/models/NAME.yml --runs-dir runs` (resuming if the run was interrupted: --resume), after
the model's earlier stages if it has any (photo_x4: photo_x4_base.yml, whose final weights the
next stage fine-tunes; a finished stage is not trained again); then the EMA weights of the last
iteration are written as fp16 safetensors to
src/esrforge/weights/NAME.safetensors with the recipe in the file's metadata.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def export(name: str, run_dir: Path, wall_s: float | None) -> Path:
    """Write the run's final generator (EMA) as the bundled fp16 weights file."""
    import model_data
    import torch

    from esrforge import __version__
    from esrforge.modelio import load_model, save_model
    from esrforge.modelio.bundled import find_bundled, weights_dir

    final = run_dir / "models" / "net_g_latest.safetensors"
    lm = load_model(final)
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    iters = max((r.get("iter", 0) for r in records), default=0)
    val = [r for r in records if "val" in r]
    meta = {
        "esrforge_bundled": name,
        "config": find_bundled(name).config,
        "iterations": str(iters),
        "trained_on": f"{model_data.cpu_name()}, {os.cpu_count()} threads, torch {torch.__version__}",
        "exported": dt.date.today().isoformat(),
        "esrforge_version": __version__,
    }
    if wall_s is not None:  # measured only when this script ran the training
        meta["train_wall_s"] = f"{wall_s:.0f}"
    if val:
        meta["last_validation"] = json.dumps(val[-1], sort_keys=True)
    out = weights_dir() / find_bundled(name).file
    save_model(out, lm.module.state_dict(), lm.descriptor, half=True, extra_metadata=meta)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, fp16) from {final} at iteration {iters}")
    return out


def train_stage(
    config: Path, runs_dir: Path, pretrain: Path | None, *, last: bool, resume: bool, cli
) -> tuple[int, Path, bool]:
    """Train one config (fine-tuning `pretrain` if given). An earlier (not `last`) stage that
    already finished in runs_dir is not trained again. Returns (exit code, its final weights, whether it trained)."""
    from esrforge.train.config import load_config
    from esrforge.train.loop import newest_state

    cfg = load_config(config)
    run_dir = runs_dir / cfg.name
    out = run_dir / "models" / "net_g_latest.safetensors"
    state = newest_state(run_dir)
    if not last and state is not None and int(state.stem) >= cfg.train.iterations:
        print(f"{cfg.name}: finished earlier in {run_dir}; not trained again")
        return 0, out, False
    cmd = ["train", str(config), "--runs-dir", str(runs_dir)] + (["--resume"] if resume and state else [])
    if pretrain is not None:
        cmd += ["--set", f"pretrain.generator={pretrain}"]
    return cli(cmd), out, True


def main() -> int:
    from esrforge.modelio import BUNDLED

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=[m.name for m in BUNDLED])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run of this model")
    ap.add_argument("--export-only", action="store_true", help="only export the finished run's weights")
    args = ap.parse_args()
    args.runs_dir = args.runs_dir.resolve()  # before the chdir, so a relative --runs-dir means the caller's
    os.chdir(ROOT)  # the configs name their data relative to the repository root

    from esrforge.cli import main as cli
    from esrforge.modelio.bundled import find_bundled

    model = find_bundled(args.name)
    run_dir = args.runs_dir / args.name
    wall = None
    if not args.export_only:
        import model_data

        model_data.prepare(ROOT / "build" / "model-data")  # seconds; wheels are cached
        t0 = time.perf_counter()
        pretrain, all_ran = None, True
        for config in (*model.stages, model.config):
            rc, pretrain, ran = train_stage(
                ROOT / config, args.runs_dir, pretrain, last=config == model.config, resume=args.resume, cli=cli)
            if rc != 0:
                return rc
            all_ran &= ran
        if all_ran:  # a wall time only for a build this script ran from start to end
            wall = time.perf_counter() - t0
            print(f"training took {wall / 60:.1f} min")
    export(args.name, run_dir, wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
