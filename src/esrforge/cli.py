"""The `esrforge` command. Each subcommand is a plain typed function; `main` only parses."""

from __future__ import annotations

import argparse
import functools
import glob
import itertools
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esrforge import __version__
from esrforge.fileio import error_text, file_error_text  # light: no torch, no OpenCV
from esrforge.train import TrainingError  # light: the class only, no torch

if TYPE_CHECKING:
    from esrforge.infer import Upscaler


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


# --- models / info / convert / interpolate ----------------------------------------------------------------


def models(*, as_json: bool = False) -> int:
    """List the models bundled with esrforge (usable as `-m NAME`)."""
    from esrforge.modelio import BUNDLED, DEFAULT_MODEL, ModelFileError, load_model

    rows = []
    for m in BUNDLED:
        rec: dict[str, object] = {"name": m.name, "default": m.name == DEFAULT_MODEL, "summary": m.summary}
        try:
            d = load_model(m.name).descriptor
            rec.update(installed=True, **{k: v for k, v in d.info().items() if k not in ("layout",)})
        except ModelFileError as e:
            rec.update(installed=False, error=str(e))
        rows.append(rec)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        head = f"{r['name']}{' (default)' if r['default'] else ''}"
        if r["installed"]:
            hp = ", ".join(f"{k} {r[k]}" for k in ("num_feat", "num_block", "num_grow_ch", "num_conv", "activation") if r.get(k) is not None)
            print(f"{head:<24} x{r['scale']} {r['arch']} ({hp}; {r['params']:,} params)")
        else:
            print(f"{head:<24} MISSING: {r['error']}")
        print(f"{'':<24} {r['summary']}")
    print("use one with: esrforge upscale IMAGE -o OUT -m NAME (without -m: the default)")
    return 0


def info(model: Path, *, as_json: bool = False) -> int:
    """Print what a model file holds."""
    from esrforge.modelio import load_model

    lm = load_model(model)
    rec = lm.descriptor.info()
    if as_json:
        print(json.dumps(rec, indent=2))
        return 0
    width = max(len(k) for k in rec)
    for k, v in rec.items():
        print(f"{k:<{width}}  {v:,}" if k == "params" else f"{k:<{width}}  {v}")
    for note in lm.descriptor.notes:
        print(f"note: {note}")
    return 0


def convert(src: Path, dst: Path, *, layout: str | None = None, half: bool = False) -> int:
    """Rewrite a model in another layout and/or format (format follows DST's extension)."""
    from esrforge.modelio import load_model, save_model
    from esrforge.modelio.save import default_layout

    _refuse_same_file(src, dst)
    lm = load_model(src)
    layout = layout or default_layout(lm.descriptor)
    save_model(dst, lm.module.state_dict(), lm.descriptor, layout=layout, half=half)
    keys = f", layout {layout}" if lm.descriptor.arch == "rrdbnet" else ""  # compact models have one layout
    print(f"wrote {dst} ({lm.descriptor.arch} x{lm.descriptor.scale}{keys}{', fp16' if half else ''})")
    return 0


def interpolate(a: Path, b: Path, *, alpha: float, output: Path, layout: str | None = None, half: bool = False) -> int:
    """Network interpolation (ESRGAN paper): every weight = (1 - alpha) * A + alpha * B."""
    from esrforge.modelio import load_model, save_model

    if not 0.0 <= alpha <= 1.0:
        raise CommandError(f"--alpha must be between 0 and 1, got {alpha}")
    _refuse_same_file(a, output)
    _refuse_same_file(b, output)
    ma, mb = load_model(a), load_model(b)
    da, db = ma.descriptor, mb.descriptor
    if da.arch != db.arch or da.hparams != db.hparams:
        if da.arch != db.arch:
            why = f"{a} is {da.arch}, {b} is {db.arch}"
        else:  # only what differs, as `key A vs B`
            why = ", ".join(f"{k} {da.hparams.get(k)} vs {db.hparams.get(k)}" for k in dict.fromkeys([*da.hparams, *db.hparams])
                            if da.hparams.get(k) != db.hparams.get(k))
        raise CommandError(f"cannot interpolate models of different shapes ({why}); both must be the same architecture and size")
    sa, sb = ma.module.state_dict(), mb.module.state_dict()
    mixed = {k: (1.0 - alpha) * sa[k].float() + alpha * sb[k].float() for k in sa}
    save_model(output, mixed, da, layout=layout, half=half)
    print(f"wrote {output} = {1 - alpha:g} * {a.name} + {alpha:g} * {b.name}")
    return 0


