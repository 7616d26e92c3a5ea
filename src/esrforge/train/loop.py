"""The training loop, top-down: setup -> fit -> train_step -> validate -> save_checkpoint.

Everything a run needs to continue lives in its training state file (config, iteration, data
position, every network, optimizer and RNG state), so `--resume` needs no other file, and a run
stopped with Ctrl-C continues bit-identically on CPU.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from esrforge.archs import ARCHS, build
from esrforge.data.datasets import DatasetError, SRDataset, pair_sizes_match, scan_images, seed_for
from esrforge.data.pipeline import load_pipeline
from esrforge.data.sharpen import Sharpen, usm_sharpen
from esrforge.fileio import atomic_save
from esrforge.infer.device import cpu_has_fast_bf16, resolve_device, slow_precision_note, tune_cpu_allocator
from esrforge.losses.feature_matching import FeatureMatchingLoss, discriminator_features
from esrforge.modelio import load_model, read_raw, unwrap
from esrforge.modelio.detect import describe
from esrforge.modelio.save import save_model
from esrforge.train import TrainingError
from esrforge.train.config import Schedule, TrainConfig, dump_config, load_config
from esrforge.train.schema import to_dict

STATE_DIR, MODEL_DIR = "training_states", "models"


# --- setup -------------------------------------------------------------------------------------


@dataclass
class Run:
    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    amp: torch.dtype | None
    net_g: nn.Module
    net_ema: nn.Module | None
    net_d: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler | None
    losses: dict[str, nn.Module]
    dataset: SRDataset
    iteration: int = 0
    epoch: int = 0
    batches_done: int = 0  # within the current epoch
    bad_steps: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    last_checkpoint: int | None = None
    stop_requested: bool = False
    val_images: list[tuple[str, np.ndarray]] = field(default_factory=list)  # last validation's strips
    rank: int = 0
    world: int = 1
    g_train: nn.Module | None = None  # net_g, or its DistributedDataParallel wrapper
    bad_reason: str = ""  # why the last skipped iteration was skipped
    channels_last: bool = False
    target_usm: tuple[float, int, float] | None = None  # (amount, radius, threshold) on the HR targets

    @property
    def main(self) -> bool:
        """Only rank 0 writes files, logs and validates."""
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[int, int, torch.device | None]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPU).
    Returns (rank, world size, this process's device or None to resolve it normally)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
    if not dist.is_initialized():
        # Rank 0 validates and writes checkpoints while the others wait in the next collective;
        # the default timeouts (10 min for NCCL in CUDA builds, 30 for gloo) would end a run
        # whose validation set takes longer.
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        return dist.get_rank(), world, torch.device("cuda", local)
    return dist.get_rank(), world, torch.device("cpu")


def _all_ok(run: Run, ok: bool) -> bool:
    """True only if every process saw `ok` (a NaN on one rank skips the step on all)."""
    if run.world == 1:
        return ok
    import torch.distributed as dist

    t = torch.tensor([1 if ok else 0], device=run.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


_TORCH = tuple(int(part) for part in torch.__version__.split(".")[:2])
_AMP_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # autocast dtype by name


def resolve_amp(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype; None = fp32. auto: fp16 on CUDA, bf16 where the CPU has bf16 units."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None
    return _AMP_DTYPES[precision]


def precision_name(amp: torch.dtype | None) -> str:
    return next(name for name, dt in _AMP_DTYPES.items() if dt == amp)


def resolve_channels_last(setting: bool | str, device: torch.device, amp: torch.dtype | None) -> bool:
    """`auto`: channels_last with half-precision autocast (CPU bf16 units, CUDA) and on CUDA.

    In fp32 on CPU it is off: a generator's forward + backward took 1.5x as long in channels_last
    as in NCHW on an AVX2 CPU (the oneDNN backward kernels), although inference gains from it.
    """
    if device.type not in ("cpu", "cuda"):
        return False
    if setting == "auto":
        return device.type == "cuda" or amp is not None
    return bool(setting)


def _optimizer(params: Any, cfg: Any, device: torch.device) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.type]
    # One fused kernel per tensor: on CPU PyTorch's default is a Python loop of small ops. An
    # RRDBNet x4 Adam step took 33 ms fused against 89-108 ms (2-core AVX2 VM); results agree
    # to 1e-8. A state saved unfused resumes unfused (its param group keeps the setting).
    # Fused Adam on CPU is torch 2.4's; torch 2.3 has it for CUDA only.
    fused = True if device.type == "cuda" or (device.type == "cpu" and _TORCH >= (2, 4)) else None
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused)


def load_pretrained(net: nn.Module, path: str, *, strict: bool, what: str, generator: bool) -> list[str]:
    """Load weights from any file the upscaler reads (any layout). Returns the skipped keys."""
    mismatch = ""
    if generator:
        loaded = load_model(path)
        src = loaded.module.state_dict()
        theirs, mine = loaded.descriptor, getattr(net, "hparams", dict)()
        arch = next((name for name, cls in ARCHS.items() if type(net) is cls), theirs.arch)
        if theirs.arch != arch:
            mismatch = f"; the file is {theirs.arch}, the config's generator {arch}"
        else:
            diff = [f"{k} {theirs.hparams[k]} (config: {mine[k]})" for k in theirs.hparams if k in mine and theirs.hparams[k] != mine[k]]
            mismatch = f"; the file has {', '.join(diff)}" if diff else ""
        if mismatch:
            mismatch += "; leave the generator section out to take the file's"
    else:
        raw, _ = read_raw(path)
        src = unwrap(raw, path)
    want = net.state_dict()
    matching = {k: v for k, v in src.items() if k in want and v.shape == want[k].shape}
    skipped = sorted(set(want) - set(matching)) + sorted(set(src) - set(want))
    if not matching:
        raise TrainingError(f"{path}: none of its {len(src)} tensors fits the {what} (another architecture or size?){mismatch}")
    if strict and skipped:
        raise TrainingError(
            f"{path}: does not fit the {what} ({len(skipped)} tensors differ, e.g. {', '.join(skipped[:3])}){mismatch}; "
            "or set pretrain.strict: false to load the matching tensors only"
        )
    net.load_state_dict({**want, **{k: v.to(want[k].dtype) for k, v in matching.items()}})
    return skipped


def check_files(cfg: TrainConfig, *, resuming: bool) -> None:
    """Every file and folder the config names, checked before anything loads, all problems at
    once with their field paths (a resumed run takes its weights from the state, not pretrain)."""
    from esrforge.losses.perceptual import vgg19_weights_file
    from esrforge.modelio import resolve_model

    problems: list[str] = []
    folders = [("data.train.hr", cfg.data.train.hr), ("data.train.lr", cfg.data.train.lr)]
    if cfg.data.val is not None:
        folders += [("data.val.hr", cfg.data.val.hr), ("data.val.lr", cfg.data.val.lr)]
    for key, paths in folders:
        for p in paths or []:
            if not Path(p).is_dir():
                problems.append(f"{key}: {p}: {'not a folder' if Path(p).exists() else 'no such folder'}")
    if cfg.pretrain is not None and not resuming:
        g, d = cfg.pretrain.generator, cfg.pretrain.discriminator
        if g is not None:
            try:
                resolve_model(g)  # a file, or a bundled model's name
            except ValueError as e:
                problems.append(f"pretrain.generator: {e}")
        if d is not None and not Path(d).is_file():
            problems.append(f"pretrain.discriminator: {d}: {'is a folder, not a model file' if Path(d).exists() else 'no such file'}")
    if cfg.losses.perceptual is not None:
        try:
            vgg19_weights_file(cfg.losses.perceptual.vgg_weights)
        except FileNotFoundError as e:
            problems.append(f"losses.perceptual.vgg_weights: {e}")
    if problems:
        raise TrainingError("\n  ".join([f"{len(problems)} missing file(s) or folder(s):", *problems]) if len(problems) > 1 else problems[0])


def build_dataset(cfg: TrainConfig) -> SRDataset:
    t = cfg.data.train
    pipeline = None
    if t.lr is None or t.degradation is not None:
        pipeline = load_pipeline(t.degradation if t.degradation is not None else "bicubic")
    return SRDataset(
        t.hr, lr_roots=t.lr, pipeline=pipeline, scale=cfg.scale, hr_size=t.hr_size,
        channels=t.channels, augment=t.augment, seed=cfg.seed, repeat=t.repeat,
    )


def target_sharpening(cfg: TrainConfig, dataset: SRDataset) -> tuple[tuple[float, int, float] | None, str]:
    """The USM (amount, radius, threshold) for the pixel and perceptual losses' HR targets, and a
    line for the console when `train.sharpen_hr: auto` decided it. Real-ESRGAN degrades the
    sharpened HR and trains towards it: LR made from a sharpened HR with unsharpened targets
    teaches the model to blur."""
    s = cfg.train.sharpen_hr
    if s != "auto":
        return ((float(s), 50, 10.0) if s > 0 else None), ""
    steps = dataset.pipeline.steps if dataset.pipeline is not None and cfg.data.train.lr is None else ()
    first = steps[0] if steps else None
    if not isinstance(first, Sharpen):
        return None, ""
    if first.p < 1 or any(r.low != r.high for r in (first.amount, first.radius, first.threshold)):
        return None, ("train.sharpen_hr auto: the degradation pipeline opens with a random sharpen step, so the targets "
                      "are not sharpened; set train.sharpen_hr to the amount they should have")
    usm = (first.amount.low, int(first.radius.low), first.threshold.low)
    return usm, (f"train.sharpen_hr auto: HR targets sharpened as the degradation pipeline's first step "
                 f"(amount {usm[0]:g}, radius {usm[1]}, threshold {usm[2]:g})")


def check_val_set(cfg: TrainConfig) -> None:
    """Refuse a validation set that would fail at the first validation, val.every iterations in."""
    from esrforge.images import ImageError, read_image

    v = cfg.data.val
    if v is None:
        return
    try:
        pairs = val_pairs(cfg)
    except ValueError as e:
        raise TrainingError(f"data.val: {e}") from None
    if not pairs:
        raise TrainingError(f"data.val.hr: no images in {', '.join(map(str, v.hr))}")
    border = cfg.scale if v.crop_border is None else v.crop_border
    for key, hr_path, lr_path in pairs:
        if v.lr and lr_path is None:
            raise TrainingError(f"data.val.lr: no LR image named like {hr_path.name} (the validation pairs are matched by name)")
        try:
            # decoded, not just sized: a truncated file would fail the first validation, hours in
            h, w = read_image(hr_path).shape[:2]
            lh, lw = read_image(lr_path).shape[:2] if lr_path is not None else (h // cfg.scale, w // cfg.scale)
        except ImageError as e:
            raise TrainingError(f"data.val: {e}") from None
        if not pair_sizes_match((h, w), (lh, lw), cfg.scale):  # the training pairs' rule
            raise TrainingError(f"data.val.lr: {lr_path} ({lw}x{lh}) is not {hr_path} ({w}x{h}) / {cfg.scale}")
        side = min(h, w) // cfg.scale * cfg.scale - 2 * border
        if side < 11:
            raise TrainingError(
                f"data.val.hr: {hr_path} is {w}x{h}; SSIM needs 11x11 pixels after cropping to a multiple of "
                f"scale {cfg.scale} and a {border}-pixel border"
            )


def setup(
    cfg: TrainConfig, run_dir: Path, log: Callable[[str], None] = print, *, resuming: bool = False,
    d_input_size: int | None = None,
) -> Run:
    """Networks, losses, optimizers and data for a run. `resuming`: the training state will
    supply every weight, so the pretrain files are not needed (or read) again. `d_input_size`:
    the crop size the VGG discriminator was built for, when it differs from `hr_size` (a resumed
    run whose crop grew keeps its discriminator's layout)."""
    check_files(cfg, resuming=resuming)
    rank, world, dist_device = init_distributed(cfg.device)
    device = dist_device or resolve_device(cfg.device)
    amp = resolve_amp(cfg.precision, device)
    note = slow_precision_note(amp, device)
    if note:
        warnings.warn(note, stacklevel=2)
    if device.type == "cpu":
        tune_cpu_allocator()  # the step's large activations reuse memory instead of faulting it in
    if device.type == "cuda":  # one crop size: cuDNN times its algorithms once and keeps the fastest
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)
    hp = cfg.generator.hparams(cfg.scale)
    net_g = build(cfg.generator.arch, **hp).to(device)
    losses: dict[str, nn.Module] = {}
    if cfg.losses.pixel is not None:
        from esrforge.losses.pixel import PixelLoss

        losses["pixel"] = PixelLoss(cfg.losses.pixel.type, weight=cfg.losses.pixel.weight)
    if cfg.losses.perceptual is not None:
        from esrforge.losses.perceptual import PerceptualLoss

        p = cfg.losses.perceptual
        try:
            losses["perceptual"] = PerceptualLoss(
                dict(p.layers), weight=p.weight, criterion=p.criterion, vgg_weights=p.vgg_weights,
                pre_activation=p.pre_activation, autocast=p.autocast,
            ).to(device)
        except (OSError, ValueError) as e:
            raise TrainingError(f"losses.perceptual.vgg_weights: {e}") from None  # the file is all that can fail here
    net_d = None
    if cfg.discriminator is not None and cfg.losses.gan is not None:
        from esrforge.archs.discriminators import build_discriminator
        from esrforge.losses.gan import GANLoss

        net_d = build_discriminator(
            cfg.discriminator.arch, **cfg.discriminator.hparams(cfg.generator.out_ch, d_input_size or cfg.data.train.hr_size)
        ).to(device)
        losses["gan"] = GANLoss(cfg.losses.gan.type, relativistic=cfg.losses.gan.relativistic, weight=cfg.losses.gan.weight)
        if cfg.losses.feature_matching is not None:
            losses["feature_matching"] = FeatureMatchingLoss(cfg.losses.feature_matching.weight)
    if cfg.pretrain is not None and not resuming:
        for what, net, path, is_g in (("generator", net_g, cfg.pretrain.generator, True), ("discriminator", net_d, cfg.pretrain.discriminator, False)):
            if path is None:
                continue
            if net is None:
                raise TrainingError(f"pretrain.{what}: the config has no {what} to load it into")
            try:
                skipped = load_pretrained(net, path, strict=cfg.pretrain.strict, what=what, generator=is_g)
            except (TrainingError, ValueError) as e:  # ModelFileError is a ValueError
                raise TrainingError(f"pretrain.{what}: {e}") from None
            if skipped:
                more = f", ... ({len(skipped)} in all)" if len(skipped) > 8 else ""
                log(f"pretrain {what}: loaded {path}; not loaded: {', '.join(skipped[:8])}{more}")
            else:
                log(f"pretrain {what}: loaded {path}")
    channels_last = resolve_channels_last(cfg.train.channels_last, device, amp)
    if channels_last:
        net_g = net_g.to(memory_format=torch.channels_last)
        net_d = net_d.to(memory_format=torch.channels_last) if net_d is not None else None
    net_ema = copy.deepcopy(net_g).eval().requires_grad_(False) if cfg.train.ema is not None else None
    opt_g = _optimizer(net_g.parameters(), cfg.optim.generator, device)
    opt_d = _optimizer(net_d.parameters(), cfg.optim.discriminator, device) if net_d is not None else None
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    try:
        dataset = build_dataset(cfg)
    except DatasetError as e:
        raise TrainingError(f"data.train: {e}") from None
    if len(dataset) // world < cfg.data.train.batch_size:  # each process draws its own share
        per = f" ({world} processes, {len(dataset) // world} each)" if world > 1 else ""
        raise TrainingError(
            f"data.train: {len(dataset.samples)} usable image(s) x repeat {dataset.repeat} = {len(dataset)} samples"
            f" per epoch{per}, fewer than batch_size {cfg.data.train.batch_size}; raise data.train.repeat or add images"
        )
    check_val_set(cfg)
    target_usm, why = target_sharpening(cfg, dataset)
    if why:
        log(why)
    if data_workers(cfg.data.train.workers) < cfg.data.train.workers:
        log(f"data.train.workers {cfg.data.train.workers}: this machine gives the process "
            f"{data_workers(cfg.data.train.workers)} CPU(s); using that many")
    run = Run(
        cfg, run_dir, device, amp, net_g, net_ema, net_d, opt_g, opt_d, scaler, losses, dataset,
        rank=rank, world=world, channels_last=channels_last, target_usm=target_usm,
    )
    run.g_train = net_g
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        run.g_train = DDP(net_g, device_ids=ids)
        # The discriminator runs twice (HR, then SR) before its backward, which DDP's hooks do
        # not allow; its gradients are averaged by hand instead (average_grads).
    return run


