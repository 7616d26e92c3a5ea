import json
from pathlib import Path

import pytest
import yaml

from esrforge.cli import main
from esrforge.train.config import TrainConfig, config_schema, dump_config, load_config
from esrforge.train.schema import ConfigError

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yml"))


def test_there_are_example_configs():
    names = {p.stem for p in CONFIGS}
    assert {"esrgan_psnr_x4", "esrgan_gan_x4", "realesrnet_x4", "realesrgan_x4", "compact_x4", "finetune", "photo_x4", "photo_x4_gan"} <= names


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


@pytest.mark.parametrize("name", ["esrgan_psnr_x4", "esrgan_gan_x4", "realesrnet_x4", "realesrgan_x4"])
def test_published_recipes_keep_basicsr_fixed_ema_decay(name):
    """BasicSR's model_ema applies 0.999 from the first step; esrforge's warmup is its own default."""
    cfg = load_config(next(p for p in CONFIGS if p.stem == name))
    assert cfg.train.ema == 0.999 and cfg.train.ema_warmup is False


def _minimal(**extra):
    return {"name": "t", "scale": 4, "data": {"train": {"hr": "x"}}, "generator": {"arch": "compact"}} | extra


def test_every_problem_is_reported_with_its_path():
    bad = _minimal(
        scale=3,
        data={"train": {"hr": "x", "hr_sise": 64, "batch_size": 0}},
        generator={"arch": "rrdbnet", "num_conv": 4},
        losses={"gan": {"type": "vanila", "relativistic": True, "weight": 5e-3}},
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
        load_config(_minimal(losses={"gan": {"relativistic": True, "weight": 5e-3}}))
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
    assert "scale: 5 is not allowed" in err and "data: required (a section with train)" in err
    assert "generator: required (a section with arch)" in err


@pytest.mark.parametrize("content, says", [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file"),
    (b"- a\n- b\n", "the top level must be a mapping of keys"),
    (b"name: x\n  bad: [\n", "not valid YAML (line 2, column 6: mapping values are not allowed here)"),
    (b"name: x\nscale: 4\nname: y\n", "not valid YAML (line 3, column 1: duplicate key 'name')"),
    (b"? [a]\n: b\n", "not valid YAML (line 1, column 3: found unhashable key)"),
])
def test_a_file_that_is_no_config_is_named_in_one_line(tmp_path, capsys, content, says):
    p = tmp_path / "c.yml"
    p.write_bytes(content)
    assert main(["train", str(p), "--print-config"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"esrforge train: error: {p}: ") and says in err and len(err.splitlines()) == 1


def _schema_errors(s, v, path="config"):
    """The JSON Schema keywords json_schema emits, checked without jsonschema (not a dependency);
    a keyword this does not know fails the test rather than being skipped."""
    known = {"type", "properties", "additionalProperties", "required", "enum", "anyOf", "items", "prefixItems",
             "minItems", "maxItems", "minimum", "maximum", "exclusiveMaximum", "description", "default", "$schema"}
    assert set(s) <= known, f"{path}: unchecked schema keywords {set(s) - known}"
    if "anyOf" in s and all(_schema_errors(m, v, path) for m in s["anyOf"]):
        return [f"{path}: {v!r} matches none of {s['anyOf']}"]
    t = s.get("type")
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    ok = {"object": isinstance(v, dict), "array": isinstance(v, list), "string": isinstance(v, str), "boolean": isinstance(v, bool),
          "null": v is None, "number": number, "integer": number and v == int(v), None: True}[t]
    if not ok:
        return [f"{path}: {v!r} is not {t}"]
    if "enum" in s and not any(v == e and isinstance(v, bool) == isinstance(e, bool) for e in s["enum"]):
        return [f"{path}: {v!r} not in {s['enum']}"]
    if number and (v < s.get("minimum", v) or v > s.get("maximum", v) or v >= s.get("exclusiveMaximum", v + 1)):
        return [f"{path}: {v!r} out of bounds"]
    errs = []
    if isinstance(v, dict):
        errs += [f"{path}.{k}: required" for k in s.get("required", []) if k not in v]
        for k, x in v.items():
            sub = s.get("properties", {}).get(k, s.get("additionalProperties", {}))
            errs += [f"{path}.{k}: not allowed"] if sub is False else _schema_errors(sub, x, f"{path}.{k}")
    if isinstance(v, list):
        if not s.get("minItems", 0) <= len(v) <= s.get("maxItems", len(v)):
            return [f"{path}: {len(v)} items"]
        prefix = s.get("prefixItems", [])
        for i, x in enumerate(v):
            errs += _schema_errors(prefix[i] if i < len(prefix) else s.get("items", {}), x, f"{path}[{i}]")
    return errs


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_example_config_matches_the_json_schema(path):
    assert _schema_errors(config_schema(), yaml.safe_load(path.read_text(encoding="utf-8"))) == []


def test_the_schema_takes_one_value_exactly_where_the_parser_does():
    props = config_schema()["properties"]
    string, strings = {"type": "string"}, {"type": "array", "items": {"type": "string"}}
    train = props["data"]["properties"]["train"]["properties"]
    assert train["hr"] == {"anyOf": [string, strings]}
    assert train["lr"]["anyOf"] == [string, strings, {"type": "null"}]  # X | None: flat, not nested
    assert props["data"]["properties"]["val"]["anyOf"][0]["properties"]["hr"] == {"anyOf": [string, strings]}
    one = {"type": "integer", "minimum": 1}
    assert props["schedule"]["properties"]["periods"]["anyOf"] == [one, {"type": "array", "items": one}]
    beta = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
    assert props["optim"]["properties"]["generator"]["properties"]["betas"]["prefixItems"] == [beta, beta]
    # ... and the parser agrees: one value is a list of one; a pair is never one value
    cfg = load_config(_minimal(data={"train": {"hr": "x", "lr": "y"}, "val": {"hr": "v"}}, schedule={"type": "multistep", "milestones": 10}))
    assert (cfg.data.train.hr, cfg.data.train.lr, cfg.data.val.hr, cfg.schedule.milestones) == (["x"], ["y"], ["v"], [10])
    with pytest.raises(ConfigError, match=r"optim.generator.betas: expected \[float, float\], got 0.9"):
        load_config(_minimal(optim={"generator": {"betas": 0.9}}))
    schema = config_schema()
    assert _schema_errors(schema, _minimal(data={"train": {"hr": "x"}, "val": {"hr": ["v"]}})) == []
    assert _schema_errors(schema, _minimal(data={"train": {"hr": 5}})) == ["config.data.train.hr: 5 matches none of " + str([string, strings])]
    assert _schema_errors(schema, _minimal(optim={"generator": {"betas": [1.0, 0.9]}})) == ["config.optim.generator.betas[0]: 1.0 out of bounds"]


def test_printed_configs_load_again():
    """--print-config (and a training state) writes every key, defaults included: they must not trip the checks."""
    for path in CONFIGS:
        cfg = load_config(path)
        assert load_config(yaml.safe_load(dump_config(cfg))) == cfg


@pytest.mark.parametrize("device", ["gpu", "cuda0", "cuda:x", "CPU", "cpu:1", ""])
def test_device_is_checked(device):
    with pytest.raises(ConfigError) as e:
        load_config(_minimal(device=device))
    assert e.value.problems == [f"device: {device!r} is not allowed (allowed: auto, cpu, cuda, cuda:N, mps)"]


def test_device_forms():
    for device in ("auto", "cpu", "cpu:0", "cuda", "cuda:1", "mps"):  # checked, not resolved: no GPU needed
        assert load_config(_minimal(device=device)).device == device


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs", "a\\b"])
def test_name_is_one_folder(name):
    with pytest.raises(ConfigError) as e:
        load_config(_minimal(name=name))
    assert e.value.problems == [f"name: {name!r} is not a single folder name (allowed: a non-empty name without / or \\, not . or ..)"]
    assert load_config(_minimal(name="my run.v2")).name == "my run.v2"


def _degradation(value):
    return _minimal(data={"train": {"hr": "x", "degradation": value}})


def test_degradation_is_built_at_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(_degradation("realesrgna"))
    assert e.value.problems == [
        "data.train.degradation: pipeline 'realesrgna' is neither a preset (bicubic, realesrgan) nor an existing YAML file"
        f" (a relative path is from the current directory, {tmp_path})"]
    with pytest.raises(ConfigError) as e:
        load_config(_degradation([{"type": "jpeg", "quality": [30, 950]}]))
    assert e.value.problems == ["data.train.degradation: pipeline step 1 (jpeg): field 'quality': [30, 950] is outside the allowed range [1, 100]"]
    with pytest.raises(ConfigError, match=r"^config: data.train.degradation: inline: expected a list of steps, got int$"):
        load_config(_degradation(3))
    for ok in ("bicubic", "realesrgan", [{"type": "jpeg", "quality": [30, 95]}], {"steps": [{"type": "noise", "sigma": 2}]}):
        assert load_config(_degradation(ok)).data.train.degradation == ok


def test_a_degradation_file_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    """As in training: the current directory, not the config's folder."""
    (tmp_path / "pipes").mkdir()
    (tmp_path / "pipes" / "p.yml").write_text("steps:\n  - {type: jpeg, quality: [30, 95]}\n")
    (tmp_path / "cfg").mkdir()
    config = tmp_path / "cfg" / "c.yml"
    config.write_text(yaml.safe_dump(_degradation("pipes/p.yml")))
    monkeypatch.chdir(tmp_path)
    assert load_config(config).data.train.degradation == "pipes/p.yml"
    monkeypatch.chdir(tmp_path / "cfg")
    with pytest.raises(ConfigError, match=r"data.train.degradation: pipeline 'pipes/p.yml' is neither .* from the current directory, .*cfg\)"):
        load_config(config)
    (tmp_path / "pipes" / "p.yml").write_text("steps:\n  - {type: jpg}\n")
    with pytest.raises(ConfigError, match=r"data.train.degradation: pipeline step 1: unknown type 'jpg'; allowed: blur,"):
        load_config(_degradation(str(tmp_path / "pipes" / "p.yml")))


def test_betas_are_below_one():
    with pytest.raises(ConfigError) as e:
        load_config(_minimal(optim={"generator": {"betas": [1.0, 0.99]}, "discriminator": {"betas": [0.9, -0.1]}}))
    assert e.value.problems == [
        "optim.generator.betas[0]: 1.0 is outside the allowed range [0, 1)",
        "optim.discriminator.betas[1]: -0.1 is outside the allowed range [0, 1)",
    ]
    assert load_config(_minimal(optim={"generator": {"betas": [0, 0.999]}})).optim.generator.betas == (0.0, 0.999)


def test_perceptual_layers_are_vgg19_layers():
    with pytest.raises(ConfigError) as e:
        load_config(_minimal(losses={"perceptual": {"layers": {"conv5_5": 1.0, "relu2_2": 1.0, "fc7": 1.0}}}))
    allowed = "convB_I or reluB_I with B_I in 1_1..1_2, 2_1..2_2, 3_1..3_4, 4_1..4_4, 5_1..5_4; pool1..pool5"
    assert e.value.problems == [
        f"losses.perceptual.layers.conv5_5: not a VGG19 layer (allowed: {allowed})",
        f"losses.perceptual.layers.fc7: not a VGG19 layer (allowed: {allowed})",
    ]
    with pytest.raises(ConfigError, match="losses.perceptual.layers: at least one layer is needed"):
        load_config(_minimal(losses={"perceptual": {"layers": {}}}))
    layers = {"conv1_1": 0.1, "relu3_4": 1.0, "pool4": 1.0, "conv5_4": 1.0}
    assert load_config(_minimal(losses={"perceptual": {"layers": layers, "pre_activation": False}})).losses.perceptual.layers == layers


def test_schedule_keys_must_apply_to_its_type():
    with pytest.raises(ConfigError) as e:
        load_config(_minimal(schedule={"milestones": [10, 20], "gamma": 0.1}))
    assert e.value.problems == [
        "schedule.milestones: a multistep key, not used by type constant (allowed with constant: warmup)",
        "schedule.gamma: a multistep key, not used by type constant (allowed with constant: warmup)",
    ]
    with pytest.raises(ConfigError) as e:
        load_config(_minimal(schedule={"type": "multistep", "milestones": [10], "periods": [5], "restart_weights": [1], "eta_min": 0}))
    rule = "not used by type multistep (allowed with multistep: milestones, gamma, warmup)"
    assert e.value.problems == [f"schedule.{k}: a cosine_restarts key, {rule}" for k in ("periods", "restart_weights", "eta_min")]
    with pytest.raises(ConfigError, match=r"^config: schedule.gamma: a multistep key, not used by type cosine_restarts "
                                          r"\(allowed with cosine_restarts: periods, restart_weights, eta_min, warmup\)$"):
        load_config(_minimal(schedule={"type": "cosine_restarts", "periods": [5], "gamma": 0.1}))
    # keys left at their defaults are not "given": a printed config names them all
    for schedule in ({"warmup": 3, "gamma": 0.5, "eta_min": 1e-7, "milestones": [], "periods": []},
                     {"type": "multistep", "milestones": [10], "restart_weights": []},
                     {"type": "cosine_restarts", "periods": [5], "warmup": 2}):
        load_config(_minimal(schedule=schedule))


def test_schedule_values():
    with pytest.raises(ConfigError) as e:
        load_config(_minimal(schedule={"type": "cosine_restarts", "periods": [0, -3, 5], "restart_weights": [1, -1, 1]}))
    assert e.value.problems == [
        "schedule.periods[0]: 0 is outside the allowed range [1, ]",
        "schedule.periods[1]: -3 is outside the allowed range [1, ]",
        "schedule.restart_weights[1]: -1.0 is outside the allowed range [0, ]",
    ]
    with pytest.raises(ConfigError, match=r"^config: schedule.milestones\[0\]: 0 is outside the allowed range \[1, \]$"):
        load_config(_minimal(schedule={"type": "multistep", "milestones": [0, 10]}))
    for ms in ([10, 10], [20, 10]):
        with pytest.raises(ConfigError, match=rf"^config: schedule.milestones: \[{ms[0]}, {ms[1]}\] must be strictly increasing$"):
            load_config(_minimal(schedule={"type": "multistep", "milestones": ms}))


def test_numbers_in_exponent_form_are_numbers(tmp_path):
    """YAML 1.1 reads `2e-4` as a string; configs (and BasicSR's) write learning rates that way."""
    p = tmp_path / "c.yml"
    p.write_text("name: x\nscale: 4\ndata: {train: {hr: d}}\ngenerator: {arch: compact}\n"
                 "optim: {generator: {lr: 2e-4}, discriminator: {lr: 1E+1}}\nschedule: {type: cosine_restarts, periods: [10], eta_min: 5e-4}\n")
    cfg = load_config(p, ["optim.generator.weight_decay=1e-2"])
    assert (cfg.optim.generator.lr, cfg.optim.discriminator.lr, cfg.schedule.eta_min) == (2e-4, 10.0, 5e-4)
    assert cfg.optim.generator.weight_decay == 0.01
    with pytest.raises(ConfigError, match=r"name: expected a string, got 100000.0"):
        load_config(p, ["name=1e5"])
    assert load_config(p, ["name='1e5'"]).name == "1e5"
    from esrforge.yamlfile import load_yaml

    assert load_yaml("[2e-4, 1.5e3, .5e1, -1E+2, 1_000, 0x10, 1.0e-4, 12, 1.2.3, e5]") == [2e-4, 1500.0, 5.0, -100.0, 1000, 16, 1e-4, 12, "1.2.3", "e5"]
    # anchors and merge keys, which configs use to share settings, are not "doubled keys"
    assert load_yaml("a: &b {lr: 2e-4, w: 1}\nc: {<<: *b, lr: 1e-4}")["c"] == {"lr": 1e-4, "w": 1}


def test_a_set_value_that_is_not_yaml_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"--set 'name=\[x': the value is not valid YAML \(line 1, column 3: .*\)"):
        load_config(_minimal(), ["name=[x"])


@pytest.mark.parametrize("key", ["in_ch", "out_ch"])
def test_generator_channels_must_match_the_training_images(key):
    with pytest.raises(ConfigError) as e:
        load_config(_minimal(generator={"arch": "compact", key: 1}))
    assert e.value.problems == [f"generator.{key}: 1 does not match data.train.channels 3 (the training images are read with that many channels)"]
    cfg = load_config(_minimal(generator={"arch": "compact", "in_ch": 1, "out_ch": 1}, data={"train": {"hr": "x", "channels": 1}}))
    assert cfg.generator.in_ch == 1


@pytest.mark.parametrize("scale, k", [(1, 4), (2, 2), (4, 1), (8, 1)])
def test_hr_size_must_give_an_lr_crop_the_rrdbnet_can_unshuffle(scale, k):
    """The x1/x2 RRDBNet pixel-unshuffles its input by 4/2 (Real-ESRGAN): an LR crop that does
    not divide evenly failed with a traceback at the first step."""
    import torch

    from esrforge.archs.rrdbnet import RRDBNet, unshuffle_factor_for

    assert unshuffle_factor_for(scale) == k  # the config's own copy of the rule agrees
    smallest = scale * k * 2
    cfg = load_config(_minimal(scale=scale, generator={"arch": "rrdbnet"}, data={"train": {"hr": "x", "hr_size": smallest}}))
    net = RRDBNet(num_feat=4, num_block=1, num_grow_ch=4, scale=scale)
    lr = torch.rand(1, 3, smallest // scale, smallest // scale)
    assert net(lr).shape[-1] == smallest  # what the config accepts, the network runs
    if k > 1:
        bad = smallest + scale
        with pytest.raises(ConfigError) as e:
            load_config(_minimal(scale=scale, generator={"arch": "rrdbnet"}, data={"train": {"hr": "x", "hr_size": bad}}))
        assert e.value.problems == [f"data.train.hr_size: {bad} gives a {bad // scale}-pixel LR crop, which the x{scale} "
                                    f"RRDBNet cannot pixel-unshuffle by {k} (allowed: multiples of {scale * k})"]
        # the compact model has no unshuffle
        assert load_config(_minimal(scale=scale, generator={"arch": "compact"}, data={"train": {"hr": "x", "hr_size": bad}}))


def test_a_gan_loss_must_say_which_recipe_it_follows():
    """ESRGAN (relativistic, 5e-3) and Real-ESRGAN (standard, 0.1) differ in both: no default
    that silently mixes the two."""
    with pytest.raises(ConfigError) as e:
        load_config(_minimal(discriminator={"arch": "vgg"}, losses={"gan": {"type": "vanilla"}}))
    msg = str(e.value)
    assert "losses.gan.relativistic: required (true or false)" in msg and "losses.gan.weight: required (a number)" in msg


def test_numbers_that_are_not_finite_or_not_whole_are_refused_with_their_field(tmp_path):
    bad = _minimal(scale=2.0, seed=float("inf"), train={"iterations": float("inf"), "ema": float("nan")},
                   optim={"generator": {"lr": float("nan")}})
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    msg = str(e.value)
    for expect in ("scale: 2.0 is not allowed (allowed: 1, 2, 4, 8)", "seed: expected a finite number, got inf",
                   "train.iterations: expected a finite number, got inf", "train.ema: expected a finite number, got nan",
                   "optim.generator.lr: expected a finite number, got nan"):
        assert expect in msg, (expect, msg)


def test_yaml_alias_bombs_and_deep_nesting_are_refused_at_once(tmp_path):
    """Nine aliases nested eight deep expand to 43 million values: checking them never ended."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (tmp_path / "bomb.yml").write_text("\n".join(lines) + "\nname: *a8\n")
    with pytest.raises(ConfigError, match=r"bomb.yml: more than 100000 values once its aliases \(\*name\) are expanded"):
        load_config(tmp_path / "bomb.yml")
    (tmp_path / "deep.yml").write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="deep.yml: not valid YAML"):
        load_config(tmp_path / "deep.yml")


def test_a_mistake_in_a_set_value_is_blamed_on_the_command_line_not_the_file():
    with pytest.raises(ConfigError) as e:
        load_config(_minimal(), ["generator.num_feats=8", "train.iterations=0"])
    assert e.value.problems == [
        "--set generator.num_feats: unknown key (allowed: arch, num_feat, num_block, num_grow_ch, num_conv, activation, in_ch, out_ch)",
        "--set train.iterations: 0 is outside the allowed range [1, ]",
    ]


def test_a_left_out_generator_is_read_from_the_pretrain_file(tmp_path):
    """Fine-tuning someone's model needs no hand-copied num_feat/num_block/num_grow_ch."""
    import torch

    from tests.conftest import tiny_rrdb

    torch.save({"params_ema": tiny_rrdb(4, num_grow_ch=5, num_feat=6, num_block=2).state_dict()}, tmp_path / "theirs.pth")
    cfg = load_config({"name": "ft", "scale": 4, "data": {"train": {"hr": "x"}}, "pretrain": {"generator": str(tmp_path / "theirs.pth")}})
    assert (cfg.generator.arch, cfg.generator.num_feat, cfg.generator.num_block, cfg.generator.num_grow_ch) == ("rrdbnet", 6, 2, 5)
    with pytest.raises(ConfigError, match=r"pretrain.generator: .*nothing.pth: no such model file.* \(the generator section, left out, is read from this file\)"):
        load_config({"name": "ft", "scale": 4, "data": {"train": {"hr": "x"}}, "pretrain": {"generator": str(tmp_path / "nothing.pth")}})
    with pytest.raises(ConfigError, match="generator: required"):
        load_config({"name": "ft", "scale": 4, "data": {"train": {"hr": "x"}}})
