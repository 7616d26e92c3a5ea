"""The training config: one YAML file, typed, with every default visible in --print-config."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from esrforge.train.schema import ConfigError, bounded, json_schema, parse, to_dict
from esrforge.yamlfile import YamlError, load_yaml

Problems = list[tuple[str, str]]


@dataclass
class TrainData:
    """Training images."""

    hr: list[str]
    lr: list[str] | None = None
    degradation: Any = None  # preset name, pipeline YAML path, or inline steps; None = bicubic
    hr_size: int = bounded(128, lo=4, doc="training crop on the HR side (LR crop = hr_size / scale)")
    batch_size: int = bounded(16, lo=1)
    workers: int = bounded(4, lo=0, doc="DataLoader worker processes")
    channels: Literal[1, 3, 4] = 3
    augment: bool | Literal["hflip"] = bounded(
        True, doc="random flips and 90-degree turns (BasicSR's use_hflip + use_rot); hflip: horizontal flips only (Real-ESRGAN); false: none"
    )
    repeat: int = bounded(1, lo=1, doc="times each image is drawn per epoch, each with its own random crop (small sets of large images)")

    def check(self) -> Problems:
        if self.degradation is None:
            return []
        from esrforge.data.pipeline import load_pipeline  # imports torch: only when a pipeline is set

        # Built exactly as training builds it (a relative file path is from the current directory),
        # so a typo stops the run here, with its field path, and not at the first batch.
        try:
            load_pipeline(self.degradation)
        except (ValueError, OSError) as e:  # PipelineError, or a file that cannot be read
            d = self.degradation
            missing = isinstance(d, str) and not Path(d).is_absolute() and not Path(d).exists()
            return [("degradation", str(e) + (f" (a relative path is from the current directory, {Path.cwd()})" if missing else ""))]
        return []


@dataclass
class ValData:
    """Validation images: HR, and LR (missing -> MATLAB bicubic of HR)."""

    hr: list[str]
    lr: list[str] | None = None
    every: int = bounded(5000, lo=1, doc="iterations between validations")
    crop_border: int | None = bounded(None, lo=0, doc="pixels cropped for PSNR/SSIM; default = scale")
    save_images: int = bounded(4, lo=0, doc="side-by-side images saved per validation")


@dataclass
class Data:
    train: TrainData
    val: ValData | None = None


def _foreign(cfg: Any, allowed: tuple[str, ...], what: str) -> Problems:
    """Hyperparameters set in the config that the chosen architecture does not take."""
    optional = [f.name for f in fields(cfg) if f.default is None]
    return [(k, f"not a {what} (allowed: {', '.join(allowed)})") for k in optional if getattr(cfg, k) is not None and k not in allowed]


_GEN_KEYS = {"rrdbnet": ("num_feat", "num_block", "num_grow_ch"), "compact": ("num_feat", "num_conv", "activation")}


@dataclass
class GeneratorCfg:
    """The generator; hyperparameters not given take the architecture's defaults."""

    arch: Literal["rrdbnet", "compact"]
    num_feat: int | None = bounded(None, lo=1)
    num_block: int | None = bounded(None, lo=1)
    num_grow_ch: int | None = bounded(None, lo=1)
    num_conv: int | None = bounded(None, lo=0)
    activation: Literal["prelu", "relu", "leakyrelu"] | None = None
    in_ch: int = bounded(3, lo=1)
    out_ch: int = bounded(3, lo=1)

    def check(self) -> Problems:
        return _foreign(self, _GEN_KEYS[self.arch], f"{self.arch} hyperparameter")

    def hparams(self, scale: int) -> dict[str, Any]:
        h = {k: getattr(self, k) for k in _GEN_KEYS[self.arch] if getattr(self, k) is not None}
        return h | {"in_ch": self.in_ch, "out_ch": self.out_ch, "scale": scale}


_DISC_KEYS = {
    "vgg": ("num_feat",),
    "patchgan": ("num_feat", "n_layers", "spectral_norm"),
    "multiscale_patchgan": ("num_feat", "n_layers", "num_D", "spectral_norm"),
    "unet": ("num_feat", "skip_connection"),
}


