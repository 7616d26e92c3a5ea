import dataclasses
import json
import os
import re
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from esrforge import load_model
from esrforge.archs import RRDBNet
from esrforge.archs import rrdbnet as rr
from esrforge.modelio import ModelFileError, save_model
from esrforge.modelio.detect import describe
from tests.conftest import tiny_compact, tiny_rrdb


def _newarch(sd):
    out = {}
    for k, v in sd.items():
        k = k.replace("conv_body", "trunk_conv").replace("body.", "RRDB_trunk.").replace(".rdb", ".RDB")
        out[k.replace("conv_up", "upconv").replace("conv_hr", "HRconv")] = v
    return out


def _layouts(m: RRDBNet) -> dict[str, object]:
    """The same weights as the wild stores them."""
    sd = m.state_dict()
    return {
        "basicsr_ema.pth": {"params_ema": sd, "params": {k: v * 0 for k, v in sd.items()}},
        "basicsr_params.pth": {"params": sd},
        "state_dict.ckpt": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "original.pth": rr.basicsr_to_original(sd),
        "newarch.pt": _newarch(sd),
        "plain.safetensors": sd,
        "single_key.pth": {"generator_weights": sd},
        "compiled.pth": {"params": {f"_orig_mod.{k}": v for k, v in sd.items()}},  # torch.compile's wrapper
        "ddp_compiled.pth": {"params_ema": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
        "hyphen_ema.pth": {"params": {k: v * 0 for k, v in sd.items()}, "params-ema": sd},  # neosr and others
        "model_state_dict.pth": {"model_state_dict": sd, "optimizer_state_dict": {"lr": 1.0}, "epoch": 10},
        "netG.pth": {f"netG.{k}": v for k, v in sd.items()},
        # a whole GAN training module's state (Lightning): the generator's part is the model
        "lightning.ckpt": {"state_dict": {**{f"generator.{k}": v for k, v in sd.items()},
                                          "discriminator.conv0.weight": torch.zeros(4, 3, 3, 3)}, "epoch": 3},
    }


def _save(path: Path, obj) -> None:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in obj.items()}, path)
    else:
        torch.save(obj, path)


@pytest.mark.parametrize(
    "hp",
    [
        dict(scale=4, num_grow_ch=6),
        dict(scale=2, num_grow_ch=10),
        dict(scale=1, num_grow_ch=4),
        dict(scale=8, num_grow_ch=6),
        dict(scale=2, num_grow_ch=6, unshuffle=1),  # old community x2 without unshuffle
    ],
)
def test_every_layout_loads_to_the_same_model(tmp_path, hp):
    m = tiny_rrdb(**hp)
    x = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        ref = m(x)
    for name, obj in _layouts(m).items():
        p = tmp_path / name
        _save(p, obj)
        lm = load_model(p)
        assert lm.descriptor.hparams == m.hparams(), name
        assert lm.descriptor.scale == hp["scale"]
        assert lm.descriptor.multiple_of == m.unshuffle
        with torch.no_grad():
            assert torch.equal(lm.module(x), ref), name
    assert load_model(tmp_path / "original.pth").descriptor.layout == "original"
    assert load_model(tmp_path / "newarch.pt").descriptor.layout == "newarch"
    assert load_model(tmp_path / "plain.safetensors").descriptor.layout == "basicsr"


def test_hyperparameters_are_read_not_assumed(tmp_path):
    m = RRDBNet(in_ch=1, out_ch=1, num_feat=12, num_block=5, num_grow_ch=7, scale=4)
    _save(tmp_path / "g.pth", {"params": m.state_dict()})
    d = load_model(tmp_path / "g.pth").descriptor
    assert d.hparams == dict(in_ch=1, out_ch=1, num_feat=12, num_block=5, num_grow_ch=7, scale=4, unshuffle=1)
    assert d.num_params == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("act", ["prelu", "relu", "leakyrelu"])
def test_compact_detection(tmp_path, act):
    m = tiny_compact(4, activation=act, num_conv=5)
    torch.save({"params": m.state_dict()}, tmp_path / "c.pth")
    d = load_model(tmp_path / "c.pth").descriptor
    assert (d.arch, d.scale, d.hparams["num_conv"], d.hparams["num_feat"]) == ("compact", 4, 5, 8)
    # Only PReLU leaves weights: without them a .pth cannot tell relu from leakyrelu.
    assert d.hparams["activation"] == ("prelu" if act == "prelu" else "relu")
    # esrforge's own safetensors record it, so the round trip is exact.
    save_model(tmp_path / "c.safetensors", m.state_dict(), dataclasses.replace(d, hparams=m.hparams()))
    lm = load_model(tmp_path / "c.safetensors")
    assert lm.descriptor.hparams == m.hparams()
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(lm.module(x), m(x))


