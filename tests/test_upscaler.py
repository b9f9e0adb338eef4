"""The super-resolution upscaler: detection from real key styles, exact tiling, image kinds, bad files.

Weights are tiny random networks written at test time in the layouts users download: Real-ESRGAN's
``{"params_ema": ..., "params": ...}`` .pth, the original ESRGAN ``model.N`` names (4x-UltraSharp and
most community models), BSRGAN's names, and Real-ESRGAN's compact SRVGGNet. The key names written here
come from the published architectures, independently of the loader's own renaming.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from hunyuan_core.errors import HunyuanError, InputError, ModelFileError
from hunyuan_core.tiling import plan_tiles
from hunyuan_core.upscaler import Upscaler, load_upscaler, upscale_images
from hunyuan_core.upscaler import cli as upscale_cli
from hunyuan_core.upscaler.rrdbnet import RRDBConfig, RRDBNet
from hunyuan_core.upscaler.srvgg import SRVGGConfig, SRVGGNetCompact


# ------------------------------------------------------------------------------------- weights
def random_weights(module: torch.nn.Module, seed: int = 0, std: float = 0.15) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * std for k, v in module.state_dict().items()}


def rrdb_weights(scale: int = 4, seed: int = 0, num_feat: int = 4, num_grow: int = 4, blocks: int = 1,
                 upsample: int = 2) -> dict[str, torch.Tensor]:
    """Real-ESRGAN-named RRDBNet weights; Real-ESRGAN's x2/x1 keep the x4 body and pixel-unshuffle.
    The last bias is mid-grey so that outputs spread around 0.5 instead of clamping at 0."""
    unshuffle = 2**upsample // scale
    cfg = RRDBConfig(3 * unshuffle**2, 3, num_feat, blocks, num_grow, upsample, unshuffle)
    sd = random_weights(RRDBNet(cfg), seed)
    sd["conv_last.bias"] += 0.5
    return sd


def esrgan_old_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Real-ESRGAN names → original ESRGAN ``model.N`` names (x4: model.0, 1.sub.*, 3, 6, 8, 10)."""
    blocks = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    ups = len({k.split(".")[0] for k in sd if k.startswith("conv_up")})
    names = {"conv_first": "model.0", "conv_body": f"model.1.sub.{blocks}",
             "conv_hr": f"model.{3 * ups + 2}", "conv_last": f"model.{3 * ups + 4}"}
    names.update({f"conv_up{i}": f"model.{3 * i}" for i in range(1, ups + 1)})
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "body":  # body.i.rdbK.convJ.p -> model.1.sub.i.RDBK.convJ.0.p
            out[f"model.1.sub.{parts[1]}.RDB{parts[2][3:]}.{parts[3]}.0.{parts[4]}"] = value
        else:
            out[f"{names[parts[0]]}.{parts[1]}"] = value
    return out


def bsrgan_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Real-ESRGAN names → BSRGAN / ESRGAN-repo names (RRDB_trunk, trunk_conv, upconvN, HRconv)."""
    rename = {"body": "RRDB_trunk", "conv_body": "trunk_conv", "conv_hr": "HRconv"}
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        parts[0] = rename.get(parts[0], parts[0].replace("conv_up", "upconv"))
        if parts[0] == "RRDB_trunk":
            parts[2] = parts[2].upper()
        out[".".join(parts)] = value
    return out


def srvgg_weights(scale: int = 4, seed: int = 0, num_conv: int = 2, channels: int = 3) -> dict[str, torch.Tensor]:
    return random_weights(SRVGGNetCompact(SRVGGConfig(channels, 8, num_conv, scale)), seed)


def make_image(height: int, width: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """A smooth gradient with texture ``[1, channels, height, width]``: structure at every scale, values over 0..1."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([xx, yy, (xx * 6).sin() * 0.5 + 0.5, 1 - xx * yy][:channels], -1)
    return (base + 0.15 * torch.rand(height, width, channels, generator=g)).clamp(0, 1).permute(2, 0, 1)[None]