@dataclass
class DiscriminatorCfg:
    """The discriminator; absent = PSNR-oriented training."""

    arch: Literal["vgg", "patchgan", "multiscale_patchgan", "unet"]
    num_feat: int | None = bounded(None, lo=1)
    n_layers: int | None = bounded(None, lo=1)
    num_D: int | None = bounded(None, lo=1)
    spectral_norm: bool | None = None
    skip_connection: bool | None = None

    def check(self) -> Problems:
        return _foreign(self, _DISC_KEYS[self.arch], f"{self.arch} discriminator hyperparameter")

    def hparams(self, in_ch: int, hr_size: int) -> dict[str, Any]:
        extra = {"input_size": hr_size} if self.arch == "vgg" else {}  # BasicSR's 128 / 256 px layouts
        return {k: getattr(self, k) for k in _DISC_KEYS[self.arch] if getattr(self, k) is not None} | {"in_ch": in_ch} | extra


@dataclass
class Pretrain:
    generator: str | None = None
    discriminator: str | None = None
    strict: bool = bounded(True, doc="false: load matching tensors and list the rest")


@dataclass
class PixelLossCfg:
    type: Literal["l1", "mse", "charbonnier"] = "l1"
    weight: float = bounded(1.0, lo=0)


@dataclass
class PerceptualLossCfg:
    layers: dict[str, float] = bounded({"conv5_4": 1.0})
    weight: float = bounded(1.0, lo=0)
    criterion: Literal["l1", "mse"] = "l1"
    pre_activation: bool = True
    vgg_weights: str | None = None
    autocast: bool = bounded(
        False, doc="run VGG19 in the training's mixed precision: faster, but near convergence its gradient strays from fp32's (default: VGG19 in fp32)"
    )

    def check(self) -> Problems:
        import torch

        from esrforge.losses.perceptual import vgg19_layers

        with torch.device("meta"):  # the layer names only: no weights allocated
            _, names = vgg19_layers()
        if not self.layers:
            return [("layers", "at least one layer is needed")]
        last = {n[4]: n[4:] for n in names if n.startswith("conv")}  # block -> its last conv, "5_4"
        ranges = ", ".join(f"{b}_1..{i}" for b, i in last.items())
        allowed = f"convB_I or reluB_I with B_I in {ranges}; pool1..pool{len(last)}"
        return [(f"layers.{k}", f"not a VGG19 layer (allowed: {allowed})") for k in self.layers if k not in names]


@dataclass
class GanLossCfg:
    # No defaults for these two: the published recipes differ in both (ESRGAN: relativistic,
    # 5e-3; Real-ESRGAN: standard, 0.1), and a config that says neither gets neither.
    relativistic: bool = bounded(doc="true: ESRGAN's relativistic average GAN (weight 5e-3); false: the standard GAN (Real-ESRGAN: weight 0.1)")
    weight: float = bounded(lo=0)
    type: Literal["vanilla", "lsgan", "hinge"] = "vanilla"


@dataclass
class FeatureMatchingCfg:
    weight: float = bounded(1.0, lo=0, doc="L1 between the discriminator's hidden features on HR and SR (pix2pixHD)")


@dataclass
class Losses:
    pixel: PixelLossCfg | None = field(default_factory=PixelLossCfg)
    perceptual: PerceptualLossCfg | None = None
    gan: GanLossCfg | None = None
    feature_matching: FeatureMatchingCfg | None = None


@dataclass
class OptimCfg:
    type: Literal["adam", "adamw"] = "adam"
    lr: float = bounded(1e-4, lo=0)
    betas: tuple[float, float] = bounded((0.9, 0.99), lo=0, hi=1, open_hi=True)  # torch refuses a beta of 1
    weight_decay: float = bounded(0.0, lo=0)


@dataclass
class Optim:
    generator: OptimCfg = field(default_factory=OptimCfg)
    discriminator: OptimCfg = field(default_factory=OptimCfg)