def _refuse_same_file(src: Path, dst: Path) -> None:
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise CommandError(f"{dst}: output is the input file; refusing to overwrite it")


# --- upscale ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


def _image_suffixes() -> tuple[str, ...]:
    from esrforge.images import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def collect_inputs(inputs: Sequence[str]) -> list[tuple[Path, Path]]:
    """Expand files, folders (recursive) and globs into (file, path relative to its root)."""
    from esrforge.images import visible_files

    suffixes = _image_suffixes()
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in visible_files(p) if f.suffix.lower() in suffixes)
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        elif glob.has_magic(item):
            # Mirror the tree below the pattern's fixed part: photos/**/*.png -> a/x.png, b/x.png.
            root = Path(*[part for part in itertools.takewhile(lambda q: not glob.has_magic(q), p.parts)] or ["."])
            for m in sorted(Path(m) for m in glob.glob(item, recursive=True)):
                # a matched folder counts as the shell would pass it: its images, recursively
                files = sorted(visible_files(m)) if m.is_dir() else [m]
                found += [(f, f.relative_to(root)) for f in files if f.suffix.lower() in suffixes]
        else:
            raise CommandError(f"{item}: no such file or folder")
    return found


# Image formats people name after -o that esrforge does not write: a typo for a format, not a folder name.
_OTHER_IMAGE_SUFFIXES = (".gif", ".avif", ".heic", ".heif", ".jxl", ".tga", ".ico", ".psd", ".exr", ".hdr",
                         ".jp2", ".j2k", ".ppm", ".pgm", ".pbm", ".svg", ".dng", ".jfif", ".jpe")


def check_writable(output: Path, *, folder: bool) -> None:
    """Refuse an output that cannot be written before any image is upscaled: -o naming a file
    where a folder is meant, a file in the way, or a folder without write permission."""
    if folder and output.exists() and not output.is_dir():
        raise CommandError(f"-o {output}: is a file, not a folder")
    if not folder and output.is_dir():
        raise CommandError(f"-o {output}: is a folder; name the output image, or give several inputs")
    place = output if folder else output.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise CommandError(f"-o {output}: {place} is a file, not a folder")
    if not os.access(place, os.W_OK | os.X_OK):
        raise CommandError(f"-o {output}: cannot write in {place} (permission denied)")


def plan_outputs(
    inputs: Sequence[str], output: Path, *, suffix: str = "", fmt: str = "same"
) -> list[Job]:
    """Map each input image to its output path (one file, or a folder mirroring the inputs)."""
    from esrforge.images import FORMATS

    found = collect_inputs(inputs)
    if not found:
        raise CommandError(f"no images found in {', '.join(inputs)}")
    single_file = len(inputs) == 1 and Path(inputs[0]).is_file() and output.suffix.lower() in _image_suffixes()
    if single_file:
        if suffix or fmt != "same":
            raise CommandError("--suffix and --format apply to folder outputs; name the output file instead")
        return [Job(found[0][0], output)]
    if output.suffix.lower() in _OTHER_IMAGE_SUFFIXES and not output.is_dir():  # not a folder named x.gif
        raise CommandError(f"-o {output}: esrforge does not write {output.suffix} images (it writes {', '.join(_image_suffixes())})")
    if output.suffix.lower() in _image_suffixes() and not output.is_dir():
        raise CommandError(f"-o {output} names an image file, but the inputs hold {len(found)} images; give a folder")
    if any(sep in suffix for sep in ("/", "\\", os.sep)):
        raise CommandError(f"--suffix {suffix!r}: a suffix is part of a file name and cannot hold a path separator")
    planned = []
    for src, rel in found:
        ext = rel.suffix if fmt == "same" else FORMATS[fmt]
        planned.append((src, output / rel.with_name(rel.stem + suffix + ext)))
    # An earlier run's outputs, found again because -o lies inside an input folder or --suffix
    # writes beside the inputs, are outputs (skipped or redone), not new inputs; files named
    # on the command line are always inputs.
    # An input whose own output is itself stays an input (refused below, never overwritten).
    named = {Path(i).resolve() for i in inputs if Path(i).is_file()}
    real = [(src.resolve(), dst.resolve()) for src, dst in planned]
    outputs = {d for _, d in real}
    planned = [(src, dst) for (src, dst), (s, d) in zip(planned, real) if s in named or s not in outputs or d == s]
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    for src, dst in planned:
        first = claimed.setdefault(dst, src)
        if first is not src:
            if first.resolve() == src.resolve():
                continue  # the same image named twice (a folder and a file in it): once is enough
            # Refused up front: one of the two would be skipped or overwritten without a word.
            how = "upscale them in separate runs or folders"
            if fmt != "same" and first.suffix.lower() != src.suffix.lower():  # astro.jpg and astro.webp -> astro.png
                how = f"they differ only in extension: leave out --format (each keeps its own), or {how}"
            raise CommandError(f"{dst} would be written from both {first} and {src}; {how}")
        jobs.append(Job(src, dst))
    return jobs