def test_save_uses_standard_basicsr_names_and_metadata(tmp_path):
    m = tiny_rrdb(4)
    lm_src = tmp_path / "src.pth"
    torch.save({"params_ema": m.state_dict()}, lm_src)
    lm = load_model(lm_src)
    save_model(tmp_path / "out.pth", lm.module.state_dict(), lm.descriptor)
    raw = torch.load(tmp_path / "out.pth", weights_only=True)
    assert list(raw) == ["params_ema"]
    assert {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_up1.weight",
            "conv_up2.weight", "conv_hr.weight", "conv_last.weight"} <= set(raw["params_ema"])
    save_model(tmp_path / "out.safetensors", lm.module.state_dict(), lm.descriptor, half=True)
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor("conv_first.weight").dtype == torch.float16
    assert meta["arch"] == "rrdbnet" and meta["scale"] == "4" and meta["num_grow_ch"] == "6"
    assert json.loads(meta["hparams"]) == m.hparams() and meta["esrforge_version"]
    save_model(tmp_path / "orig.pth", lm.module.state_dict(), lm.descriptor, layout="original")
    assert "model.1.sub.0.RDB1.conv1.0.weight" in torch.load(tmp_path / "orig.pth", weights_only=True)
    assert not list(tmp_path.glob("*.partial"))


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pth"
    torch.save({"params_ema": tiny_rrdb().state_dict(), "x": _Exploit(str(marker))}, p)
    with pytest.raises(ModelFileError, match="refused") as e:
        load_model(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    # the reason (naming the function it would call), not torch's boilerplate
    assert re.search(r"(GLOBAL|Unsupported class) \w+\.system", str(e.value)) and "In PyTorch 2.6" not in str(e.value)
    assert not marker.exists()
    # A legacy (non-zip) pickle likewise.
    p2 = tmp_path / "evil_legacy.pth"
    torch.save(_Exploit(str(marker)), p2, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFileError):
        load_model(p2)
    assert not marker.exists()
    with open(tmp_path / "raw.pkl.pth", "wb") as f:
        pickle.dump(_Exploit(str(marker)), f)
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "raw.pkl.pth")
    assert not marker.exists()


