import pytest
import torch
import yaml

from esrforge.data.pipeline import PRESETS, STEPS, load_pipeline
from esrforge.data.steps import PipelineError


def batch(n=2, c=3, h=64, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g)


def run(pipe, x, seed=0, scale=4):
    return pipe(x, torch.Generator().manual_seed(seed), scale)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_end_at_exactly_hr_over_scale(name):
    pipe = load_pipeline(name)
    for scale in (2, 4):
        lr, labels = run(pipe, batch(), scale=scale)
        assert lr.shape == (2, 3, 64 // scale, 48 // scale)
        assert 0 <= lr.min() and lr.max() <= 1
        assert len(labels) == 2


def test_same_seed_same_result_other_seed_differs():
    pipe = load_pipeline("realesrgan")
    x = batch()
    a, la = run(pipe, x, seed=3)
    b, lb = run(pipe, x, seed=3)
    c, _ = run(pipe, x, seed=4)
    assert torch.equal(a, b) and la == lb
    assert not torch.equal(a, c)


def test_bicubic_preset_is_matlab_bicubic():
    from esrforge.data.resize import resize_to

    x = batch()
    lr, labels = run(load_pipeline("bicubic"), x)
    assert torch.allclose(lr, resize_to(x, (16, 12), "matlab").clamp(0, 1))
    assert all("matlab" in l[0] for l in labels)


def test_final_resize_is_added_when_no_step_reaches_the_target():
    pipe = load_pipeline([{"type": "quantize", "levels": 16}])
    lr, labels = run(pipe, batch())
    assert lr.shape[-2:] == (16, 12)
    assert labels[0][-1].endswith("(final)")


def test_yaml_file_and_mapping_forms(tmp_path):
    spec = {"steps": [{"type": "blur", "p": 0.8, "kernel": ["gaussian", "generalized", "plateau"], "sigma": [0.2, 3.0]},
                      {"type": "resize", "scale": [0.15, 1.5], "method": ["area", "bilinear", "bicubic"]},
                      {"type": "noise", "p": 0.5, "kind": "gaussian", "sigma": [1, 30], "gray_p": 0.4},
                      {"type": "jpeg", "quality": [30, 95]},
                      {"type": "resize", "to": "target", "method": ["area", "bilinear", "bicubic"]},
                      {"type": "dither", "p": 0.3, "method": ["ordered", "floyd_steinberg"], "levels": [4, 32]}]}
    path = tmp_path / "p.yml"
    path.write_text(yaml.safe_dump(spec))
    from_file = load_pipeline(path)
    assert from_file.steps == load_pipeline(spec).steps == load_pipeline(spec["steps"]).steps
    assert from_file.source == str(path) and len(from_file.steps) == 6
    lr, _ = run(from_file, batch())
    assert lr.shape[-2:] == (16, 12)


@pytest.mark.parametrize(
    "spec,match",
    [
        ([{"type": "blurr"}], r"pipeline step 1: unknown type 'blurr'; allowed: blur"),
        ([{"type": "jpeg"}, {"type": "noise", "sigma": [1, 300]}], r"pipeline step 2 \(noise\): field 'sigma'.*outside"),
        ([{"type": "jpeg", "quality": "high"}], r"pipeline step 1 \(jpeg\): field 'quality'"),
        ([{"type": "jpeg", "qualty": 50}], r"step 1 \(jpeg\): unknown field.*'qualty'"),
        ([{"type": "jpeg", "p": 1.5}], r"field 'p'.*outside"),
        ([{"type": "noise", "sigma": float("nan")}], r"step 1 \(noise\): field 'sigma': expected finite numbers, got nan"),
        ([{"type": "jpeg", "quality": [30, float("inf")]}], r"field 'quality': expected finite numbers"),
        ([{"type": "jpeg", "p": float("nan")}], r"field 'p': expected a finite number, got nan"),
        ([{"type": "random_order", "steps": [{"type": "nope"}]}], r"steps\[0\].*unknown type 'nope'"),
        ({"step": []}, r"one key, 'steps'"),
        ("no_such_preset", r"neither a preset \(bicubic, realesrgan\) nor an existing YAML file"),
    ],
)
def test_bad_specs_name_the_step_and_field(spec, match):
    with pytest.raises(PipelineError, match=match):
        load_pipeline(spec)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("steps: [ {type: blur\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_pipeline(p)


def test_random_order_runs_every_group_in_some_order():
    pipe = load_pipeline([{"type": "random_order", "steps": [{"type": "quantize", "levels": 4}, [{"type": "resize", "to": "target", "method": "area"}]]}])
    orders = set()
    for seed in range(12):
        _, labels = run(pipe, batch(n=1), seed=seed)
        orders.add(labels[0][0].split(",")[0].split(" ")[0])
    assert orders == {"quantize", "resize"}


def test_registry_is_a_literal_list():
    assert set(STEPS) >= {"blur", "resize", "noise", "jpeg", "webp", "dither", "quantize", "sharpen", "random_order"}


def test_docs_describe_every_step_and_field():
    import dataclasses
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "degradations.md").read_text()
    for name, cls in STEPS.items():
        assert f"### `{name}`" in doc, name
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in doc, (name, f.name)


def test_realesrgan_preset_degrades_the_sharpened_hr_and_draws_the_final_sinc_cutoff_from_pi_3():
    """Real-ESRGAN: `out = filter2D(self.gt_usm, self.kernel1)`, and its final sinc's
    omega_c ~ U(pi/3, pi) at every kernel size."""
    import math

    from esrforge.data.pipeline import RandomOrder
    from esrforge.data.sharpen import Sharpen

    p = load_pipeline("realesrgan")
    first = p.steps[0]
    assert isinstance(first, Sharpen) and (first.amount.low, first.radius.low, first.threshold.low) == (0.5, 50, 10)
    last = p.steps[-1]
    assert isinstance(last, RandomOrder)
    sinc = next(s for group in last.steps for s in group if getattr(s, "name", "") == "blur")
    assert (sinc.cutoff.low, sinc.cutoff.high) == pytest.approx((math.pi / 3, math.pi))


def test_an_integer_batch_is_refused_in_one_line():
    import torch

    with pytest.raises(ValueError, match="expected a float batch in \\[0, 1\\], got torch.uint8"):
        load_pipeline("bicubic")(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.Generator(), 2)


def test_a_key_written_twice_is_refused(tmp_path):
    (tmp_path / "p.yml").write_text("steps:\n  - {type: jpeg, quality: 30, quality: 90}\n")
    with pytest.raises(PipelineError, match=r"p.yml: not valid YAML \(line 2, column 31: duplicate key 'quality'\)"):
        load_pipeline(tmp_path / "p.yml")


def test_infinite_weights_and_enlargements_that_multiply_past_any_image_are_refused():
    for weights in ({"iso": float("inf"), "aniso": 1}, {"iso": 1e308, "aniso": 1e308}):
        with pytest.raises(PipelineError, match="weights must be numbers >= 0 with a positive sum"):
            load_pipeline([{"type": "blur", "kernel": weights}])
    with pytest.raises(PipelineError, match="updown"):
        load_pipeline([{"type": "resize", "scale": [0.5, 2], "updown": [float("inf"), 1, 1]}])
    # Each x8 is allowed; four of them on a 24x32 image would be 98304x131072 (GBs): refused when drawn.
    p = load_pipeline([{"type": "resize", "scale": 8}] * 4)
    with pytest.raises(PipelineError, match=r"resize step: x8.00 of 2048x1536 is 16384x12288, over 64 megapixels per image"):
        p(torch.rand(1, 3, 24, 32), torch.Generator().manual_seed(0), 2)


def test_every_bad_step_is_named_at_once():
    with pytest.raises(PipelineError) as e:
        load_pipeline([{"type": "blurr"}, {"type": "noise", "sigma": [1, 300]}, {"type": "jpeg"}])
    msg = str(e.value)
    assert msg.startswith("2 problems: pipeline step 1: unknown type 'blurr'") and "pipeline step 2 (noise): field 'sigma'" in msg
    assert "\n" not in msg
