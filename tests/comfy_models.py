"""A ComfyUI-style ``models/`` folder (and ``input/`` folder) filled with tiny models in every layout the
node pack reads, built once per test session with ``hunyuan_core.tiny.make_tiny`` (nothing downloaded).

models/checkpoints/hunyuan_dit_1.2.safetensors (+ hydit_clip_tokenizer/)  all-in-one, v1.2
models/hunyuan/HunyuanDiT-v1.1/t2i/...                                   official release folder, v1.1
models/hunyuan/HunyuanDiT-v1.2-Diffusers/                                diffusers folder, v1.2
models/diffusion_models/hunyuan_dit_1.1_ema.pt                           DiT-only file
models/vae/sdxl_vae.safetensors                                          VAE file (LDM names, from the all-in-one)
models/diffusion_models/sdxl_vae_misplaced.safetensors                   the same VAE where a DiT belongs
models/text_encoders/hydit_bert/pytorch_model.bin (+ vocab.txt)          separate BERT file
models/text_encoders/hydit_mt5/pytorch_model.bin (+ spiece.model)        separate mT5 file
models/upscale_models/RealESRGAN_x4plus.pth                               Real-ESRGAN x4 (the upscale workflow)
models/LLM/dialoggen/                                                    DialogGen (the multi-turn workflow)
models/loras/porcelain/, jade/ (adapter_config.json + adapter_model.safetensors)  official PEFT LoRAs, v1.2
models/loras/hunyuan_dit_kohya.safetensors                                 kohya LoRA: every Linear in the blocks + BERT
models/controlnet/hunyuandit/pytorch_model_{canny,depth}_distill.pt      ControlNets for the v1.2 all-in-one (official)
models/controlnet/hunyuan_dit_v11_controlnet.safetensors                 a v1.1 ControlNet (diffusers names)
models/ipadapter/ipa.pt, models/clip_vision/clip_img_encoder.pt          IP-Adapter + image encoder (official forms)
input/example.png                                                        64x64 RGBA, transparent centre square
input/depth_example.png                                                  64x64 grey gradient (a stand-in depth map)
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

ALL_IN_ONE = "checkpoints/hunyuan_dit_1.2.safetensors"
OFFICIAL_V11 = "hunyuan/HunyuanDiT-v1.1"
DIFFUSERS_V12 = "hunyuan/HunyuanDiT-v1.2-Diffusers"
DIT_ONLY = "diffusion_models/hunyuan_dit_1.1_ema.pt"
VAE_FILE = "vae/sdxl_vae.safetensors"
MISPLACED_VAE = "diffusion_models/sdxl_vae_misplaced.safetensors"  # a user mistake the loader must explain
BERT_FILE = "hydit_bert/pytorch_model.bin"
MT5_FILE = "hydit_mt5/pytorch_model.bin"
UPSCALER = "upscale_models/RealESRGAN_x4plus.pth"
DIALOGGEN = "LLM/dialoggen"
EXAMPLE_IMAGE = "example.png"
LORA_PORCELAIN = "porcelain/adapter_model.safetensors"
LORA_JADE = "jade/adapter_model.safetensors"
LORA_KOHYA = "hunyuan_dit_kohya.safetensors"
CONTROLNET_CANNY = "hunyuandit/pytorch_model_canny_distill.pt"
CONTROLNET_DEPTH = "hunyuandit/pytorch_model_depth_distill.pt"
CONTROLNET_V11 = "hunyuan_dit_v11_controlnet.safetensors"
IP_ADAPTER = "ipa.pt"
IMAGE_ENCODER = "clip_img_encoder.pt"
DEPTH_IMAGE = "depth_example.png"


@dataclass(frozen=True)
class TinyModels:
    """Where the tiny ComfyUI folders are."""

    models: Path
    input: Path
    output: Path
    loras: dict[str, TinyLoRA]  # by picker name (LORA_*)


@dataclass(frozen=True)
class TinyLoRA:
    """What a tiny LoRA file changes, as its writer (tests/test_lora.py) reports it: ``(module name, first row,
    down, up, scale)`` per module, of the DiT and of BERT, so a test can merge it by hand."""

    dit: list[tuple]
    bert: list[tuple]


def _example_image(path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = np.concatenate([rng.integers(0, 256, (64, 64, 3)), np.full((64, 64, 1), 255)], axis=2).astype(np.uint8)
    rgba[16:48, 16:48, 3] = 0  # transparent = "repaint" in ComfyUI's LoadImage mask
    Image.fromarray(rgba, "RGBA").save(path)


def _tiny_loras(loras: Path, all_in_one: Path) -> dict[str, TinyLoRA]:
    """The tiny LoRAs for the v1.2 all-in-one model, written into ``loras`` by the LoRA tests' writers."""
    from lora_files import write_kohya, write_peft

    from hunyuan_core.loaders import load_dit, load_text_encoder
    from hunyuan_core.tiny import tiny_bert_vocab_path

    dit = load_dit(all_in_one)
    bert = load_text_encoder(all_in_one, bert_vocab=tiny_bert_vocab_path(all_in_one.parent)).bert
    loras.mkdir()
    _, porcelain = write_peft(loras / Path(LORA_PORCELAIN).parent, dit, seed=0, alpha=8)
    _, jade = write_peft(loras / Path(LORA_JADE).parent, dit, seed=1000, alpha=2)
    _, kohya, kohya_bert = write_kohya(loras / LORA_KOHYA, dit, seed=2000, text_encoder=bert)
    return {LORA_PORCELAIN: TinyLoRA(porcelain, []), LORA_JADE: TinyLoRA(jade, []), LORA_KOHYA: TinyLoRA(kohya, kohya_bert)}