# ------------------------------------------------------------------------------------ detection
@pytest.mark.parametrize("style, scale, upsample", [
    ("params_ema", 4, 2), ("params_ema", 2, 2), ("params", 4, 2), ("params", 2, 2), ("params_ema", 1, 2),
    ("esrgan", 4, 2), ("esrgan", 2, 1), ("esrgan", 2, 2), ("esrgan", 8, 3), ("bsrgan", 4, 2),
])
def test_rrdbnet_files_load_with_their_architecture_and_scale(tmp_path, style, scale, upsample):
    sd = rrdb_weights(scale, upsample=upsample)
    if style in ("params_ema", "params"):
        path = tmp_path / "RealESRGAN.pth"
        decoy = {k: torch.zeros_like(v) for k, v in sd.items()}
        # Real-ESRGAN files carry both; the EMA weights are the ones to use.
        torch.save({"params_ema": sd, "params": decoy} if style == "params_ema" else {"params": sd}, path)
    elif style == "esrgan":
        path = tmp_path / "4x-UltraSharp.pth"
        torch.save(esrgan_old_names(sd), path)
    else:
        path = tmp_path / "BSRGAN.safetensors"
        save_file(bsrgan_names(sd), str(path))
    up = load_upscaler(path, device="cpu")
    assert (up.architecture, up.scale, up.channels) == ("RRDBNet", scale, 3)
    ref = RRDBNet(RRDBConfig.from_state_dict(sd))
    ref.load_state_dict(sd)
    x = torch.rand(1, 3, 12, 9)
    with torch.no_grad():
        assert torch.equal(up.model(x), ref(x))
    assert up(x).shape == (1, 3, 12 * scale, 9 * scale)


@pytest.mark.parametrize("scale", [4, 2])
def test_srvgg_compact_loads_with_its_scale(tmp_path, scale):
    path = tmp_path / "realesr-general-x4v3.pth"
    torch.save({"params": srvgg_weights(scale, num_conv=4)}, path)
    up = load_upscaler(path, device="cpu")
    assert (up.architecture, up.scale, up.channels) == ("SRVGGNetCompact", scale, 3)
    assert up.model.config.num_conv == 4
    assert up(Image.new("RGB", (7, 5))).size == (7 * scale, 5 * scale)


def test_srvgg_residual_is_the_nearest_upscale_when_the_body_outputs_zero():
    sd = srvgg_weights(4)
    last = max(int(k.split(".")[1]) for k in sd)
    sd[f"body.{last}.weight"].zero_()
    sd[f"body.{last}.bias"].zero_()
    up = load_upscaler(sd, device="cpu")
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        assert torch.equal(up.model(x), x.repeat_interleave(4, 2).repeat_interleave(4, 3))


def test_module_prefix_and_safetensors_are_accepted(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({f"module.{k}": v for k, v in srvgg_weights(2).items()}, str(path))
    assert load_upscaler(path, device="cpu").scale == 2


# --------------------------------------------------------------------------- against spandrel
def test_networks_compute_what_spandrel_computes():
    spandrel = pytest.importorskip("spandrel")
    x = torch.rand(1, 3, 13, 10)
    cases = [rrdb_weights(4, num_feat=8, num_grow=32, blocks=2), rrdb_weights(2, num_feat=8, num_grow=32),
             rrdb_weights(1, num_feat=8, num_grow=32), srvgg_weights(4, num_conv=3), srvgg_weights(2)]
    cases.append(esrgan_old_names(cases[0]))
    for sd in cases:
        theirs = spandrel.ModelLoader().load_from_state_dict(sd)
        ours = load_upscaler(sd, device="cpu")
        assert ours.scale == theirs.scale
        with torch.no_grad():
            expected = theirs.model(x)
            torch.testing.assert_close(ours.model(x), expected, atol=1e-5, rtol=1e-5)
        assert expected.abs().mean() > 0.05  # a real comparison, not two zero images


def test_other_architectures_go_to_spandrel(tmp_path):
    spandrel = pytest.importorskip("spandrel")
    from spandrel.architectures.SPAN import SPAN

    module = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)
    path = tmp_path / "2x_span.safetensors"
    save_file(random_weights(module, std=0.05), str(path))
    up = load_upscaler(path, device="cpu")
    assert up.scale == 2 and "SPAN" in up.architecture
    descriptor = spandrel.ModelLoader().load_from_file(str(path))
    img = make_image(40, 30)
    with torch.no_grad():
        expected = descriptor(img)
    torch.testing.assert_close(up(img), expected, atol=1e-5, rtol=1e-5)


