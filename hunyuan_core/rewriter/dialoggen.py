"""DialogGen, Hunyuan-DiT's official prompt rewriter, from its original LLaVA checkpoint.

The release (``ckpts/dialoggen``) is LLaVA-v1.6 on Mistral-7B saved by the LLaVA code base
(``LlavaMistralForCausalLM``, keys ``model.mm_projector.*``, ``model.vision_tower.vision_tower.*``), which
transformers cannot load by itself. We map its keys onto transformers' LLaVA-NeXT classes and load the
weights as they are — no conversion on disk, no remote code.

Text-only use would *not* match the official behaviour: the official code feeds, on every turn, a
placeholder image of zeros (5 crops, ``image_sizes=(1024, 1024)``, "formatted input as training data")
whose features — 2,928 vectors for the release, neither zero nor negligible after CLIP, the projector and
the row-end ``image_newline`` — sit where ``<image>`` stands in the first user message. DialogGen was
fine-tuned with them there, so we keep them: they depend only on the weights, so they are computed once
per load and reused.

One deliberate difference: the official code cuts the prompt at ``tokenizer_model_max_length`` (4,096)
from the *end*, which after a few long turns loses the newest request; we drop the oldest turns instead.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import InputError, ModelFileError
from ..formats.files import read_folder_state_dict
from ..settings.devices import resolve_device, resolve_dtype
from .local import (
    GenerationOptions,
    LocalModel,
    dtype_kwargs,
    generate,
    quantization_kwargs,
)
from .parsing import ParsedReply, parse_dialoggen
from .templates import IMAGE_TOKEN, History, fit_history, render_llava_v1

# Official sampling (mllm/dialoggen_demo.py eval_model); top_k 50 was transformers' default when it ran.
DIALOGGEN_OPTIONS = GenerationOptions(temperature=0.2, max_new_tokens=512, top_k=50)
PLACEHOLDER_IMAGE_SIZE = (1024, 1024)  # (width, height) the official code declares for its zero image
LLAVA_BASES = {"llava_mistral": "mistral", "llava_llama": "llama"}
_VISION_FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_LLAVA_PREFIXES = ("mm_", "image_", "tokenizer_", "tune_mm", "freeze_mm", "unfreeze_mm", "use_mm")
_NOT_TEXT_SETTINGS = {"architectures", "model_type", "_name_or_path", "transformers_version", "torch_dtype"}


def is_llava_folder(folder: str | os.PathLike) -> bool:
    """True for a checkpoint saved by the LLaVA code base (its config names a vision tower)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return "mm_vision_tower" in data or str(data.get("model_type", "")).startswith("llava_")