def _quality_arg(value: str) -> int:
    try:
        q = int(value)
    except ValueError:
        q = -1
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"--quality must be a whole number from 1 to 100, got {value!r}")
    return q


MIN_TILE = 16


def _tile_arg(value: str) -> int | str:
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tile must be 'auto' or a whole number, got {value!r}") from None
    if 0 < n < MIN_TILE or n < 0:
        # each tile also runs a 16-pixel margin on every side: a 1-pixel tile is 1000x the work
        raise argparse.ArgumentTypeError(f"--tile must be 0 (whole image), auto, or at least {MIN_TILE}, got {n}")
    return n


def _report(path: Path, e: BaseException) -> None:
    from tqdm import tqdm

    tqdm.write(f"error: {file_error_text(path, e)}", file=sys.stderr)


def upscale_jobs(
    jobs: Sequence[Job],
    up: Upscaler,
    *,
    quiet: bool = False,
    quality: int | None = None,
    lossless: bool = False,
    strip_metadata: bool = False,
) -> tuple[int, int]:
    """Upscale each job's image; returns (written, failed). Errors are reported and skipped.

    WebP is written lossless with `lossless`, or when the input was a lossless WebP and no
    `quality` was asked for; otherwise at `quality` (default 95). Each output gets its input's
    colour profile, EXIF and PNG text (the profile alone with `strip_metadata`).

    While the model runs on one image, a reader thread decodes the next one and a writer thread
    encodes the previous result (cv2 and torch release the GIL), so a fast model on a GPU is not
    kept waiting on PNG encoding. At most one result waits to be written, and none while it holds
    over a quarter of the available RAM: then the write finishes before the next image starts, so
    peak memory stays near one output image where that matters.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    import torch
    from tqdm import tqdm

    from esrforge.images import NO_ALPHA_SUFFIXES, ImageError, read_image_and_metadata, webp_is_lossless, write_image
    from esrforge.infer.device import free_memory_bytes

    done = failed = 0
    pending: tuple[Job, Future[None], int] | None = None  # the write in flight, and its image's size

    def finish_write() -> None:
        nonlocal pending, done, failed
        if pending is None:
            return
        job, fut, _ = pending
        pending = None
        try:
            fut.result()
            done += 1
        except Exception as e:  # reported with its name; the run goes on
            _report(job.dst, e)
            failed += 1

    # Bars only on a terminal: in a log file they are a stream of carriage-return fragments.
    bars = not quiet and sys.stderr.isatty()
    bar = tqdm(jobs, unit="img", disable=not bars or len(jobs) < 2, dynamic_ncols=True)
    with ThreadPoolExecutor(1, thread_name_prefix="esrforge-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="esrforge-write") as writer:
        nxt = reader.submit(read_image_and_metadata, jobs[0].src) if jobs else None
        try:
            for i, job in enumerate(bar):
                cur, nxt = nxt, (reader.submit(read_image_and_metadata, jobs[i + 1].src) if i + 1 < len(jobs) else None)
                if pending is not None and pending[2] * 4 > free_memory_bytes(torch.device("cpu")):
                    finish_write()
                try:
                    assert cur is not None
                    img, meta = cur.result()
                    ext = job.dst.suffix.lower()
                    if img.ndim == 3 and img.shape[2] in (2, 4) and ext in NO_ALPHA_SUFFIXES:  # before the model runs
                        raise ImageError(f"{job.dst}: {ext} cannot store the alpha channel of {job.src}; use png, webp or tiff")
                    # Shown only for images that take a while (delay), so small batches stay quiet.
                    tiles = tqdm(desc=job.src.name, unit="tile", leave=False, disable=not bars, dynamic_ncols=True, delay=2.0)
                    with tiles:
                        result = up.upscale(img, progress=tiles)
                except Exception as e:
                    # Whatever goes wrong with one image is reported with its name and the run
                    # goes on: one damaged file in a folder of thousands must not stop the rest.
                    _report(job.src, e)
                    failed += 1
                    continue
                finish_write()
                keep = lossless or (quality is None and job.src.suffix.lower() == ".webp" and webp_is_lossless(job.src))
                meta = meta.colour_only() if strip_metadata else meta
                write = functools.partial(write_image, quality=quality or 95, lossless=keep, metadata=meta)
                pending = (job, writer.submit(write, job.dst, result), result.nbytes)
                del img, result  # the writer holds the result until written; then it can go
        finally:  # also when an error or Ctrl-C ends the run: the write in flight finishes and is reported
            finish_write()
    return done, failed


def upscale(
    inputs: Sequence[str],
    *,
    output: Path,
    models: Sequence[str],
    suffix: str = "",
    fmt: str = "same",
    quality: int | None = None,
    lossless: bool = False,
    strip_metadata: bool = False,
    overwrite: bool | None = None,
    tile: int | str = "auto",
    seamless: str | None = None,
    outscale: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    quiet: bool = False,
) -> int:
    """Upscale images; returns 1 if any image failed, after doing all the others."""
    from esrforge.infer import Upscaler
    from esrforge.modelio import load_model

    if not models:
        from esrforge.modelio import DEFAULT_MODEL

        models = [DEFAULT_MODEL]
    jobs = plan_outputs(inputs, output, suffix=suffix, fmt=fmt)
    one_file = len(jobs) == 1 and jobs[0].dst == output  # -o names the output file, not a folder
    if overwrite is None:  # a file named by -o is what the user asked to get (as cp, Real-ESRGAN); a folder run resumes
        overwrite = one_file
    if lossless and any(j.dst.suffix.lower() in (".jpg", ".jpeg") for j in jobs):
        raise CommandError("--lossless: JPEG has no lossless mode; use --format webp or png")
    check_writable(output, folder=not one_file)
    input_files = {j.src.resolve() for j in jobs}
    loaded = [load_model(m) for m in models]
    try:
        up = Upscaler(loaded, device=device, precision=precision, tile=tile, seamless=seamless, outscale=outscale)
    except ValueError as e:  # the API's parameter names, as the options that set them
        raise CommandError(str(e).replace("outscale must", "--outscale must", 1)) from None
    if up.device.type == "cpu":
        from esrforge.infer.device import tune_cpu_allocator

        tune_cpu_allocator()  # tiles reuse freed memory instead of faulting in fresh pages
    todo: list[Job] = []
    skipped = failed = 0
    for job in jobs:
        if job.dst.resolve() in input_files:
            print(f"error: {job.dst}: output would overwrite an input image; use --suffix or another -o", file=sys.stderr)
            failed += 1
        elif job.dst.exists() and not overwrite:
            skipped += 1
        else:
            todo.append(job)
    t0 = time.perf_counter()
    done, errors = upscale_jobs(todo, up, quiet=quiet, quality=quality, lossless=lossless, strip_metadata=strip_metadata)
    failed += errors
    if not quiet:
        took = f" in {time.perf_counter() - t0:.1f} s" if done else ""
        msg = f"upscaled {done}{took}"
        if skipped:
            msg += f", skipped {skipped} (already there; --overwrite to redo)"
        if failed:
            msg += f", failed {failed}"
        if up.fp32_rescues:
            msg += f"; {up.fp32_rescues} tile(s) overflowed in half precision and were redone in fp32"
        print(msg, file=sys.stderr)
    return 1 if failed else 0


# --- degrade ---------------------------------------------------------------------------------------


def degrade(
    hr_dir: Path | None = None,
    lr_dir: Path | None = None,
    *,
    scale: int = 4,
    pipeline: str = "bicubic",
    seed: int = 0,
    workers: int | None = None,
    preview: Path | None = None,
    output: Path | None = None,
    count: int = 8,
    overwrite: bool = False,
    quiet: bool = False,
) -> int:
    """Write an LR dataset from HR images, or (--preview) a contact sheet of random draws."""
    from tqdm import tqdm

    from esrforge.data.degrade import default_workers, degrade_folder, preview_sheet
    from esrforge.data.pipeline import load_pipeline
    from esrforge.images import read_image, write_image

    if scale < 1:
        raise CommandError(f"--scale must be >= 1, got {scale}")
    if count < 1:
        raise CommandError(f"--count must be >= 1, got {count}")
    pipe = load_pipeline(pipeline)
    if preview is not None:
        if hr_dir is not None or lr_dir is not None:
            raise CommandError("--preview takes one image and -o SHEET; leave out HR_DIR and LR_DIR")
        if output is None:
            raise CommandError("--preview needs -o SHEET.png")
        if output.exists() and output.resolve() == preview.resolve():
            raise CommandError(f"{output}: output is the input image; refusing to overwrite it")
        sheet = preview_sheet(read_image(preview), pipe, scale=scale, count=count, seed=seed)
        write_image(output, sheet)
        if not quiet:
            print(f"wrote {output} ({count} draws of {pipe.source})", file=sys.stderr)
        return 0
    if hr_dir is None or lr_dir is None:
        raise CommandError("give HR_DIR and LR_DIR (or --preview IMAGE -o SHEET.png)")
    if output is not None:
        raise CommandError("-o goes with --preview; for a dataset give HR_DIR LR_DIR")
    # Bars only on a terminal (as upscale and train): in a log file they are carriage-return fragments.
    with tqdm(unit="img", disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True, delay=1.0) as bar:  # not drawn for an early error
        errors, skipped = degrade_folder(
            hr_dir, lr_dir, scale=scale, pipeline=pipe, seed=seed,
            workers=default_workers() if workers is None else workers, progress=bar, overwrite=overwrite,
        )
        total = int(bar.total or 0)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not quiet:
        kept = f"; kept {skipped} already there (--overwrite to redo them)" if skipped else ""
        failed = f"; {len(errors)} failed" if errors else ""
        print(f"wrote {total - len(errors)} LR image(s) to {lr_dir} ({pipe.source}, x{scale}, seed {seed}){kept}{failed}", file=sys.stderr)
    return 1 if errors else 0


def split(
    hr_dir: Path,
    out_dir: Path,
    *,
    size: int = 480,
    step: int = 240,
    threshold: int = 0,
    lr_dir: Path | None = None,
    lr_out_dir: Path | None = None,
    scale: int = 4,
    workers: int | None = None,
    quiet: bool = False,
) -> int:
    """Cut a training set's images into sub-images; see esrforge.data.split."""
    from tqdm import tqdm

    from esrforge.data.degrade import default_workers
    from esrforge.data.split import SplitSettings, split_folder

    if scale < 1:
        raise CommandError(f"--scale must be >= 1, got {scale}")
    if (lr_dir is None) != (lr_out_dir is None):
        raise CommandError("--lr and --lr-output go together")
    settings = SplitSettings(size=size, step=step, threshold=threshold, scale=scale if lr_dir is not None else 1)
    with tqdm(unit="img", disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True, delay=1.0) as bar:
        written, errors = split_folder(hr_dir, out_dir, settings, lr_dir=lr_dir, lr_out_dir=lr_out_dir,
                                       workers=default_workers() if workers is None else workers, progress=bar)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not quiet:
        pairs = f" (and as many LR ones to {lr_out_dir})" if lr_out_dir is not None else ""
        print(f"wrote {written} sub-image(s) of {size} px to {out_dir}{pairs}; {len(errors)} image(s) failed", file=sys.stderr)
    return 1 if errors else 0