def test_whole_pickled_models_and_other_formats_are_named(tmp_path):
    """What people pass as a model besides weights: torch.save(model), ONNX, NCNN, a zip of a .pth."""
    torch.save(tiny_rrdb(), tmp_path / "whole.pth")
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x052.1.0")  # an ONNX protobuf's first fields
    (tmp_path / "m.param").write_text("7767517\n3 3\nInput data 0 1 data\n")
    (tmp_path / "m.bin").write_bytes(bytes(64))
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.zip", "w") as z:
        z.writestr("RealESRGAN_x4plus.pth", b"x")
    says = {
        "whole.pth": "refused: it holds a whole pickled Python object (esrforge.archs.rrdbnet.RRDBNet), not only tensors",
        "m.onnx": "an ONNX model; esrforge reads PyTorch (.pth, .pt, .ckpt) and .safetensors model files",
        "m.param": "not a model file: it is an NCNN model's .param file",
        "m.bin": "an NCNN model's weights",
        "m.zip": "a zip archive, not a model file (RealESRGAN_x4plus.pth); extract the model from it",
    }
    for name, text in says.items():
        with pytest.raises(ModelFileError) as e:
            load_model(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: {text}") or f"{tmp_path / name}: {text}" in str(e.value), name
        assert "\n" not in str(e.value) and "add_safe_globals" not in str(e.value)


@pytest.mark.parametrize("name", ["m.pth", "m.safetensors"])
def test_truncated_file_gets_one_line_error(tmp_path, name):
    p = tmp_path / name
    _save(p, tiny_rrdb().state_dict())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated") as e:
        load_model(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_a_file_is_read_by_its_content_not_its_extension(tmp_path):
    sd = tiny_rrdb().state_dict()
    save_file(sd, tmp_path / "really_safetensors.pth")
    torch.save({"params_ema": sd}, tmp_path / "really_torch.safetensors")
    for name in ("really_safetensors.pth", "really_torch.safetensors"):
        got = load_model(tmp_path / name).module.state_dict()
        assert all(torch.equal(got[k], sd[k]) for k in sd)


@pytest.mark.parametrize("head, what", [(b"\x89PNG\r\n\x1a\n", "it is a PNG image"), (b"<!DOCTYPE html>", "it is a text/HTML file"),
                                        (b"\xd1\x07 random bytes", "not a PyTorch or safetensors model file")])
def test_something_else_passed_as_a_model_is_named_not_called_code(tmp_path, head, what):
    p = tmp_path / "model.pth"
    p.write_bytes(head + bytes(64))
    with pytest.raises(ModelFileError) as e:
        load_model(p)
    assert what in str(e.value) and "refused" not in str(e.value) and "\n" not in str(e.value)


def test_missing_tensor_is_reported(tmp_path):
    sd = tiny_rrdb().state_dict()
    del sd["body.1.rdb2.conv3.weight"]
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(ModelFileError, match="body.1.rdb2.conv3.weight"):
        load_model(tmp_path / "m.pth")


@pytest.mark.parametrize(
    "keys,expect",
    [
        ({"conv0_0.weight": (8, 3, 3, 3), "conv0_1.weight": (8, 8, 4, 4), "linear1.weight": (10, 8)}, "VGG-style discriminator"),
        ({"conv0.weight": (8, 3, 3, 3), "conv9.weight": (1, 8, 3, 3)}, "U-Net discriminator"),
        ({"model.0.weight": (8, 3, 4, 4), "model.2.weight": (16, 8, 4, 4)}, "PatchGAN"),
        ({"features.0.weight": (8, 3, 3, 3), "classifier.0.weight": (10, 8)}, "VGG"),
        ({"foo.weight": (3,)}, "unknown model layout"),
        # other super-resolution architectures, by keys their files carry
        ({"conv_first.weight": (8, 3, 3, 3), "patch_embed.norm.weight": (8,), "layers.0.residual_group.blocks.0.norm1.weight": (8,)},
         r"this looks like a SwinIR model, not an ESRGAN-family generator; spandrel \(which chaiNNer and ComfyUI use\) runs it$"),
        ({"relative_position_index_SA": (4, 4), "conv_first.weight": (8, 3, 3, 3)}, "a HAT model"),
        ({"conv_first.weight": (8, 3, 3, 3), "before_RG.1.weight": (8,), "layers.0.blocks.0.attn.qkv.weight": (24, 8)}, "a DAT model"),
        ({"conv_1.sk.weight": (8, 3, 1, 1), "block_1.c1_r.sk.weight": (8, 8, 1, 1)}, "a SPAN model"),
        ({"input.weight": (8, 3, 3, 3), "residual_layer.0.residual_layer.1.weight": (8, 8, 1, 1)}, "an OmniSR model"),
    ],
)
def test_non_generators_are_named(tmp_path, keys, expect):
    torch.save({k: torch.zeros(s) for k, s in keys.items()}, tmp_path / "d.pth")
    with pytest.raises(ModelFileError, match=expect):
        load_model(tmp_path / "d.pth")


@pytest.mark.parametrize("arch, kw, expect", [
    ("vgg", {}, "a VGG-style discriminator"),
    ("patchgan", {}, "a PatchGAN discriminator"),
    ("patchgan", {"spectral_norm": True}, "a PatchGAN discriminator"),
    ("multiscale_patchgan", {}, "a multi-scale PatchGAN discriminator"),
    ("unet", {}, "a U-Net discriminator"),
])
def test_every_discriminator_esrforge_trains_is_named(tmp_path, arch, kw, expect):
    from esrforge.archs.discriminators import build_discriminator

    torch.save({"params": build_discriminator(arch, num_feat=8, **kw).state_dict()}, tmp_path / "net_d.pth")
    with pytest.raises(ModelFileError, match=f"this looks like {expect}.*, not an ESRGAN-family generator"):
        load_model(tmp_path / "net_d.pth")


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "nope.pth")


def test_esrgan_plus_models_load_from_original_layout(tmp_path):
    m = tiny_rrdb(4, plus=True)
    x = torch.rand(1, 3, 8, 8)
    orig = rr.basicsr_to_original(m.state_dict())
    assert "model.1.sub.0.RDB1.conv1x1.weight" in orig
    torch.save(orig, tmp_path / "plus.pth")
    lm = load_model(tmp_path / "plus.pth")
    assert lm.descriptor.hparams["plus"] is True and lm.descriptor.info()["plus"] is True
    with torch.no_grad():
        assert torch.equal(lm.module(x), m(x))
    # the 1x1 path really contributes: zeroing it changes the output
    with torch.no_grad():
        for blk in lm.module.body:
            for rdb in (blk.rdb1, blk.rdb2, blk.rdb3):
                rdb.conv1x1.weight.zero_()
        assert not torch.equal(lm.module(x), m(x))
    assert "plus" not in load_model(_save_plain(tmp_path)).descriptor.hparams


def _save_plain(tmp_path):
    p = tmp_path / "plain.pth"
    torch.save(tiny_rrdb(4).state_dict(), p)
    return p


@pytest.mark.parametrize("arch, hp", [
    ("rrdbnet", dict(in_ch=1, out_ch=3, scale=2)),
    ("rrdbnet", dict(in_ch=4, out_ch=1, scale=4)),
    ("rrdbnet", dict(in_ch=3, out_ch=1, scale=1)),
    ("compact", dict(in_ch=3, out_ch=1, scale=4)),
    ("compact", dict(in_ch=1, out_ch=3, scale=2)),
])
def test_input_and_output_channels_that_differ_survive_a_safetensors_round_trip(tmp_path, arch, hp):
    """Shapes alone cannot tell unshuffle (RRDB) or scale (compact) apart when in_ch != out_ch; the
    metadata esrforge writes can."""
    m = tiny_rrdb(**hp) if arch == "rrdbnet" else tiny_compact(**hp)
    path = tmp_path / "m.safetensors"
    save_model(path, m.state_dict(), describe(arch, "basicsr" if arch == "rrdbnet" else "compact", m.hparams(), m, "t"))
    lm = load_model(path)
    assert lm.descriptor.hparams == m.hparams()
    x = torch.rand(1, hp["in_ch"], 8, 8)
    with torch.no_grad():
        assert torch.equal(lm.module(x), m(x))


def test_an_esrgan_file_esrforge_does_not_build_is_named_with_its_path(tmp_path):
    # An original-layout x16 file (four upsampling stages): consistent shapes, a scale RRDBNet lacks.
    sd = rr.basicsr_to_original(tiny_rrdb(scale=8).state_dict())
    moved = {"model.11": "model.14", "model.13": "model.16"}  # HR conv and last conv move up one stage
    sd = {(moved.get(k.rsplit(".", 1)[0], k.rsplit(".", 1)[0]) + "." + k.rsplit(".", 1)[1]): v for k, v in sd.items()}
    sd.update({"model.12.weight": sd["model.9.weight"].clone(), "model.12.bias": sd["model.9.bias"].clone()})
    torch.save(sd, tmp_path / "16x.pth")
    with pytest.raises(ModelFileError, match=r"16x\.pth: unsupported rrdbnet model: RRDBNet scale must be 1, 2, 4 or 8 .*got 16"):
        load_model(tmp_path / "16x.pth")


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_a_refusal_never_passes_on_torchs_advice_to_turn_the_check_off(tmp_path):
    p = tmp_path / "eval.pth"
    with open(p, "wb") as f:
        pickle.dump({"params": _Eval()}, f, protocol=2)
    with pytest.raises(ModelFileError, match="refused") as e:
        load_model(p)
    msg = str(e.value)
    assert "eval" in msg and "\n" not in msg
    assert "weights_only` set to `False" not in msg and "add_safe_globals" not in msg and "allowlist" not in msg


def test_crafted_and_damaged_state_dicts_get_one_line_errors_before_anything_large_is_built(tmp_path):
    sd = tiny_rrdb().state_dict()

    def refused(name, state, match, meta=None):
        p = tmp_path / name
        if name.endswith(".safetensors"):
            save_file(state, str(p), metadata=meta)
        else:
            torch.save({"params": state}, p)
        with pytest.raises(ModelFileError, match=match) as e:
            load_model(p)
        assert str(p) in str(e.value) and "\n" not in str(e.value)

    # One key naming block 10^8: the largest index alone built 10^8 blocks (memory without end).
    far = dict(sd) | {"body.99999999.rdb1.conv1.weight": sd["body.0.rdb1.conv1.weight"].clone()}
    refused("far.pth", far, "RRDB blocks are numbered up to 99999999 but block 2 is missing")
    # A 2 KB file whose stride-0 tensor declares 8000 features (2.5 GB once built).
    wide = {k: v.clone() for k, v in tiny_compact().state_dict().items()}
    wide["body.0.weight"] = torch.zeros(1).expand(8000, 3, 3, 3)
    refused("wide.pth", wide, r"tensor body\.0\.weight \(8000, 3, 3, 3\) has storage for fewer values than it holds")
    refused("flat.pth", dict(sd) | {"conv_first.weight": sd["conv_first.weight"].flatten()}, "conv_first.weight has shape .* not a conv weight")
    nan = dict(sd) | {"conv_last.bias": torch.full_like(sd["conv_last.bias"], float("nan"))}
    refused("nan.pth", nan, "conv_last.bias hold NaN or infinite values")
    (tmp_path / "text.pth").write_bytes(b"hello world\n")
    with pytest.raises(ModelFileError, match="text.pth: truncated or not a PyTorch model file"):
        load_model(tmp_path / "text.pth")
    # Channel counts in the metadata that are not counts are ignored, not divided by.
    c = {k: v.contiguous() for k, v in tiny_compact().state_dict().items()}
    for bad in ("0", "²", "9" * 5000):
        save_file(c, str(tmp_path / "meta.safetensors"), metadata={"in_ch": bad, "out_ch": bad})
        assert load_model(tmp_path / "meta.safetensors").descriptor.in_ch == 3