def average_grads(run: Run, net: nn.Module) -> None:
    """Mean of each gradient over all processes, in one flat all-reduce."""
    if run.world == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in net.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= run.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


# --- schedule ------------------------------------------------------------------------------------


def lr_factor(s: Schedule, it: int) -> float:
    """Learning-rate multiplier at iteration `it` (0-based): a pure function, so resume is exact."""
    f = 1.0
    if s.type == "multistep":
        f = s.gamma ** sum(1 for m in s.milestones if it >= m)
    elif s.type == "cosine_restarts":
        # BasicSR's CosineAnnealingRestartLR, with `it` as its last_epoch: a cycle covers
        # (start, start + period] (the first one [0, period]), so the restart's own iteration is
        # still at eta_min, and a restart weight scales the span above eta_min.
        start = 0
        weights = s.restart_weights or [1.0] * len(s.periods)
        for period, w in zip(s.periods, weights):
            if it <= start + period:
                t = (it - start) / period
                return _warm(s, it) * (s.eta_min + w * (1 - s.eta_min) * 0.5 * (1 + math.cos(math.pi * t)))
            start += period
        f = s.eta_min
    return _warm(s, it) * f


def _warm(s: Schedule, it: int) -> float:
    return min(1.0, (it + 1) / s.warmup) if s.warmup else 1.0