# -------------------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("name", ["rrdb_x4", "srvgg_x4", "rrdb_x2_unshuffle"])
def test_tiled_equals_untiled(name):
    """Tiles see the whole image's result wherever their blend weight is non-zero, provided the
    network's reach (RRDBNet with one block: ~19 input pixels) is within a quarter of the overlap."""
    if name == "rrdb_x4":
        up, tile, overlap = load_upscaler(rrdb_weights(4), device="cpu"), 160, 80
    elif name == "srvgg_x4":
        up, tile, overlap = load_upscaler(srvgg_weights(4, num_conv=3), device="cpu"), 64, 24
    else:  # pixel-unshuffle: tiles must start on even pixels; a trunk without blocks keeps the reach short
        sd = rrdb_weights(2, num_feat=8, blocks=1)
        sd = {k: v for k, v in sd.items() if not k.startswith("body.")}
        cfg = RRDBConfig(12, 3, 8, 0, 4, 2, 2)
        model = RRDBNet(cfg).eval()
        model.load_state_dict(sd)
        up, tile, overlap = Upscaler(model, "RRDBNet", 2, 3, align=2), 95, 30
    image = make_image(171, 197)
    plan = plan_tiles(171, 197, tile, overlap, up.align)
    assert len(plan.rows) >= 2 and len(plan.cols) >= 2 and 197 % tile and 171 % tile
    whole = up(image, tile=1024)
    tiled = up(image, tile=tile, overlap=overlap)
    assert tiled.shape == whole.shape == (1, 3, 171 * up.scale, 197 * up.scale)
    assert whole.std() > 0.05
    assert (tiled - whole).abs().max() < 1e-3


def test_tiles_misaligned_with_pixel_unshuffle_would_differ():
    """Why tile origins are aligned: the same x2 network, tiled on odd origins, changes the result."""
    sd = {k: v for k, v in rrdb_weights(2, num_feat=8).items() if not k.startswith("body.")}
    model = RRDBNet(RRDBConfig(12, 3, 8, 0, 4, 2, 2)).eval()
    model.load_state_dict(sd)
    image = make_image(40, 70)
    whole = Upscaler(model, "RRDBNet", 2, 3, align=2)(image, tile=1024)
    misaligned = Upscaler(model, "RRDBNet", 2, 3, align=1)(image, tile=31, overlap=14)
    assert (misaligned - whole).abs().max() > 0.01


def test_tile_plan_covers_the_image_and_respects_alignment():
    for size, tile, overlap, align in [(1000, 512, 32, 1), (513, 512, 32, 4), (97, 64, 30, 2), (1, 64, 8, 1)]:
        plan = plan_tiles(size, size, tile, overlap, align)
        assert plan.rows[0][0] == 0 and plan.rows[-1][1] == size
        for (s0, e0), (s1, e1) in zip(plan.rows, plan.rows[1:]):
            assert s1 % align == 0 and s0 < s1 < e0  # overlapping, advancing
        assert all(e - s <= tile + align - 1 for s, e in plan.rows)


# ------------------------------------------------------------------------------ image kinds
@pytest.fixture(scope="module")
def rrdb4() -> Upscaler:
    return load_upscaler(rrdb_weights(4), device="cpu")


@pytest.fixture(scope="module")
def x2() -> Upscaler:
    return load_upscaler(rrdb_weights(2), device="cpu")


@pytest.mark.parametrize("height, width", [(1, 1), (1, 37), (37, 1), (5, 3), (3, 130)])
def test_odd_and_single_pixel_sizes(rrdb4, x2, height, width):
    for up in (rrdb4, x2):
        out = up(make_image(height, width), tile=64, overlap=16)
        assert out.shape == (1, 3, height * up.scale, width * up.scale)
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_grayscale_pil_stays_gray_and_matches_the_colour_path(rrdb4):
    gray = Image.fromarray((make_image(20, 30, 1)[0, 0] * 255).byte().numpy(), mode="L")
    out = rrdb4(gray)
    assert out.mode == "L" and out.size == (120, 80)
    via_rgb = rrdb4(gray.convert("RGB")).convert("L")
    diff = np.asarray(out).astype(int) - np.asarray(via_rgb).astype(int)
    assert np.abs(diff).max() <= 1