@dataclass
class Schedule:
    """Learning-rate schedule, applied to both optimizers."""

    type: Literal["constant", "multistep", "cosine_restarts"] = "constant"
    milestones: list[int] = bounded([], lo=1, doc="multistep: iterations where lr *= gamma")
    gamma: float = bounded(0.5, lo=0, doc="multistep: lr multiplier at each milestone")
    periods: list[int] = bounded([], lo=1, doc="cosine_restarts: length of each cycle")
    restart_weights: list[float] = bounded([], lo=0, doc="cosine_restarts: lr multiplier at each restart")
    eta_min: float = bounded(1e-7, lo=0, doc="cosine_restarts: lr multiplier at the bottom of each cycle")
    warmup: int = bounded(0, lo=0, doc="iterations of linear warmup (every type)")

    def check(self) -> Problems:
        out: Problems = []
        # A key of another type would be silently ignored. Resolved configs (--print-config,
        # training states) carry every key, so only values that differ from the default count.
        mine = _SCHEDULE_KEYS[self.type] + ("warmup",)
        default = Schedule()
        for kind, keys in _SCHEDULE_KEYS.items():
            for k in keys:
                if k not in mine and getattr(self, k) != getattr(default, k):
                    allowed = f"allowed with {self.type}: {', '.join(mine)}"
                    out.append((k, f"a {kind} key, not used by type {self.type} ({allowed})"))
        if self.type == "cosine_restarts":
            if not self.periods:
                out.append(("periods", "required for cosine_restarts"))
            elif self.restart_weights and len(self.restart_weights) != len(self.periods):
                out.append(("restart_weights", f"needs one weight per period ({len(self.periods)})"))
        if self.type == "multistep" and any(a >= b for a, b in zip(self.milestones, self.milestones[1:])):
            out.append(("milestones", f"{self.milestones} must be strictly increasing"))
        return out


_SCHEDULE_KEYS = {
    "constant": (),
    "multistep": ("milestones", "gamma"),
    "cosine_restarts": ("periods", "restart_weights", "eta_min"),
}


@dataclass
class TrainLoop:
    iterations: int = bounded(400_000, lo=1)
    ema: float | None = bounded(0.999, lo=0, hi=1, doc="EMA decay of the generator; null = off")
    ema_warmup: bool = bounded(True, doc="ramp the EMA decay as (1 + it) / (10 + it) up to `ema`; false = BasicSR's fixed decay")
    checkpoint_every: int = bounded(5000, lo=1)
    keep_checkpoints: int = bounded(3, lo=1, doc="older checkpoints are deleted; the final one is kept")
    log_every: int = bounded(100, lo=1)
    grad_clip: float | None = bounded(None, lo=0)
    accumulate: int = bounded(1, lo=1, doc="gradient accumulation steps per iteration")
    d_start: int = bounded(0, lo=0, doc="iteration at which the discriminator starts")
    max_bad_steps: int = bounded(5, lo=1, doc="consecutive NaN/inf losses before the run stops")
    channels_last: bool | Literal["auto"] = bounded(
        "auto", doc="auto: on with half-precision autocast or CUDA; off for fp32 on CPU, where its backward is slower"
    )
    sharpen_hr: float | Literal["auto"] = bounded(
        "auto", lo=0, doc="USM amount on the pixel and perceptual losses' HR targets; auto: the fixed sharpen step "
        "the degradation pipeline opens with (realesrgan: 0.5, as Real-ESRGAN trains towards the image it degrades), else 0"
    )
    tensorboard: bool = bounded(False, doc="also log to RUN_DIR/tensorboard (needs esrforge[tensorboard])")