# --- train -----------------------------------------------------------------------------------------


def train(
    config: Path | None = None,
    *,
    runs_dir: Path | None = None,
    resume: Path | bool = False,
    overrides: Sequence[str] = (),
    print_config: bool = False,
    schema: bool = False,
    quiet: bool = False,
) -> int:
    """Train (or resume) a run described by a YAML config."""
    from esrforge.train.config import config_schema, dump_config, load_config

    if schema:
        print(json.dumps(config_schema(), indent=2))
        return 0
    if print_config:
        if config is None:
            raise CommandError("--print-config needs a CONFIG file")
        print(dump_config(load_config(config, list(overrides))), end="")
        return 0
    from esrforge.train.loop import train as run_training

    return run_training(config, runs_dir=runs_dir, resume=resume, overrides=list(overrides), quiet=quiet)


def plot(run_dir: Path, *, output: Path) -> int:
    """Draw a run's loss and validation curves into an image."""
    from esrforge.train.plot import plot_run

    try:
        plot_run(run_dir, output)
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None
    print(f"wrote {output}", file=sys.stderr)
    return 0


def metrics(sr: Path, hr: Path, *, crop_border: int = 0, y_channel: bool = False, as_json: bool = False) -> int:
    """PSNR/SSIM of SR images against HR references (see esrforge.metrics.report)."""
    from esrforge.metrics.report import metrics_command

    return metrics_command(sr, hr, crop_border=crop_border, y_channel=y_channel, as_json=as_json)