def test_rgba_keeps_its_alpha(rrdb4):
    rgb = make_image(24, 16)
    alpha = torch.zeros(1, 1, 24, 16)
    alpha[..., 8:] = 1.0  # transparent left half, opaque right half
    out = rrdb4(torch.cat([rgb, alpha], 1), scale=2)
    assert out.shape == (1, 4, 48, 32)
    torch.testing.assert_close(out[:, :3], rrdb4(rgb, scale=2))
    assert out[0, 3, :, :12].max() == 0 and out[0, 3, :, 20:].min() == 1
    pil = Image.fromarray((torch.cat([rgb, alpha], 1)[0].permute(1, 2, 0) * 255).byte().numpy(), mode="RGBA")
    assert rrdb4(pil).mode == "RGBA"
    assert rrdb4(pil.convert("LA")).mode == "LA"


def test_palette_and_16_bit_images_are_converted(rrdb4):
    palette = Image.new("P", (5, 4))
    assert rrdb4(palette).mode == "RGB" and rrdb4(palette).size == (20, 16)
    deep = Image.new("I;16", (5, 4))
    assert rrdb4(deep).size == (20, 16)


def test_tensor_batches_of_gray_and_rgba(rrdb4):
    batch = torch.cat([make_image(9, 11, 1, seed=1), make_image(9, 11, 1, seed=2)])
    out = rrdb4(batch, tile=64)
    assert out.shape == (2, 1, 36, 44)
    torch.testing.assert_close(out[1:], rrdb4(batch[1:]))


def test_gray_model_upscales_each_colour_channel():
    up = load_upscaler(srvgg_weights(2, channels=1), device="cpu")
    assert up.channels == 1
    rgb = make_image(10, 12)
    out = up(rgb)
    for c in range(3):
        torch.testing.assert_close(out[:, c : c + 1], up(rgb[:, c : c + 1]))


def test_target_scale_resizes_after_super_resolution(rrdb4):
    img = Image.new("RGB", (13, 7), (200, 30, 60))
    assert rrdb4(img, scale=2).size == (26, 14)
    assert rrdb4(img, scale=1.5).size == (round(13 * 1.5), round(7 * 1.5))
    assert rrdb4(img, scale=8).size == (104, 56)
    assert [i.size for i in rrdb4([img, img.resize((3, 2))])] == [(52, 28), (12, 8)]


def test_half_precisions_run_and_stay_close():
    sd = srvgg_weights(4)
    image = make_image(16, 16)
    reference = load_upscaler(sd, device="cpu")(image)
    for dtype in (torch.bfloat16, torch.float16):
        up = load_upscaler(sd, device="cpu", dtype=dtype)
        assert up.dtype == dtype
        out = up(image)
        assert out.dtype == torch.float32
        assert (out - reference).abs().max() < 0.05


# -------------------------------------------------------------- memory, progress, interruption
class FailsAboveSize(torch.nn.Module):
    """Wraps a network; raises CUDA's out-of-memory error for tiles larger than ``limit`` pixels."""

    def __init__(self, inner: torch.nn.Module, limit: int):
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_halves_the_tile_and_goes_on():
    inner = load_upscaler(srvgg_weights(4), device="cpu").model
    flaky = FailsAboveSize(inner, 100)
    up = Upscaler(flaky, "SRVGGNetCompact", 4, 3)
    image = make_image(150, 130)
    steps = []
    out = up(image, tile=512, overlap=32, progress=lambda done, total: steps.append((done, total)))
    assert max(flaky.sizes) > 100 and max(flaky.sizes[-1:]) <= 100
    assert steps[-1][0] == steps[-1][1] == len(plan_tiles(150, 130, 128, 32))  # 512 -> 256 -> 128
    whole = Upscaler(inner, "SRVGGNetCompact", 4, 3)(image, tile=1024)
    assert (out - whole).abs().max() < 1e-3
    with pytest.raises(HunyuanError, match="out of memory"):
        Upscaler(FailsAboveSize(inner, 10), "SRVGGNetCompact", 4, 3)(image)