def _set_lr(opt: torch.optim.Optimizer | None, base: float, factor: float) -> float:
    if opt is not None:
        for group in opt.param_groups:
            group["lr"] = base * factor
    return base * factor


# --- data order ------------------------------------------------------------------------------------


class _EpochItems(Dataset):
    """The dataset indexed by (epoch, index) pairs, so one long-lived DataLoader serves every
    epoch: its workers start once, not at each epoch (seconds each where workers are spawned,
    as on Windows and macOS, and a stall while the last batches of an epoch drain)."""

    def __init__(self, dataset: SRDataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        return self.dataset.item(index, epoch)


def data_workers(asked: int) -> int:
    """`data.train.workers`, at most one per CPU this process may use: more only compete for the
    cores (and PyTorch warns at length at every start)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(asked, cpus)


def batches(run: Run) -> Iterator[dict[str, Any]]:
    """Endless batches. The order of each epoch comes from (seed, epoch) and the position is
    counted, so a resumed run sees exactly the batches it would have seen."""
    bs = run.cfg.data.train.batch_size  # per process
    gbs = bs * run.world
    per_epoch = len(run.dataset) // gbs  # >= 1: setup refuses a smaller dataset

    def batch_keys(epoch: int, done: int) -> Iterator[list[tuple[int, int]]]:
        while True:
            g = torch.Generator().manual_seed(seed_for(run.cfg.seed, "order", epoch))
            order = torch.randperm(len(run.dataset), generator=g).tolist()
            for b in range(done, per_epoch):
                # Rank r takes every world-th sample of each global batch: same data as one
                # process with world x batch_size, whatever the number of processes.
                yield [(epoch, i) for i in order[b * gbs : (b + 1) * gbs][run.rank :: run.world]]
            epoch, done = epoch + 1, 0

    # The loader's own generator only seeds its workers; giving it one keeps the global RNG
    # untouched, so where a resumed run creates its loader does not matter.
    loader = DataLoader(
        _EpochItems(run.dataset), batch_sampler=batch_keys(run.epoch, run.batches_done),
        num_workers=data_workers(run.cfg.data.train.workers),
        generator=torch.Generator().manual_seed(seed_for(run.cfg.seed, "workers", run.epoch)),
        pin_memory=run.device.type == "cuda",  # lets train_step's non_blocking copies overlap
    )
    for batch in loader:
        if run.batches_done == per_epoch:  # this batch opens the next epoch
            run.epoch += 1
            run.batches_done = 0
        run.batches_done += 1
        yield batch


# --- one iteration ---------------------------------------------------------------------------------


def _autocast(run: Run):
    return torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None)


def _backward(run: Run, loss: Tensor) -> None:
    (run.scaler.scale(loss) if run.scaler is not None else loss).backward()


def _step(run: Run, opt: torch.optim.Optimizer, params: Any) -> None:
    clip = run.cfg.train.grad_clip
    if clip:
        if run.scaler is not None:
            run.scaler.unscale_(opt)  # clip the true gradients, not the loss-scaled ones
        nn.utils.clip_grad_norm_(params, clip)
    if run.scaler is not None:
        run.scaler.step(opt)
    else:
        opt.step()


def _grads_finite(params: Any) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


def train_step(run: Run, micro_batches: list[dict[str, Any]]) -> dict[str, float] | None:
    """One optimizer step of G (and D) over `accumulate` micro-batches.

    Every loss, and (without a grad scaler, which handles its own) every gradient, is checked
    before either network steps, so a NaN/inf skips the whole iteration: None, with the reason
    in `run.bad_reason`. D's loss uses detached outputs, so computing it before G steps changes
    nothing in the arithmetic.
    """
    cfg, dev = run.cfg, run.device
    use_d = run.net_d is not None and run.iteration >= cfg.train.d_start
    n = len(micro_batches)
    logs: dict[str, float] = {}
    run.opt_g.zero_grad(set_to_none=True)
    if run.opt_d is not None:
        run.opt_d.zero_grad(set_to_none=True)
    fakes = []
    for mb in micro_batches:
        lr = mb["lr"].to(dev, non_blocking=True)
        hr = mb["hr"].to(dev, non_blocking=True)
        if run.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        # Real-ESRGAN sharpens the targets of the pixel and perceptual losses, not the GAN's.
        target = usm_sharpen(hr, *run.target_usm) if run.target_usm is not None else hr
        if run.net_d is not None:
            run.net_d.requires_grad_(False)
        with _autocast(run):
            sr = run.g_train(lr)
            parts: dict[str, Tensor] = {}
            if "pixel" in run.losses:
                parts["pixel"] = run.losses["pixel"](sr.float(), target)
            if "perceptual" in run.losses:
                parts["perceptual"] = run.losses["perceptual"](sr.float(), target)
            if use_d:
                fm = run.losses.get("feature_matching")
                real = None  # D(HR) only where the loss uses it: Real-ESRGAN's plain GAN loss does not
                if run.losses["gan"].relativistic or fm is not None:
                    with discriminator_features(run.net_d, enabled=fm is not None) as real_feats:
                        real = run.net_d(hr)
                    real = [r.detach() for r in real] if isinstance(real, list) else real.detach()
                with discriminator_features(run.net_d, enabled=fm is not None) as fake_feats:
                    fake = run.net_d(sr)
                parts["gan_g"] = run.losses["gan"].generator_loss(real, fake)
                if fm is not None:
                    parts["feature_matching"] = fm(fake_feats, real_feats)
        bad = [k for k, v in parts.items() if not bool(torch.isfinite(v).all())]
        if not _all_ok(run, not bad):
            run.bad_reason = f"NaN/inf {', '.join(bad)} loss" if bad else "NaN/inf loss on another process"
            return None
        _backward(run, sum(parts.values()) / n)
        for k, v in parts.items():
            logs[k] = logs.get(k, 0.0) + float(v.detach()) / n
        fakes.append((hr, sr.detach()))
    if use_d:
        run.net_d.requires_grad_(True)
        d_parts = []
        for hr, sr in fakes:
            with _autocast(run):
                d_loss = run.losses["gan"].discriminator_loss(run.net_d(hr), run.net_d(sr))
            if not _all_ok(run, bool(torch.isfinite(d_loss))):
                run.bad_reason = "NaN/inf gan_d (discriminator) loss"
                return None
            _backward(run, d_loss / n)
            d_parts.append(float(d_loss.detach()) / n)
        average_grads(run, run.net_d)
        logs["gan_d"] = sum(d_parts)
    if run.scaler is None:
        nets = [("generator", run.net_g)] + ([("discriminator", run.net_d)] if use_d else [])
        bad = [name for name, net in nets if not _grads_finite(net.parameters())]
        if not _all_ok(run, not bad):
            run.bad_reason = f"NaN/inf {' and '.join(bad)} gradients" if bad else "NaN/inf gradients on another process"
            return None
    _step(run, run.opt_g, run.net_g.parameters())
    if use_d:
        _step(run, run.opt_d, run.net_d.parameters())
    if run.scaler is not None:
        run.scaler.update()
    if run.net_ema is not None:
        update_ema(run.net_ema, run.net_g, ema_decay(cfg.train.ema, run.iteration, cfg.train.ema_warmup))
    return logs


def ema_decay(decay: float, iteration: int, warmup: bool) -> float:
    """The EMA decay for the update after `iteration` completed steps. With warmup the decay
    ramps as (1 + it) / (10 + it) up to `decay`, so the EMA follows the network early on instead
    of holding on to its initial weights (with 0.999 they still make up 13% after 2000 steps)."""
    return min(decay, (1 + iteration) / (10 + iteration)) if warmup else decay


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * net; buffers copied."""
    e_params = [p for p in ema.parameters()]
    n_params = [p.detach() for p in net.parameters()]
    torch._foreach_lerp_(e_params, n_params, 1.0 - decay)
    for be, bn in zip(ema.buffers(), net.buffers()):
        be.copy_(bn)


# --- validation ------------------------------------------------------------------------------------


def val_pairs(cfg: TrainConfig) -> list[tuple[str, Path, Path | None]]:
    v = cfg.data.val
    assert v is not None
    hr = scan_images(v.hr)
    lr = scan_images(v.lr) if v.lr else {}
    return [(k, p, lr.get(k)) for k, p in hr.items()]


def validate(run: Run) -> dict[str, float]:
    """PSNR/SSIM as papers report them (Y channel, border = scale) plus RGB PSNR; saves
    bicubic | output | HR strips for the first images; tracks the best PSNR.

    The output comes from the same tiled upscaler users run (on a copy of the network, so
    validation leaves the training modules untouched), so large validation images fit in memory
    and the scores are those of the weights as they will be used.
    """
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False  # validation images differ in size: timing each is waste
    try:
        return _validate(run)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def _validate(run: Run) -> dict[str, float]:
    import cv2

    from esrforge.images import read_image, write_image
    from esrforge.infer.upscale import Upscaler
    from esrforge.metrics.evaluate import score_pair
    from esrforge.modelio.detect import LoadedModel

    cfg = run.cfg
    v = cfg.data.val
    assert v is not None
    net = copy.deepcopy(run.net_ema if run.net_ema is not None else run.net_g).eval()
    desc = describe(cfg.generator.arch, "basicsr", run.net_g.hparams(), net, "validation")
    precision = precision_name(run.amp)
    with warnings.catch_warnings():  # a slow precision was warned about when the run started
        warnings.filterwarnings("ignore", message=r"precision \w+: this CPU has no")
        up = Upscaler(LoadedModel(net, desc), device=run.device, precision=precision)
    border = cfg.scale if v.crop_border is None else v.crop_border
    ch = cfg.generator.in_ch
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "psnr_rgb": []}
    run.val_images = []
    out_dir = run.run_dir / "visualization" / f"{run.iteration:08d}"
    for i, (key, hr_path, lr_path) in enumerate(val_pairs(cfg)):
        lr_img = read_image(lr_path) if lr_path is not None else None
        got, lr8, sr8, hr8 = score_pair(up, read_image(hr_path), lr_img, scale=cfg.scale, channels=ch, crop_border=border)
        for k, value in got.items():
            scores[k].append(value)
        h, w = hr8.shape[:2]
        if i < v.save_images:
            bicubic = cv2.resize(lr8, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, -1)
            strip = np.concatenate([bicubic, sr8, hr8], axis=1)[:, :, :3]
            write_image(out_dir / f"{key.replace('/', '_')}.png", strip)
            run.val_images.append((key, strip.astype(np.float32) / 255))
    result = {k: float(np.mean(vals)) for k, vals in scores.items() if vals}
    if result and ("psnr" not in run.best or result["psnr"] > run.best["psnr"]):
        run.best = {"psnr": result["psnr"], "ssim": result["ssim"], "iteration": run.iteration}
    return result