class DialogGenBackend:
    """Generates DialogGen replies; holds the model, its tokenizer and the placeholder-image features."""

    style = "dialoggen"
    defaults = DIALOGGEN_OPTIONS

    def __init__(self, folder: str | os.PathLike, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, quantize: str | None = None, keep_loaded: bool = False,
                 make_room: Callable[[int], None] | None = None):
        from transformers import LlamaTokenizer

        self.folder = Path(folder)
        self.name = f"DialogGen ({self.folder})"
        self.config = _read_llava_config(self.folder)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, cpu_default=torch.bfloat16)  # half the memory of fp32
        try:
            # LLaVA's Mistral/Llama checkpoints use the Llama sentencepiece tokenizer (official: use_fast=False).
            self.tokenizer = LlamaTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"DialogGen: no usable tokenizer in '{self.folder}' (expected tokenizer.model "
                                 f"and tokenizer_config.json): {exc}") from None
        self.max_context = int(self.config.get("tokenizer_model_max_length") or self.config["max_position_embeddings"])
        self.llava_config = None  # set by the first load, from the config and the weights
        extra = quantization_kwargs(quantize, self.device, self.dtype)
        self.model = LocalModel(lambda: self._load(extra), self.device, bool(extra), keep_loaded, make_room)
        self._image_features: torch.Tensor | None = None

    def _load(self, extra: dict) -> torch.nn.Module:
        from transformers import LlavaNextForConditionalGeneration

        weights = _official_weights(self.folder, self.config)
        self.llava_config = _llava_next_config(self.config, self.folder, weights)
        model = LlavaNextForConditionalGeneration.from_pretrained(
            None, config=self.llava_config, state_dict=_to_transformers(weights, self.llava_config, self.folder),
            **dtype_kwargs(self.dtype), **extra)
        return model.eval()

    # ------------------------------------------------------------------------------------- prompting
    def parse(self, reply: str) -> ParsedReply:
        return parse_dialoggen(reply)

    def prompt_text(self, history: History, request: str) -> str:
        """The conversation as DialogGen reads it (``<image>`` marks where the placeholder features go)."""
        return render_llava_v1(history, request, image=True)

    def prompt_ids(self, history: History, request: str) -> tuple[list[int], list[int]]:
        """Token ids before and after ``<image>``, tokenized piece by piece as the official code does."""
        before, after = self.prompt_text(history, request).split(IMAGE_TOKEN, 1)
        first = self.tokenizer(before).input_ids
        second = self.tokenizer(after).input_ids
        if second and second[0] == self.tokenizer.bos_token_id:
            second = second[1:]
        return first, second

    def complete(self, history: History, request: str, options: GenerationOptions) -> str:
        """DialogGen's raw reply to ``request`` after ``history`` (oldest turns dropped to fit its context)."""
        with self.model.use() as model:
            features = self.image_features(model)
            budget = self.max_context - options.max_new_tokens - features.shape[0]
            first, second = fit_history(history, lambda kept: self.prompt_ids(kept, request),
                                        lambda ids: len(ids[0]) + len(ids[1]), budget)
            if len(first) + len(second) > budget:
                raise InputError(
                    f"DialogGen: the request is too long: {len(first) + len(second)} tokens with the placeholder "
                    f"image's {features.shape[0]} leave no room within its {self.max_context}-token context "
                    f"for {options.max_new_tokens} new tokens"
                )
            embed = model.get_input_embeddings()
            device = embed.weight.device
            embeds = torch.cat([
                embed(torch.tensor(first, device=device)),
                features.to(device, embed.weight.dtype),
                embed(torch.tensor(second, device=device)),
            ])[None]
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
            out = generate(model, options, inputs_embeds=embeds, attention_mask=mask,
                           pad_token_id=self.tokenizer.eos_token_id, eos_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()

    def image_features(self, model: torch.nn.Module) -> torch.Tensor:
        """The placeholder image's features ``[N, hidden]`` (computed on first use, then cached on the CPU)."""
        if self._image_features is None:
            self._image_features = placeholder_image_features(model, self.llava_config).cpu()
        return self._image_features

    def unload(self) -> None:
        self.model.release()


# ----------------------------------------------------------------------------------- placeholder image
def _submodule(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule whose last name component is ``name`` (its path differs across transformers releases)."""
    for path, module in model.named_modules():
        if path.split(".")[-1] == name:
            return module
    raise ModelFileError(f"the LLaVA-NeXT model has no '{name}' module")


def _parameter(model: torch.nn.Module, name: str) -> torch.Tensor:
    for path, param in model.named_parameters():
        if path.split(".")[-1] == name:
            return param
    raise ModelFileError(f"the LLaVA-NeXT model has no '{name}' parameter")


def best_resolution(size: tuple[int, int], candidates: list[list[int]]) -> tuple[int, int]:
    """LLaVA-NeXT's "anyres" choice: the (width, height) keeping the most of the image, then wasting least."""
    width, height = size
    best, best_kept, best_waste = None, -1, math.inf
    for cand_w, cand_h in candidates:
        scale = min(cand_w / width, cand_h / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        waste = cand_w * cand_h - kept
        if kept > best_kept or (kept == best_kept and waste < best_waste):
            best, best_kept, best_waste = (cand_w, cand_h), kept, waste
    return best


def _unpad(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop a ``[H, W, D]`` feature map back to the image's aspect ratio (anyres pads to the tile grid)."""
    width, height = size
    rows, cols = grid.shape[:2]
    if width / height > cols / rows:
        kept = int(height * cols / width)
        pad = (rows - kept) // 2
        return grid[pad: rows - pad]
    kept = int(width * rows / height)
    pad = (cols - kept) // 2
    return grid[:, pad: cols - pad]


@torch.no_grad()
def placeholder_image_features(model: torch.nn.Module, config, size: tuple[int, int] = PLACEHOLDER_IMAGE_SIZE
                               ) -> torch.Tensor:
    """Features of the official all-zero placeholder image, packed as LLaVA-v1.6 packs an image.

    The base crop's patches come first, then the tile grid as one spatial map (rows of tiles side by side),
    cropped to the image's aspect ratio, each row ended by ``image_newline``.
    """
    vision = config.vision_config
    cols, rows = (n // vision.image_size for n in best_resolution(size, config.image_grid_pinpoints))
    tower = _submodule(model, "vision_tower")
    projector = _submodule(model, "multi_modal_projector")
    newline = _parameter(model, "image_newline")
    pixels = torch.zeros(1 + rows * cols, 3, vision.image_size, vision.image_size,
                         device=newline.device, dtype=newline.dtype)
    hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[config.vision_feature_layer]
    if config.vision_feature_select_strategy == "default":
        hidden = hidden[:, 1:]  # drop CLS
    features = projector(hidden)
    side = vision.image_size // vision.patch_size
    base, tiles = features[0], features[1:]
    dim = features.shape[-1]
    grid = tiles.reshape(rows, cols, side, side, dim).permute(0, 2, 1, 3, 4).reshape(rows * side, cols * side, dim)
    grid = _unpad(grid, size)
    grid = torch.cat([grid, newline.to(grid.dtype).expand(grid.shape[0], 1, dim)], dim=1)
    return torch.cat([base, grid.reshape(-1, dim)])


# ------------------------------------------------------------------------------------ config and keys
def _read_llava_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelFileError(f"DialogGen: expected an original LLaVA checkpoint folder with config.json; "
                             f"'{folder}' has none")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"DialogGen: '{path}' is not valid JSON ({exc})") from None
    problems = []
    if config.get("model_type") not in LLAVA_BASES:
        problems.append(f"model_type {config.get('model_type')!r} (expected one of {', '.join(LLAVA_BASES)})")
    if config.get("mm_projector_type") != "mlp2x_gelu":
        problems.append(f"mm_projector_type {config.get('mm_projector_type')!r} (expected 'mlp2x_gelu')")
    if config.get("image_aspect_ratio") != "anyres" or "unpad" not in str(config.get("mm_patch_merge_type")):
        problems.append(f"image_aspect_ratio {config.get('image_aspect_ratio')!r} / mm_patch_merge_type "
                        f"{config.get('mm_patch_merge_type')!r} (expected 'anyres' / 'spatial_unpad', LLaVA-v1.6)")
    if config.get("mm_use_im_start_end"):
        problems.append("mm_use_im_start_end true (DialogGen does not use image start/end tokens)")
    if problems:
        raise ModelFileError(f"DialogGen: '{path}' is not a LLaVA-v1.6 checkpoint like the official one: "
                             + "; ".join(problems))
    return config


def _vision_folder(folder: Path, config: dict) -> Path | None:
    """The CLIP folder named by ``mm_vision_tower`` (e.g. ``openai/clip-vit-large-patch14-336``), found
    beside the checkpoint by the longest tail of that path that exists there."""
    parts = Path(str(config.get("mm_vision_tower", ""))).parts
    for i in range(len(parts)):
        candidate = folder.joinpath(*parts[i:])
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _vision_config(folder: Path, config: dict, weights: dict[str, torch.Tensor]):
    """The CLIP vision config: from the vision tower's own folder when present, else read off the weights."""
    from transformers import CLIPVisionConfig

    vision_dir = _vision_folder(folder, config)
    if vision_dir is not None:
        data = json.loads((vision_dir / "config.json").read_text(encoding="utf-8"))
        data = data.get("vision_config", data)
        keys = set(CLIPVisionConfig().to_dict())
        return CLIPVisionConfig(**{k: v for k, v in data.items() if k in keys and k != "model_type"})
    patch = weights["vision_tower.embeddings.patch_embedding.weight"]
    positions = weights["vision_tower.embeddings.position_embedding.weight"].shape[0]
    layers = {int(m.group(1)) for k in weights if (m := re.match(r"vision_tower\.encoder\.layers\.(\d+)\.", k))}
    hidden = patch.shape[0]
    return CLIPVisionConfig(
        hidden_size=hidden, patch_size=patch.shape[-1], image_size=patch.shape[-1] * math.isqrt(positions - 1),
        num_hidden_layers=len(layers), num_attention_heads=max(1, hidden // 64),
        intermediate_size=weights["vision_tower.encoder.layers.0.mlp.fc1.weight"].shape[0],
        hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )


def _llava_next_config(config: dict, folder: Path, weights: dict[str, torch.Tensor]):
    """A transformers ``LlavaNextConfig`` equivalent to the LLaVA config (and its vision tower's)."""
    from transformers import AutoConfig, LlavaNextConfig

    # Everything but LLaVA's own settings describes the language model (rope_theta included, which newer
    # transformers accept as an argument but store elsewhere).
    text_settings = {k: v for k, v in config.items()
                     if not k.startswith(_LLAVA_PREFIXES) and k not in _NOT_TEXT_SETTINGS}
    text = AutoConfig.for_model(LLAVA_BASES[config["model_type"]], **text_settings)
    return LlavaNextConfig(
        text_config=text, vision_config=_vision_config(folder, config, weights),
        image_grid_pinpoints=[list(p) for p in config["image_grid_pinpoints"]],
        vision_feature_layer=int(config.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy="default" if config.get("mm_vision_select_feature", "patch") == "patch" else "full",
        projector_hidden_act="gelu", tie_word_embeddings=False,
    )


def _canonical_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original LLaVA names → layout-neutral names (``language_model.*``, ``vision_tower.*``, ...)."""
    out = {}
    for key, value in sd.items():
        if key.startswith("model.vision_tower.vision_tower."):
            name = "vision_tower." + key[len("model.vision_tower.vision_tower."):].replace("vision_model.", "", 1)
        elif key.startswith("model.mm_projector."):
            index, _, rest = key[len("model.mm_projector."):].partition(".")
            name = {"0": "multi_modal_projector.linear_1.", "2": "multi_modal_projector.linear_2."}.get(index, key) + rest
        elif key == "model.image_newline":
            name = "image_newline"
        elif key.startswith("model."):
            name = "language_model." + key[len("model."):]
        else:
            name = key
        out[name] = value
    return out


def _canonical_target(key: str) -> str:
    """transformers' LLaVA-NeXT names (4.4x: ``language_model.model.*``; later: ``model.language_model.*``)."""
    key = re.sub(r"^model\.", "", key)
    key = key.replace("language_model.model.", "language_model.", 1)
    key = re.sub(r"^language_model\.lm_head\.", "lm_head.", key)
    return key.replace("vision_tower.vision_model.", "vision_tower.", 1)


def _clip_folder_weights(folder: Path | None) -> dict[str, torch.Tensor]:
    """Vision weights from the separate CLIP folder (``vision_model.*`` of a CLIPModel), if it has any."""
    from ..formats.files import read_state_dict

    if folder is None:
        return {}
    for name in _VISION_FOLDER_WEIGHTS:
        if (folder / name).is_file():
            sd = read_state_dict(folder / name, what="DialogGen vision tower")
            return {"vision_tower." + k[len("vision_model."):]: v for k, v in sd.items() if k.startswith("vision_model.")}
    return {}


def _official_weights(folder: Path, config: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under layout-neutral names, with the vision tower the official code uses:
    the checkpoint's own when LLaVA fine-tuned it (``unfreeze_mm_vision_tower``) or when the CLIP folder
    has no weights, else the CLIP folder's."""
    weights = _canonical_official(read_folder_state_dict(folder, "DialogGen"))
    folder_vision = {} if config.get("unfreeze_mm_vision_tower") else _clip_folder_weights(_vision_folder(folder, config))
    if folder_vision:
        weights = {k: v for k, v in weights.items() if not k.startswith("vision_tower.")} | folder_vision
    if "vision_tower.embeddings.patch_embedding.weight" not in weights:
        raise ModelFileError(
            f"DialogGen: no vision tower weights in '{folder}' nor in '{config.get('mm_vision_tower')}' beside it; "
            "DialogGen needs them (it reads a placeholder image on every turn, as it was trained)"
        )
    return weights


def _to_transformers(weights: dict[str, torch.Tensor], llava_config, folder: Path) -> dict[str, torch.Tensor]:
    """``weights`` under the names of the installed transformers' LLaVA-NeXT model; every one it needs."""
    from transformers import LlavaNextForConditionalGeneration

    with torch.device("meta"):
        targets = list(LlavaNextForConditionalGeneration(llava_config).state_dict())
    mapped, missing = {}, []
    for target in targets:
        source = _canonical_target(target)
        if source in weights:
            mapped[target] = weights[source]
        elif not source.endswith(("position_ids", "inv_freq")):
            missing.append(source)
    if missing:
        raise ModelFileError(
            f"DialogGen: '{folder}' lacks {len(missing)} of the {len(targets)} tensors a LLaVA-v1.6 model needs "
            f"(e.g. {', '.join(missing[:4])})"
        )
    return mapped