def test_progress_per_tile_and_cancel_stops_between_tiles(rrdb4):
    image = make_image(60, 90)
    steps = []
    rrdb4(image, tile=48, overlap=8, progress=lambda done, total: steps.append((done, total)))
    n = rrdb4.count_tiles(1, 60, 90, 48, 8)
    assert n > 4 and steps == [(i, n) for i in range(1, n + 1)]

    class Stop(Exception):
        pass

    calls = []

    def cancel():
        calls.append(1)
        if len(calls) > 3:
            raise Stop

    with pytest.raises(Stop):
        rrdb4(image, tile=48, overlap=8, cancel=cancel)
    assert len(calls) == 4


# --------------------------------------------------------------------------------- bad inputs
def test_not_an_sr_model_is_refused_clearly(tmp_path):
    path = tmp_path / "clip.safetensors"
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(ModelFileError, match="not a .*text_model.embeddings"):
        load_upscaler(path)


def test_damaged_rrdbnet_is_refused_clearly(tmp_path):
    sd = rrdb_weights(4)
    sd["conv_hr.weight"] = torch.zeros(4, 5, 3, 3)
    with pytest.raises(ModelFileError, match="RRDBNet.*do not fit"):
        load_upscaler(sd, device="cpu")
    del sd["conv_last.weight"]
    with pytest.raises(ModelFileError, match="missing conv_last.weight"):
        load_upscaler(sd, device="cpu")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_files_are_refused_clearly(tmp_path, suffix):
    path = tmp_path / f"RealESRGAN_x4plus{suffix}"
    sd = rrdb_weights(4)
    if suffix == ".pth":
        torch.save({"params_ema": sd}, path)
    else:
        save_file(sd, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_upscaler(path)


class _RunsCode:
    """Unpickling this would create a folder: the loader must refuse before anything runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": rrdb_weights(4), "hook": _RunsCode(marker)}, path)
    with pytest.raises(ModelFileError, match="refused"):
        load_upscaler(path)
    assert not marker.exists()


def test_missing_and_non_model_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_upscaler(tmp_path / "nope.pth")
    text = tmp_path / "readme.pth"
    text.write_text("not weights")
    with pytest.raises(ModelFileError):
        load_upscaler(text)


def test_bad_images_and_arguments(rrdb4):
    with pytest.raises(InputError, match=r"\[B, C, H, W\]"):
        rrdb4(torch.rand(3, 8, 8))
    with pytest.raises(InputError, match="float"):
        rrdb4(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(InputError, match="tile"):
        rrdb4(torch.rand(1, 3, 8, 8), tile=0)
    with pytest.raises(InputError, match="scale"):
        rrdb4(torch.rand(1, 3, 8, 8), scale=0)
    with pytest.raises(InputError, match="PIL"):
        rrdb4("image.png")


# ------------------------------------------------------------------------------------ CLI, API
def test_upscale_images_and_cli(tmp_path, capsys):
    model = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": rrdb_weights(2)}, model)
    images = [Image.new("RGB", (9, 7), (10, 200, 30)), Image.new("RGBA", (4, 4))]
    assert [i.size for i in upscale_images(images, model, device="cpu")] == [(18, 14), (8, 8)]

    inputs = tmp_path / "in"
    inputs.mkdir()
    images[0].save(inputs / "a.png")
    images[1].save(inputs / "b.png")
    parser = argparse.ArgumentParser()
    upscale_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["upscale", "--model", str(model), str(inputs), "--out", str(tmp_path / "out"),
                              "--scale", "3", "--tile", "64", "--device", "cpu"])
    assert args.func(args) == 0
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["a_x3.png", "b_x3.png"]
    assert Image.open(written[0]).size == (27, 21) and Image.open(written[1]).mode == "RGBA"
    assert str(written[0]) in capsys.readouterr().out
    args = parser.parse_args(["upscale", "--model", str(model), str(tmp_path / "missing.png"), "--out", str(tmp_path)])
    with pytest.raises(InputError, match="does not exist"):
        args.func(args)