# --- checkpoints -----------------------------------------------------------------------------------


def _state(run: Run) -> dict[str, Any]:
    return {
        "format": "esrforge-training-state-1",
        "config": to_dict(run.cfg),
        "iteration": run.iteration,
        "epoch": run.epoch,
        "batches_done": run.batches_done,
        "best": run.best,
        "net_g": run.net_g.state_dict(),
        "net_ema": run.net_ema.state_dict() if run.net_ema is not None else None,
        "net_d": run.net_d.state_dict() if run.net_d is not None else None,
        "opt_g": run.opt_g.state_dict(),
        "opt_d": run.opt_d.state_dict() if run.opt_d is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def save_checkpoint(run: Run, *, final: bool = False) -> None:
    """models/net_g_<it>.{pth,safetensors}, net_d_<it>.pth, *_latest, training_states/<it>.state;
    each written atomically; only the newest `keep_checkpoints` are kept, plus the final one."""
    it = run.iteration
    mdir, sdir = run.run_dir / MODEL_DIR, run.run_dir / STATE_DIR
    mdir.mkdir(parents=True, exist_ok=True)
    sdir.mkdir(parents=True, exist_ok=True)
    g_sd = {k: v.detach().float().contiguous().cpu() for k, v in run.net_g.state_dict().items()}
    pth: dict[str, Any] = {"params": g_sd}
    use_sd = g_sd
    if run.net_ema is not None:
        use_sd = {k: v.detach().float().contiguous().cpu() for k, v in run.net_ema.state_dict().items()}
        pth["params_ema"] = use_sd
    desc = describe(run.cfg.generator.arch, "basicsr", run.net_g.hparams(), run.net_g, f"net_g_{it}")
    for tag in (str(it), "latest"):
        atomic_save(mdir / f"net_g_{tag}.pth", lambda tmp: torch.save(pth, tmp))
        save_model(mdir / f"net_g_{tag}.safetensors", use_sd, desc)
        if run.net_d is not None:
            d_sd = {k: v.detach().cpu() for k, v in run.net_d.state_dict().items()}
            atomic_save(mdir / f"net_d_{tag}.pth", lambda tmp: torch.save({"params": d_sd}, tmp))
    state = _state(run)
    atomic_save(sdir / f"{it}.state", lambda tmp: torch.save(state, tmp))
    meta = run.run_dir / "final_iteration"
    if final:
        meta.write_text(str(it))
    run.last_checkpoint = it
    _prune(run)


def _prune(run: Run) -> None:
    keep = run.cfg.train.keep_checkpoints
    final_file = run.run_dir / "final_iteration"
    final = int(final_file.read_text()) if final_file.exists() else None
    its = sorted(int(p.stem) for p in (run.run_dir / STATE_DIR).glob("*.state") if p.stem.isdigit())
    for it in its[:-keep]:
        if it == final:
            continue
        (run.run_dir / STATE_DIR / f"{it}.state").unlink(missing_ok=True)
        for name in (f"net_g_{it}.pth", f"net_g_{it}.safetensors", f"net_d_{it}.pth"):
            (run.run_dir / MODEL_DIR / name).unlink(missing_ok=True)


def newest_state(run_dir: Path) -> Path | None:
    states = [p for p in (run_dir / STATE_DIR).glob("*.state") if p.stem.isdigit()]
    return max(states, key=lambda p: int(p.stem)) if states else None


def read_state(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise TrainingError(f"{path}: {'is a folder, not' if Path(path).exists() else 'no such file; expected'} a training state (RUN/training_states/N.state)")
    try:
        state, _ = read_raw(path)  # tensors and plain containers only; a wrong file is named
    except ValueError as e:  # ModelFileError: it starts with the path and says what the file is
        raise TrainingError(f"{e}; expected an esrforge training state") from None
    if not isinstance(state, dict) or state.get("format") != "esrforge-training-state-1":
        raise TrainingError(f"{path}: not an esrforge training state")
    return state


def restore(run: Run, state: dict[str, Any], source: str = "the training state") -> None:
    for what, net, key, hint in (
        ("a discriminator", run.net_d, "net_d", " (to add a discriminator to a trained generator, start a run with pretrain.generator)"),
        ("an EMA of the generator (train.ema)", run.net_ema, "net_ema", ""),
    ):
        if (net is None) != (state.get(key) is None):  # a network added or dropped since the run started
            has = f"has {what} and the config does not" if net is None else f"has no {what.removeprefix('a ').removeprefix('an ')} and the config does"
            raise TrainingError(f"{source}: the run {has}; resume with the config the run started with{hint}")
    try:
        run.net_g.load_state_dict(state["net_g"])
        run.opt_g.load_state_dict(state["opt_g"])
        # which networks the state holds was checked above: it matches the config's
        if run.net_ema is not None:
            run.net_ema.load_state_dict(state["net_ema"])
        if run.net_d is not None:
            run.net_d.load_state_dict(state["net_d"])
            run.opt_d.load_state_dict(state["opt_d"])
    except (RuntimeError, ValueError, KeyError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(e).__name__)
        raise TrainingError(
            f"{source}: does not fit the networks of this config ({detail}); resume with the config the run started with"
        ) from None
    if run.scaler is not None and state["scaler"] is not None:
        run.scaler.load_state_dict(state["scaler"])
    run.iteration, run.epoch, run.batches_done = state["iteration"], state["epoch"], state["batches_done"]
    run.best = state.get("best") or {}
    torch.set_rng_state(state["rng_torch"])
    if state.get("rng_cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    run.last_checkpoint = run.iteration


# --- fit ---------------------------------------------------------------------------------------------


def fit(run: Run, *, quiet: bool = False, on_iteration: Callable[[Run], None] | None = None) -> int:
    """Train until `train.iterations`, or until SIGINT/SIGTERM (then save and return 130)."""
    from tqdm import tqdm

    cfg = run.cfg
    t = cfg.train
    main = run.main
    if main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "config.yml").write_text(dump_config(cfg))

    def request_stop(signum: int, frame: Any) -> None:
        run.stop_requested = True

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    if main and not quiet:  # what `auto` resolved to, before the progress bar
        print(f"{cfg.name}: {run.device} x {run.world} process(es), precision {precision_name(run.amp)}, "
              f"channels_last {'on' if run.channels_last else 'off'}, {len(run.dataset.samples)} training image(s)", file=sys.stderr)
    # A bar on a terminal; in a log file (nohup, a cluster job) one plain line per log_every
    # iterations instead of a stream of carriage-return fragments.
    lines = main and not quiet and not sys.stderr.isatty()
    bar = tqdm(total=t.iterations, initial=run.iteration, disable=quiet or not main or lines, dynamic_ncols=True, unit="it")
    data = batches(run)
    images_per_it = cfg.data.train.batch_size * t.accumulate * run.world
    t0, it0 = time.perf_counter(), run.iteration
    if main:
        trim_log(run.run_dir / "log.jsonl", run.iteration)
    logf = open(run.run_dir / "log.jsonl", "a", encoding="utf-8") if main else None
    tb = open_tensorboard(run) if main and t.tensorboard else None

    def log(rec: dict[str, Any]) -> None:
        if logf is not None:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
        if tb is not None:
            it = rec["iter"]
            for k, v in (rec.get("val") or {}).items():
                tb.add_scalar(f"val/{k}", v, it)
            for k, v in rec.items():
                if k in ("lr", "it_per_s") or (k not in ("iter", "epoch", "images", "val") and isinstance(v, float)):
                    tb.add_scalar(f"train/{k}", v, it)
            if "val" in rec:
                for key, strip in run.val_images:
                    tb.add_image(f"val/{key}", np.clip(strip, 0, 1), it, dataformats="HWC")
            tb.flush()

    try:
        while run.iteration < t.iterations and not _any_stop(run):
            factor = lr_factor(cfg.schedule, run.iteration)
            lr_g = _set_lr(run.opt_g, cfg.optim.generator.lr, factor)
            _set_lr(run.opt_d, cfg.optim.discriminator.lr, factor)
            position = run.epoch, run.batches_done
            error: DatasetError | None = None
            try:
                micro_batches = [next(data) for _ in range(t.accumulate)]
            except DatasetError as e:  # an image that passed the header check but does not decode
                error = e
            if not _all_ok(run, error is None):  # under torchrun every process stops here, together
                run.epoch, run.batches_done = position  # the state resumes before this iteration's batches
                why = data_error_message(error) if error else "another process could not load a training image (its message names it)"
                raise TrainingError(f"{why}; {_save_before_stop(run)}") from None
            logs = train_step(run, micro_batches)
            if logs is None:
                run.bad_steps += 1
                if run.bad_steps >= t.max_bad_steps:
                    last = f"training_states/{run.last_checkpoint}.state" if run.last_checkpoint is not None else "none yet"
                    raise TrainingError(
                        f"iteration {run.iteration + 1} was skipped {run.bad_steps} times in a row (last: {run.bad_reason}); "
                        f"training diverged: lower optim lr{', set train.grad_clip' if not t.grad_clip else ''}"
                        f"{', or use precision fp32' if run.amp is not None else ''}; last good checkpoint: {last}"
                    )
                continue
            run.bad_steps = 0
            run.iteration += 1
            bar.update(1)
            if run.iteration % t.log_every == 0 or run.iteration == t.iterations:
                logs = mean_over_processes(run, logs)  # every process reaches this line: one collective
                rate = (run.iteration - it0) / max(time.perf_counter() - t0, 1e-9)
                log({"iter": run.iteration, "epoch": run.epoch, "images": run.iteration * images_per_it, "lr": lr_g, "it_per_s": rate, **logs})
                bar.set_postfix({"ep": run.epoch, **{k: f"{v:.4g}" for k, v in logs.items()}}, refresh=False)
                if lines:
                    print(progress_line(run.iteration, t.iterations, run.epoch, rate, logs), file=sys.stderr, flush=True)
            # and at the end, so a run's last weights always have their scores
            if main and cfg.data.val is not None and (run.iteration % cfg.data.val.every == 0 or run.iteration == t.iterations):
                res = validate(run)
                log({"iter": run.iteration, "val": res, "best": run.best})
                if not quiet:
                    best = f" (best psnr {run.best['psnr']:.4f} @ {run.best['iteration']})" if run.best else ""
                    tqdm.write(f"val @ {run.iteration}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.items()) + best)
            if main and run.iteration % t.checkpoint_every == 0 and run.iteration < t.iterations:
                save_checkpoint(run)
            if on_iteration is not None:
                on_iteration(run)
    finally:
        bar.close()
        if logf is not None:
            logf.close()
        if tb is not None:
            tb.close()
        for s, h in old.items():
            signal.signal(s, h)
    stopped = run.iteration < t.iterations
    if main:
        save_checkpoint(run, final=not stopped)
    if run.world > 1:
        import torch.distributed as dist

        dist.barrier()  # no process leaves before rank 0 has written the checkpoint
    if stopped:
        if main:
            print(f"stopped at iteration {run.iteration}; to go on: esrforge train --resume {run.run_dir}", file=sys.stderr)
        return 130
    if main and not quiet:
        print(f"done: {run.iteration} iterations; weights: {run.run_dir / MODEL_DIR / f'net_g_{run.iteration}.safetensors'}", file=sys.stderr)
    return 0


def progress_line(it: int, total: int, epoch: int, rate: float, logs: dict[str, float]) -> str:
    """`iter 1000/400000 (0.2%) epoch 3, 2.31 it/s, eta 2d 00:00:00, pixel 0.0123`: for log files."""
    left = (total - it) / rate if rate > 0 else float("inf")
    if math.isfinite(left):
        days, rest = divmod(int(left), 86400)
        eta = (f"{days}d " if days else "") + str(datetime.timedelta(seconds=rest))
    else:
        eta = "?"
    losses = "".join(f", {k} {v:.4g}" for k, v in logs.items())
    return f"iter {it}/{total} ({100 * it / total:.1f}%) epoch {epoch}, {rate:.3g} it/s, eta {eta}{losses}"


def trim_log(path: Path, iteration: int) -> None:
    """Drop log records after `iteration` (and a line torn by a kill): a resumed run redoes
    those iterations, and a fresh start in a folder whose first run failed logs from 1 again."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    keep = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("iter"), int) and rec["iter"] <= iteration:
            keep.append(line)
    if len(keep) != len(lines):
        atomic_save(path, lambda tmp: Path(tmp).write_text("".join(f"{ln}\n" for ln in keep), encoding="utf-8"))


def mean_over_processes(run: Run, logs: dict[str, float]) -> dict[str, float]:
    """Loss values averaged over all processes: each saw its own share of the batch."""
    if run.world == 1 or not logs:
        return logs
    import torch.distributed as dist

    keys = sorted(logs)
    t = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=run.device)
    dist.all_reduce(t)
    return {k: float(v) / run.world for k, v in zip(keys, t.tolist())}


def data_error_message(e: Exception) -> str:
    """A DatasetError's own message, also when a DataLoader worker re-raised it with its traceback."""
    msg = str(e)
    if "Original Traceback" in msg:
        last = [ln for ln in msg.splitlines() if ln.strip()][-1]
        msg = last.split("DatasetError: ", 1)[-1]
    return msg


def _save_before_stop(run: Run) -> str:
    """Save the state at the current iteration, which every process has finished (rank 0 writes;
    the others wait for it, since torchrun stops the rest once one process exits with an error)."""
    if run.main and run.iteration > 0 and run.last_checkpoint != run.iteration:
        save_checkpoint(run)
    if run.world > 1:
        import torch.distributed as dist

        dist.barrier()
    if run.iteration == 0:
        return "no iteration was done yet"
    return f"fix or replace the file, then continue with --resume (state saved at iteration {run.iteration})"


def open_tensorboard(run: Run) -> Any:
    """A SummaryWriter in RUN_DIR/tensorboard; TensorBoard is an optional extra, imported only here."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingError("train.tensorboard needs the tensorboard package: pip install 'esrforge[tensorboard]'") from None
    return SummaryWriter(log_dir=str(run.run_dir / "tensorboard"))


def _any_stop(run: Run) -> bool:
    """A stop asked of any process (Ctrl-C reaches them at different moments) stops all of
    them at the same iteration."""
    if run.world == 1:
        return run.stop_requested
    import torch.distributed as dist

    t = torch.tensor([1 if run.stop_requested else 0], device=run.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def check_resume(state: dict[str, Any], state_path: Path, run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse a resume that would lose work or cannot load: a state older than the run's newest
    (its later checkpoints, log and *_latest files would be overwritten), or networks changed."""
    newest = newest_state(run_dir)
    it = state["iteration"]
    if newest is not None and int(newest.stem) > it:
        raise TrainingError(
            f"{state_path} is iteration {it}, but {run_dir} holds a newer state ({newest.name}): resuming from it would "
            f"overwrite iterations {it + 1}-{newest.stem} (log, *_latest); --resume {run_dir} continues the newest, or move "
            f"the newer states out of {run_dir / STATE_DIR} to go on from {it}"
        )
    nets = [c for c in config_changes(state["config"], to_dict(cfg)) if c.startswith(("generator.", "discriminator."))]
    if nets:
        raise TrainingError(f"{state_path}: the networks differ from the run's ({'; '.join(nets)}); "
                            f"resume with the config the run started with, or with --resume {run_dir} alone")


def config_changes(old: Any, new: Any, path: str = "") -> list[str]:
    """`key: old -> new` for each value that differs between two resolved configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in dict.fromkeys([*old, *new]) for c in config_changes(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def train(
    config: Path | str | dict[str, Any] | TrainConfig | None,
    *,
    runs_dir: Path | None = None,
    resume: Path | bool = False,
    overrides: list[str] | None = None,
    quiet: bool = False,
    on_iteration: Callable[[Run], None] | None = None,
) -> int:
    """`esrforge train`: start or resume a run. Returns the exit code.

    `config`: a YAML file, a dict of config data, or a TrainConfig from `load_config`."""
    if isinstance(config, TrainConfig):
        config = to_dict(config)
    state, state_path = None, None
    if isinstance(resume, Path) and resume.is_dir():  # --resume RUN: the run folder's newest state
        newest = newest_state(resume)
        if newest is None:
            raise TrainingError(f"--resume: {resume} holds no training state ({STATE_DIR}/N.state); give a run folder or a .state file")
        resume = newest
    if isinstance(resume, Path):
        state, state_path = read_state(resume), resume
        # --set applies to the state's own config too (to extend a finished run: train.iterations)
        cfg = load_config(config if config is not None else state["config"], overrides, name=str(resume))
    else:
        if config is None:
            raise TrainingError("give a CONFIG file, or --resume PATH to a training state")
        cfg = load_config(config, overrides)
    if state is not None and config is not None and state["config"].get("name") != cfg.name:
        raise TrainingError(f"{resume} belongs to run {state['config'].get('name')!r}, but {config} names {cfg.name!r}")
    if runs_dir is None and state_path is not None and state_path.resolve().parent.name == STATE_DIR:
        run_dir = state_path.resolve().parent.parent  # --resume RUN/training_states/N.state continues in RUN
    else:
        run_dir = (runs_dir or Path("runs")) / cfg.name
    if resume is True:
        path = newest_state(run_dir)
        if path is None:
            raise TrainingError(f"--resume: no training state in {run_dir / STATE_DIR}")
        state, state_path = read_state(path), path
    elif state is None and newest_state(run_dir) is not None:
        raise TrainingError(f"{run_dir} already holds a run; use --resume to continue it, or another name")
    if state is not None:
        check_resume(state, state_path, run_dir, cfg)
        if state["iteration"] >= cfg.train.iterations:  # nothing to train: leave every file as it is
            print(f"{run_dir}: already finished at iteration {state['iteration']} (train.iterations {cfg.train.iterations}); "
                  f"--set train.iterations=N to go on", file=sys.stderr)
            return 0
    d_size = None
    if state is not None and isinstance(state.get("net_d"), dict) and "conv0_0.weight" in state["net_d"]:
        d_size = 256 if "conv5_0.weight" in state["net_d"] else 128  # the VGG discriminator's own layout
    run = setup(cfg, run_dir, log=(lambda m: None) if quiet else print, resuming=state is not None, d_input_size=d_size)
    if state is not None:
        restore(run, state, str(state_path))
        if not quiet:
            print(f"resumed at iteration {run.iteration} (epoch {run.epoch})", file=sys.stderr)
            changes = config_changes(state["config"], to_dict(cfg))
            if changes and run.main:  # the run is steered by them from here on: say which
                print(f"config changes since the state was saved: {'; '.join(changes)}", file=sys.stderr)
    try:
        return fit(run, quiet=quiet, on_iteration=on_iteration)
    finally:
        if run.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


__all__ = ["Run", "TrainingError", "fit", "lr_factor", "setup", "train", "train_step", "validate"]