def _depth_image(path: Path) -> None:
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    Image.fromarray(np.broadcast_to(ramp[:, None], (64, 64)).copy(), "L").save(path)


def _tiny_adapters(models: Path) -> None:
    """ControlNets (two for the v1.2 all-in-one model, one v1.1) and the IP-Adapter with its image encoder, by the
    core's tiny writers; they fit ``make_tiny``'s seed-0 models."""
    from hunyuan_core.tiny import make_tiny_controlnet, make_tiny_ip_adapter

    controlnets = models / "controlnet"
    (controlnets / "hunyuandit").mkdir(parents=True)
    make_tiny_controlnet(controlnets / CONTROLNET_CANNY, "official", "1.2")
    make_tiny_controlnet(controlnets / CONTROLNET_DEPTH, "official", "1.2", seed=1)
    make_tiny_controlnet(controlnets / CONTROLNET_V11, "diffusers_file", "1.1")
    ipa, encoder = make_tiny_ip_adapter(models)
    (models / "ipadapter").mkdir()
    (models / "clip_vision").mkdir()
    ipa.rename(models / "ipadapter" / IP_ADAPTER)
    encoder.rename(models / "clip_vision" / IMAGE_ENCODER)


@lru_cache(maxsize=1)
def tiny_models() -> TinyModels:
    """Build (once per process) and return the tiny ComfyUI folders."""
    from safetensors.torch import load_file, save_file

    from hunyuan_core.rewriter.tiny import make_tiny_dialoggen
    from hunyuan_core.tiny import make_tiny
    from hunyuan_core.upscaler.tiny import make_tiny_upscaler

    root = Path(tempfile.mkdtemp(prefix="hydit_comfy_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    models = root / "models"
    make_tiny(models / "checkpoints", "comfy", "1.2")
    official = make_tiny(root / "official", "official", "1.1")
    (models / "hunyuan").mkdir(parents=True)
    shutil.move(str(official), models / OFFICIAL_V11)
    make_tiny(models / DIFFUSERS_V12, "diffusers", "1.2")
    t2i = models / OFFICIAL_V11 / "t2i"

    (models / "diffusion_models").mkdir()
    shutil.copy(t2i / "model" / "pytorch_model_ema.pt", models / DIT_ONLY)
    all_in_one = load_file(str(models / ALL_IN_ONE))
    (models / "vae").mkdir()
    save_file({k[4:]: v for k, v in all_in_one.items() if k.startswith("vae.")}, str(models / VAE_FILE))
    shutil.copy(models / VAE_FILE, models / MISPLACED_VAE)
    bert, mt5 = models / "text_encoders" / BERT_FILE, models / "text_encoders" / MT5_FILE
    bert.parent.mkdir(parents=True)
    mt5.parent.mkdir(parents=True)
    shutil.copy(t2i / "clip_text_encoder" / "pytorch_model.bin", bert)
    shutil.copy(t2i / "tokenizer" / "vocab.txt", bert.parent / "vocab.txt")
    shutil.copy(t2i / "mt5" / "pytorch_model.bin", mt5)
    shutil.copy(t2i / "mt5" / "spiece.model", mt5.parent / "spiece.model")

    make_tiny_upscaler(models / UPSCALER, "RRDBNet", 4)
    make_tiny_dialoggen(models / DIALOGGEN)

    loras = _tiny_loras(models / "loras", models / ALL_IN_ONE)
    _tiny_adapters(models)

    (root / "input").mkdir()
    _example_image(root / "input" / EXAMPLE_IMAGE)
    _depth_image(root / "input" / DEPTH_IMAGE)
    return TinyModels(models, root / "input", root / "output", loras)
