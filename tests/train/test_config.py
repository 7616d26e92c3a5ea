import json
from pathlib import Path

import pytest

from esrforge.cli import main
from esrforge.train.config import TrainConfig, load_config
from esrforge.train.schema import ConfigError

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yml"))


def test_there_are_example_configs():
    names = {p.stem for p in CONFIGS}
    assert {"esrgan_psnr_x4", "esrgan_gan_x4", "realesrgan_x4", "compact_x4", "finetune", "photo_x4", "photo_x4_gan"} <= names


def test_bundled_model_configs_match_the_bundled_models():
    """Each bundled model names the committed config that reproduces it, with the same network."""
    from esrforge.modelio import BUNDLED, load_model

    root = Path(__file__).parents[2]
    for m in BUNDLED:
        cfg = load_config(root / m.config)
        assert cfg.name == m.name
        desc = load_model(m.name).descriptor
        assert (desc.arch, desc.scale) == (cfg.generator.arch, cfg.scale)
        assert {k: desc.hparams[k] for k in ("num_feat", "num_conv", "activation")} == {
            "num_feat": cfg.generator.num_feat, "num_conv": cfg.generator.num_conv, "activation": cfg.generator.activation}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_example_config_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig) and cfg.name and cfg.scale == 4


def test_esrgan_gan_config_is_the_published_recipe():
    cfg = load_config(next(p for p in CONFIGS if p.stem == "esrgan_gan_x4"))
    assert cfg.discriminator.arch == "vgg" and cfg.losses.gan.relativistic and cfg.losses.gan.weight == 0.005
    assert cfg.losses.perceptual.layers == {"conv5_4": 1.0} and cfg.losses.perceptual.pre_activation
    assert cfg.losses.pixel.weight == 0.01 and cfg.schedule.milestones == [50000, 100000, 200000, 300000]


def _minimal(**extra):
    return {"name": "t", "scale": 4, "data": {"train": {"hr": "x"}}, "generator": {"arch": "compact"}} | extra


def test_every_problem_is_reported_with_its_path():
    bad = _minimal(
        scale=3,
        data={"train": {"hr": "x", "hr_sise": 64, "batch_size": 0}},
        generator={"arch": "rrdbnet", "num_conv": 4},
        losses={"gan": {"type": "vanila"}},
        schedule={"type": "cosine_restarts"},
    )
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    msg = str(e.value)
    for expect in (
        "scale: 3 is not allowed (allowed: 1, 2, 4, 8)",
        "data.train.hr_sise: unknown key (allowed: hr, lr, degradation, hr_size,",
        "data.train.batch_size: 0 is outside the allowed range [1, ]",
        "generator.num_conv: not a rrdbnet hyperparameter (allowed: num_feat, num_block, num_grow_ch)",
        "losses.gan.type: 'vanila' is not allowed (allowed: vanilla, lsgan, hinge)",
        "schedule.periods: required for cosine_restarts",
    ):
        assert expect in msg, expect
    assert len(e.value.problems) == 6


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="losses.gan: needs a discriminator section"):
        load_config(_minimal(losses={"gan": {}}))
    with pytest.raises(ConfigError, match="losses.feature_matching: needs losses.gan"):
        load_config(_minimal(losses={"feature_matching": {"weight": 1.0}}))
    with pytest.raises(ConfigError, match="hr_size: 30 is not a multiple of scale 4"):
        load_config(_minimal(data={"train": {"hr": "x", "hr_size": 30}}))
    with pytest.raises(ConfigError, match="name: required"):
        load_config({"scale": 4, "data": {"train": {"hr": "x"}}, "generator": {"arch": "compact"}})


def test_overrides_and_defaults():
    cfg = load_config(_minimal(), ["train.iterations=12", "data.train.hr=[a, b]", "optim.generator.lr=0.5"])
    assert cfg.train.iterations == 12 and cfg.data.train.hr == ["a", "b"] and cfg.optim.generator.lr == 0.5
    assert cfg.train.ema == 0.999 and cfg.losses.pixel.type == "l1"
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(_minimal(), ["iterations"])


def test_print_config_and_schema(tmp_path, capsys):
    assert main(["train", str(CONFIGS[0]), "--print-config", "--set", "train.iterations=7"]) == 0
    out = capsys.readouterr().out
    assert "iterations: 7" in out and "ema: 0.999" in out
    assert main(["train", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "scale", "data", "generator"}
    gen = schema["properties"]["generator"]["properties"]["arch"]
    assert gen["enum"] == ["rrdbnet", "compact"]


def test_bad_config_file_exit_code(tmp_path, capsys):
    p = tmp_path / "c.yml"
    p.write_text("name: x\nscale: 5\n")
    assert main(["train", str(p), "--print-config"]) == 1
    err = capsys.readouterr().err
    assert "scale: 5 is not allowed" in err and "data: required" in err