@dataclass
class TrainConfig:
    """An esrforge training run."""

    name: str
    scale: Literal[1, 2, 4, 8]
    data: Data
    generator: GeneratorCfg
    seed: int = bounded(0, lo=0, hi=2**63 - 1, doc="every random draw (data order, crops, degradations, weights) follows from it")
    device: str = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    pretrain: Pretrain | None = None
    discriminator: DiscriminatorCfg | None = None
    losses: Losses = field(default_factory=Losses)
    optim: Optim = field(default_factory=Optim)
    schedule: Schedule = field(default_factory=Schedule)
    train: TrainLoop = field(default_factory=TrainLoop)

    def check(self) -> Problems:
        out: Problems = []
        # The run folder is runs/<name>: one folder, never a path out of runs/.
        if not self.name or self.name in (".", "..") or any(c in self.name for c in "/\\"):
            allowed = "a non-empty name without / or \\, not . or .."
            out.append(("name", f"{self.name!r} is not a single folder name (allowed: {allowed})"))
        if not re.fullmatch(r"auto|cpu(:0)?|cuda(:\d+)?|mps", self.device):
            out.append(("device", f"{self.device!r} is not allowed (allowed: auto, cpu, cuda, cuda:N, mps)"))
        t, g = self.data.train, self.generator
        # the x1/x2 RRDBNet pixel-unshuffles its input by k: its LR crop must divide evenly
        k = {1: 4, 2: 2}.get(self.scale, 1) if g.arch == "rrdbnet" else 1  # archs.rrdbnet.unshuffle_factor_for
        if t.hr_size % self.scale:
            out.append(("data.train.hr_size", f"{t.hr_size} is not a multiple of scale {self.scale}"))
        elif (t.hr_size // self.scale) % k:
            out.append(("data.train.hr_size", f"{t.hr_size} gives a {t.hr_size // self.scale}-pixel LR crop, which the "
                        f"x{self.scale} RRDBNet cannot pixel-unshuffle by {k} (allowed: multiples of {self.scale * k})"))
        for key in ("in_ch", "out_ch"):  # the dataset reads LR and HR with data.train.channels
            if getattr(g, key) != t.channels:
                out.append((f"generator.{key}", f"{getattr(g, key)} does not match data.train.channels {t.channels} "
                            "(the training images are read with that many channels)"))
        if self.losses.gan is not None and self.discriminator is None:
            out.append(("losses.gan", "needs a discriminator section"))
        if self.discriminator is not None and self.losses.gan is None:
            out.append(("discriminator", "needs losses.gan (the discriminator is only used by the GAN loss)"))
        if self.losses.feature_matching is not None and self.losses.gan is None:
            out.append(("losses.feature_matching", "needs losses.gan and a discriminator (it compares the discriminator's features)"))
        if all(getattr(self.losses, k) is None for k in ("pixel", "perceptual", "gan")):
            out.append(("losses", "at least one of pixel, perceptual, gan is needed"))
        return out


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None, *, name: str = "config") -> TrainConfig:
    """Read and validate a config (file or dict); `overrides` are `a.b.c=value` (YAML values).
    `name` is what errors call a dict source (a training state's path, say)."""
    if isinstance(source, dict):
        data = copy.deepcopy(source)  # --set edits nested sections: never the caller's
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError([f"no such config file: {path}"], str(path))
        try:
            data = load_yaml(path.read_text(encoding="utf-8"))
        except YamlError as e:
            raise ConfigError([str(e)], str(path)) from None
        except UnicodeDecodeError:
            raise ConfigError(["not a text file (a YAML config is UTF-8 text)"], str(path)) from None
        name = str(path)
    if data is not None and not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping of keys (name: ..., scale: ...), got a {type(data).__name__}"], name)
    data = dict(data or {})
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError([f"--set {item!r}: expected key.path=value"], name)
        try:
            value = load_yaml(raw)
        except YamlError as e:
            raise ConfigError([f"--set {item!r}: the value is {e}"], name) from None
        _set(data, key.strip(), value)
    _generator_from_pretrain(data, name)
    try:
        return parse(TrainConfig, data, name)
    except ConfigError as e:
        # A problem in a value --set put there is the command line's, not the file's.
        keys = [item.partition("=")[0].strip() for item in overrides or []]
        mine = [f"--set {p}" if any(p == k or p.startswith((f"{k}:", f"{k}.", f"{k}[")) for k in keys) else p for p in e.problems]
        if mine == e.problems:
            raise
        raise ConfigError(mine, name) from None


def _generator_from_pretrain(data: dict[str, Any], name: str) -> None:
    """A config that leaves `generator` out but names `pretrain.generator` gets the file's
    architecture and sizes, read from its tensors as `esrforge info` reads them: fine-tuning
    a model needs no hand-copied hyperparameters."""
    pre = data.get("pretrain")
    path = pre.get("generator") if isinstance(pre, dict) else None
    if "generator" in data or not isinstance(path, str):
        return
    from esrforge.modelio import load_model  # imports torch: only for such a config

    try:
        d = load_model(path).descriptor
    except (ValueError, OSError) as e:  # ModelFileError names the file and what it is
        raise ConfigError([f"pretrain.generator: {e} (the generator section, left out, is read from this file)"], name) from None
    data["generator"] = {"arch": d.arch, **{k: d.hparams[k] for k in _GEN_KEYS[d.arch]}, "in_ch": d.in_ch, "out_ch": d.out_ch}


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def config_schema() -> dict[str, Any]:
    return json_schema(TrainConfig)