def eval_(hr: Path, **options: Any) -> int:
    """Score a model on a test set as papers do: esrforge.metrics.evaluate.eval_command (torch
    loads only when the command runs)."""
    from esrforge.metrics.evaluate import eval_command

    if options.get("save") is not None:
        check_writable(options["save"], folder=True)
    return eval_command(hr, **options)


# --- argument parsing ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from esrforge.images import FORMATS

    p = argparse.ArgumentParser(prog="esrforge", description="Train and run ESRGAN-family super-resolution models.")
    p.add_argument("--version", action="version", version=f"esrforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("upscale", help="upscale images, folders or globs")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs")
    s.add_argument("-o", "--output", type=Path, required=True, help="output file (one input) or folder")
    s.add_argument("-m", "--model", dest="models", action="append", default=[], metavar="MODEL",
                   help="model file or bundled model name (esrforge models); repeat to chain; default: the bundled default")
    s.add_argument("--suffix", default="", help="added to each output file name before the extension (folder outputs)")
    s.add_argument("--format", dest="fmt", choices=["same", *FORMATS], default="same",
                   help="output format for folder outputs (default: same as each input)")
    s.add_argument("--quality", type=_quality_arg, default=None,
                   help="JPEG and WebP quality, 1-100 (default 95; a lossless WebP input stays lossless unless this is given)")
    s.add_argument("--lossless", action="store_true", help="write WebP lossless (PNG and TIFF always are)")
    s.add_argument("--strip-metadata", action="store_true",
                   help="leave out the inputs' EXIF and PNG text (kept by default; the colour profile is always kept, "
                        "since without it the colours change)")
    g = s.add_mutually_exclusive_group()
    s.set_defaults(overwrite=False)
    g.add_argument("--skip-existing", dest="overwrite", action="store_false", default=None,
                   help="keep existing outputs (default for folder outputs: a re-run does what is left)")
    g.add_argument("--overwrite", dest="overwrite", action="store_true", default=None,
                   help="replace existing outputs (default when -o names one output file)")
    s.add_argument("--tile", type=_tile_arg, default="auto", help="tile size in input pixels, 0 = whole image, auto (default)")
    s.add_argument("--seamless", choices=["tile", "mirror", "replicate"],
                   help="context past the edges: tile = wrap around (the result tiles seamlessly: textures), "
                        "mirror = reflected, replicate = edge pixels repeated (default: none, the model's own zero padding)")
    s.add_argument("--outscale", type=float, help="final scale, resized after the model(s)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    s.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")

    s = sub.add_parser("degrade", help="make LR images from HR images with a degradation pipeline")
    s.add_argument("hr_dir", type=Path, nargs="?", metavar="HR_DIR", help="HR images (searched recursively)")
    s.add_argument("lr_dir", type=Path, nargs="?", metavar="LR_DIR", help="written with the same relative names, as PNG")
    s.add_argument("--scale", type=int, default=4, help="LR = HR / scale (default: 4)")
    s.add_argument("--pipeline", default="bicubic", help="preset (bicubic, realesrgan) or a pipeline YAML file (default: bicubic)")
    s.add_argument("--seed", type=int, default=0, help="each file's randomness comes from this and its name (default: 0)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: up to 4)")
    s.add_argument("--preview", type=Path, metavar="IMAGE", help="write a contact sheet of random draws instead")
    s.add_argument("-o", "--output", type=Path, help="the contact sheet file (with --preview)")
    s.add_argument("--count", type=int, default=8, help="draws on the contact sheet (default: 8)")
    s.add_argument("--overwrite", action="store_true", help="replace LR files already in LR_DIR (default: keep them)")
    s.add_argument("-q", "--quiet", action="store_true")

    s = sub.add_parser("split", help="cut large training images into overlapping sub-images (faster data loading)")
    s.add_argument("hr_dir", type=Path, metavar="HR_DIR", help="images (searched recursively)")
    s.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="an empty or new folder: NAME_s001.png, ... mirroring HR_DIR")
    s.add_argument("--size", type=int, default=480, help="sub-image size in pixels (default: 480, as BasicSR)")
    s.add_argument("--step", type=int, default=240, help="distance between sub-images (default: 240)")
    s.add_argument("--threshold", type=int, default=0,
                   help="a remainder along an edge larger than this gets a sub-image flush with the edge (default: 0)")
    s.add_argument("--lr", dest="lr_dir", type=Path, metavar="LR_DIR", help="LR partners (same relative names): cut at the same places")
    s.add_argument("--lr-output", dest="lr_out_dir", type=Path, metavar="LR_OUT", help="where the LR sub-images go (with --lr)")
    s.add_argument("--scale", type=int, default=4, help="LR = HR / scale, with --lr (default: 4)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: up to 4)")
    s.add_argument("-q", "--quiet", action="store_true")

    s = sub.add_parser("train", help="train a model from a YAML config (see configs/)")
    s.add_argument("config", type=Path, nargs="?", metavar="CONFIG")
    s.add_argument("--runs-dir", type=Path, default=None,
                   help="run folders go here: RUNS_DIR/<name>/ (default: runs; with --resume STATE, the state's own run folder)")
    s.add_argument("--resume", nargs="?", const=True, default=False, type=Path, metavar="RUN_OR_STATE",
                   help="continue the newest state of CONFIG's run, of a run folder (runs/NAME), or the given .state file")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iterations=1000 (repeatable)")
    s.add_argument("--print-config", action="store_true", help="print the resolved config with defaults and exit")
    s.add_argument("--schema", action="store_true", help="print the config's JSON schema (for editor completion)")
    s.add_argument("-q", "--quiet", action="store_true")

    s = sub.add_parser("plot", help="draw a run's loss and validation curves")
    s.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (runs/NAME) or its log.jsonl")
    s.add_argument("-o", "--output", type=Path, required=True, help="image file, e.g. curves.png")

    s = sub.add_parser("metrics", help="PSNR/SSIM of upscaled images against references")
    s.add_argument("sr", type=Path, metavar="SR", help="an image or a folder")
    s.add_argument("hr", type=Path, metavar="HR", help="the reference image or folder (matched by name)")
    s.add_argument("--crop-border", type=int, default=0, help="pixels removed on each side (default: 0; papers: the scale)")
    s.add_argument("--y-channel", action="store_true", help="compare the BT.601 luma only (papers do)")
    s.add_argument("--json", dest="as_json", action="store_true")

    s = sub.add_parser("eval", help="score a model on a test set (HR images) as papers do: Y-channel PSNR/SSIM")
    s.add_argument("hr", type=Path, metavar="HR_DIR", help="HR images, e.g. Set14/HR (searched recursively)")
    s.add_argument("-m", "--model", dest="models", action="append", default=[], metavar="MODEL",
                   help="model file or bundled name; repeat to chain (default: the bundled default)")
    s.add_argument("--lr", dest="lr_dir", type=Path, metavar="LR_DIR", help="LR partners by name (default: MATLAB bicubic of each HR)")
    s.add_argument("--crop-border", type=int, default=None, help="pixels removed on each side (default: the scale)")
    s.add_argument("--save", type=Path, metavar="DIR", help="also write the upscaled images here, as PNG")
    s.add_argument("--json", dest="as_json", action="store_true")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    s.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])

    s = sub.add_parser("models", help="list the models bundled with esrforge")
    s.add_argument("--json", dest="as_json", action="store_true")

    s = sub.add_parser("info", help="show a model file's architecture and hyperparameters")
    s.add_argument("model", type=Path, help="a model file, or a bundled model's name (esrforge models)")
    s.add_argument("--json", dest="as_json", action="store_true")

    s = sub.add_parser("convert", help="convert a model between layouts and formats")
    s.add_argument("src", type=Path, metavar="IN", help="a model file in any layout, or a bundled model's name")
    s.add_argument("dst", type=Path, metavar="OUT", help=".safetensors or .pth")
    s.add_argument("--layout", choices=["basicsr", "original"], default=None,
                   help="key names (default: basicsr; original for ESRGAN+ models, the names other tools read for them)")
    s.add_argument("--half", action="store_true", help="store fp16 weights")

    s = sub.add_parser("interpolate", help="blend two models of the same shape: (1-alpha)*A + alpha*B")
    s.add_argument("a", type=Path, metavar="A", help="model file or bundled name (at alpha 0)")
    s.add_argument("b", type=Path, metavar="B", help="model file or bundled name of the same architecture and shape (at alpha 1)")
    s.add_argument("--alpha", type=float, required=True, help="0 to 1: the share of B, e.g. 0.8 for a mostly-B blend")
    s.add_argument("-o", "--output", type=Path, required=True, help=".safetensors or .pth")
    s.add_argument("--layout", choices=["basicsr", "original"], default=None,
                   help="key names (default: basicsr; original for ESRGAN+ models, the names other tools read for them)")
    s.add_argument("--half", action="store_true", help="store fp16 weights")
    return p


def silence_opencv(cv2: Any) -> None:
    """Set OpenCV's log level to silent: cv2.utils.logging from OpenCV 4.13, cv2.setLogLevel
    (0 = silent) before it."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "")  # named even for a Ctrl-C while parsing
    # Everything inside the try, imports too: Ctrl-C while torch and OpenCV load is common.
    try:
        if not argv:  # `esrforge` alone: the commands, not just "COMMAND is required"
            build_parser().print_help(sys.stderr)
            return 2
        args = vars(build_parser().parse_args(argv))
        command = args.pop("command")
        if "torch" not in sys.modules:
            # OpenMP threads that sleep at barriers instead of spinning: equal on an idle machine,
            # faster when anything else wants the cores (esrforge's own reader/writer threads,
            # DataLoader workers, other jobs). libgomp reads this when torch loads.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if "OPENCV_LOG_LEVEL" not in os.environ:
            # OpenCV logs its own "[ WARN:0@5.4] ... PNG input buffer is incomplete" lines; the
            # commands report each unreadable file themselves, in one line that names it. (Only
            # here: a library import must not change an embedding program's OpenCV settings.)
            import cv2

            silence_opencv(cv2)
        func = {
            "upscale": upscale, "degrade": degrade, "split": split, "train": train, "plot": plot, "metrics": metrics, "eval": eval_,
            "models": models, "info": info, "convert": convert, "interpolate": interpolate,
        }[command]

        def one_line_warning(message: Warning | str, *_: object, **__: object) -> None:
            from tqdm import tqdm

            tqdm.write(f"esrforge {command}: warning: {message}", file=sys.stderr)  # above any progress bar

        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning  # not Python's "file:line: UserWarning" + source line
            return func(**args)
    except KeyboardInterrupt:
        print(f"esrforge {command}: interrupted (no output is left half-written)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `esrforge train --schema | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
        return 141  # 128 + SIGPIPE, as a shell reports it
    except (CommandError, ValueError, OSError, TrainingError) as e:  # ModelFileError, ImageError: ValueErrors
        print(f"esrforge {command}: error: {error_text(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
