"""Text-to-image end to end: encode the prompts, sample the DiT, decode with the VAE."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from .adapters import IPAdapter, LoRA, apply_loras, load_lora
from .controlnet import Control, check_control, check_controlnet, prepare_controls
from .errors import InputError
from .images import pil_to_tensor, tensor_to_pil
from .loaders import load_parts
from .model.dit import HunyuanDiT
from .model.fp8 import resolve_weight_dtype, store_fp8
from .model.text_encoder import DEFAULT_NEGATIVE_PROMPT, BilingualTextEncoder, TextEmbeddings
from .model.vae import decode_latents, decode_needs_tiles, encode_images
from .offload import CPU, weight_device
from .placement import Placement, resolve_devices
from .sampling.image_prompt import ImagePrompt
from .sampling.loop import Progress
from .sampling.sample import sample
from .settings.devices import resolve_dtype
from .settings.validate import check_beta_end, check_finite, check_prompts, check_sampling, check_texts


@dataclass
class PipelineOutput:
    """Images with the seed each one was drawn with, and their scaled latents."""

    images: list[Image.Image]
    seeds: list[int]
    latents: torch.Tensor


def prepare_image(image: Image.Image | torch.Tensor, width: int, height: int, mode: str = "RGB") -> torch.Tensor:
    """PIL image (or [B,C,H,W] / [C,H,W] tensor in 0..1) -> float tensor [B,C,height,width] in 0..1."""
    kind = "mask" if mode == "L" else "image"
    if not isinstance(image, (Image.Image, torch.Tensor)):
        raise InputError(f"the {kind} must be a PIL image or a [B,C,H,W] tensor, found {type(image).__name__}")
    found = tuple(image.shape) if isinstance(image, torch.Tensor) else image.size
    if 0 in found:
        raise InputError(f"the {kind} is empty ({found}); expected a picture to resize to {width}x{height}")
    if isinstance(image, torch.Tensor):
        check_finite(kind, image)
        t = image[None] if image.ndim == 3 else image
        if t.shape[-2:] != (height, width):
            t = torch.nn.functional.interpolate(t.float(), size=(height, width), mode="bicubic", align_corners=False)
        return t.float().clamp(0, 1)
    image = image.convert(mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.LANCZOS)
    return pil_to_tensor(image)


class HunyuanDiTPipeline:
    """DiT + bilingual text encoder + SDXL VAE. ``beta_end`` overrides the release's default schedule end."""

    def __init__(self, dit: HunyuanDiT, text_encoder: BilingualTextEncoder, vae, beta_end: float | None = None):
        self.dit = dit
        self.text_encoder = text_encoder
        self.vae = vae
        self.beta_end = check_beta_end(beta_end)
        self.loras: list[tuple[LoRA, float]] = []  # what set_loras merged
        self._lora_files: dict[str, LoRA] = {}  # path -> LoRA of the current set
        self.placement = Placement(self._components(), {n: weight_device(c) for n, c in self._components().items()})

    def _components(self) -> dict[str, object]:
        return {"text_encoder": self.text_encoder, "dit": self.dit, "vae": self.vae}

    @property
    def version(self) -> str:
        """The release family, ``"1.1"`` or ``"1.2"``."""
        return self.dit.config.version

    @property
    def device(self) -> torch.device:
        """Where the DiT computes (in an offload mode its weights rest elsewhere between runs)."""
        return self.placement.devices["dit"]

    def to(self, device: str | torch.device) -> "HunyuanDiTPipeline":
        """Every component on ``device``, for good (ends an offload mode)."""
        self.set_placement(None, resolve_devices(device, None))
        return self

    def set_placement(self, offload: str | None, devices: Mapping[str, torch.device], resident_blocks: int = 2,
                      rest: torch.device = CPU) -> None:
        """Place the components anew: ``offload`` mode (None, ``"model"``, ``"blocks"``, see
        :mod:`hunyuan_core.placement`), compute ``devices`` per component, offloaded weights resting on ``rest``."""
        self.placement.close()
        self.placement = Placement(self._components(), devices, offload, resident_blocks, rest)

    def enable_model_cpu_offload(self, device: str | torch.device | None = None) -> None:
        """diffusers' name for ``offload="model"``: each component on ``device`` only while it works."""
        self.set_placement("model", resolve_devices(device, None))

    def enable_sequential_cpu_offload(self, device: str | torch.device | None = None, resident_blocks: int = 2) -> None:
        """diffusers' name for ``offload="blocks"``: the DiT's and mT5's blocks stream through ``device``."""
        self.set_placement("blocks", resolve_devices(device, None), resident_blocks)

    def set_loras(self, loras: list[tuple[LoRA | str | os.PathLike, float]]) -> None:
        """Use exactly these LoRAs from now on: ``[(path_or_lora, strength), ...]``, merged into the DiT and (their
        ``te1`` parts) into BERT; ``[]`` restores the base weights exactly. A path loaded for the current set is
        not read again. Prompts are encoded and the DiT's text context computed on every call, so the next
        image sees the new weights everywhere (pooler, cross-attention keys/values, BERT)."""
        pairs = []
        for item in loras:
            if not (isinstance(item, (tuple, list)) and len(item) == 2
                    and isinstance(item[0], (LoRA, str, os.PathLike))):
                raise InputError(f"set_loras takes (path or LoRA, strength) pairs; found {item!r:.80}")
            source, strength = item
            if not isinstance(source, LoRA):
                path = os.fspath(source)
                source = self._lora_files.get(path) or load_lora(path)
                self._lora_files[path] = source
            pairs.append((source, strength))
        apply_loras(self.dit, pairs)
        apply_loras(self.text_encoder, pairs)
        self.loras = pairs
        self._lora_files = {path: lora for path, lora in self._lora_files.items() if any(lora is l for l, _ in pairs)}

    def encode_prompt(self, prompt: str | list[str] | TextEmbeddings | None, negative: bool = False) -> TextEmbeddings:
        """Encode once, reuse for many samples. A negative prompt of ``None`` is the official negative prompt;
        any string, ``""`` included, is encoded as given (as the text-encode node does)."""
        if isinstance(prompt, TextEmbeddings):
            return prompt
        texts = (check_texts("negative_prompt", DEFAULT_NEGATIVE_PROMPT if prompt is None else prompt) if negative
                 else check_prompts(prompt))
        with self.placement.visit("text_encoder"):
            return self.text_encoder.encode(texts)

    def __call__(
        self,
        prompt: str | list[str] | TextEmbeddings,
        negative_prompt: str | list[str] | TextEmbeddings | None = None,
        width: int = 1024,
        height: int = 1024,
        steps: int = 50,
        guidance_scale: float = 6.0,
        seed: int | None = 42,
        sampler: str = "ddpm",
        batch_size: int = 1,
        latents: torch.Tensor | None = None,
        guidance_rescale: float = 0.0,
        image: Image.Image | torch.Tensor | None = None,
        strength: float = 0.8,
        mask: Image.Image | torch.Tensor | None = None,
        beta_end: float | None = None,
        tiled_decode: bool | None = None,
        progress: Progress | None = None,
        cancel=None,
        controlnets: Sequence[Control] = (),
        ip_adapter: IPAdapter | None = None,
        ip_image: Image.Image | list[Image.Image] | torch.Tensor | None = None,
        ip_scale: float = 1.0,
        image_prompt: ImagePrompt | None = None,
    ) -> PipelineOutput:
        """Generate images. ``image`` (+ ``strength``) is img2img, ``mask`` (white = repaint) inpaints ``image``.
        ``ip_adapter`` + ``ip_image`` (one image, or several whose embeddings are averaged) add an image prompt of
        weight ``ip_scale``; the adapter is attached to this pipeline's DiT. ``image_prompt`` instead of ``ip_image``
        passes ready embeddings (with their scale and start/end) for an adapter given or attached before.

        ``negative_prompt`` None is the official negative prompt; any string, "" included, is encoded as given.
        ``seed`` None draws a random one; image i of a batch uses ``seed + i``. ``tiled_decode`` None decodes
        in tiles only when a whole decode would not fit in the VAE device's free memory (never on the CPU).
        ``controlnets`` (:class:`~hunyuan_core.Control` items) guide the DiT; several are summed.
        """
        if seed is None:
            seed = random.getrandbits(32)  # short enough to retype
        negative_texts = None if isinstance(negative_prompt, TextEmbeddings) else negative_prompt
        count = len(prompt) if isinstance(prompt, TextEmbeddings) else len(check_prompts(prompt, negative_texts))
        check_sampling(width=width, height=height, steps=steps, guidance_scale=guidance_scale,
                       guidance_rescale=guidance_rescale, sampler=sampler, seed=seed, batch_size=batch_size,
                       prompts=count, strength=strength if image is not None else 1.0, beta_end=beta_end)
        for control in controlnets:
            check_control(control)
            check_controlnet(control.controlnet, self.dit)
        if ip_image is not None and (ip_adapter is None or image_prompt is not None):
            raise InputError("ip_image needs ip_adapter (hy.load_ip_adapter), and replaces image_prompt")
        if ip_adapter is not None and ip_image is None and image_prompt is None:
            raise InputError("ip_adapter needs ip_image (or a ready image_prompt)")
        if ip_adapter is not None:
            ip_adapter.attach(self.dit)  # refuses a DiT it does not fit before the image encoder runs
        if ip_image is not None:
            image_prompt = ImagePrompt(ip_adapter.encode_image(ip_image), scale=ip_scale)
        if image_prompt is not None:
            image_prompt.check()
        if mask is not None and image is None:
            raise InputError("a mask needs the image to inpaint: pass image= as well")
        with self.placement.visit("text_encoder"):
            positive = self.encode_prompt(prompt)
            neg = self.encode_prompt(negative_prompt, negative=True)
        mask_t = prepare_image(mask, width, height, mode="L") if mask is not None else None
        init, controls = None, []
        if image is not None or controlnets:
            with self.placement.visit("vae"):
                if image is not None:
                    pixels = prepare_image(image, width, height).to(self.vae.device, self.vae.dtype)
                    init = encode_images(self.vae, pixels, generator=torch.Generator("cpu").manual_seed(seed))
                controls = prepare_controls(controlnets, self.vae, width, height)
        with self.placement.visit("dit"):
            lat = sample(
                self.dit, positive, neg, width=width, height=height, steps=steps, guidance_scale=guidance_scale,
                guidance_rescale=guidance_rescale, sampler=sampler, seed=seed, batch_size=batch_size, latents=latents,
                init_latents=init, strength=strength if image is not None else 1.0, mask=mask_t,
                beta_end=beta_end or self.beta_end, progress=progress, cancel=cancel, controls=controls,
                image_prompt=image_prompt,
            )
        with self.placement.visit("vae"), torch.no_grad():
            z = lat.to(self.vae.device, self.vae.dtype)
            tiled = decode_needs_tiles(self.vae, z) if tiled_decode is None else tiled_decode
            pixels = decode_latents(self.vae, z, tiled=tiled)
        return PipelineOutput([tensor_to_pil(p[None]) for p in pixels], [seed + i for i in range(lat.shape[0])], lat)


def load_pipeline(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    variant: str | None = None,
    bert_vocab: str | os.PathLike | None = None,
    beta_end: float | None = None,
    offload: str | None = None,
    weight_dtype: str | torch.dtype | None = None,
    device_map: Mapping[str, str | torch.device] | None = None,
    resident_blocks: int = 2,
) -> HunyuanDiTPipeline:
    """Load a complete model from an official tree, a diffusers folder or a ComfyUI all-in-one file.

    ``offload`` None / ``"model"`` / ``"blocks"`` (``resident_blocks`` streamed at a time) trades speed for
    GPU memory with identical images; ``weight_dtype`` ``"fp8_e4m3fn"`` / ``"fp8_e5m2"`` stores the DiT's and
    mT5's block Linears in fp8 (approximate); ``device_map`` puts ``text_encoder``, ``dit``, ``vae`` on
    their own devices (``device`` for the ones it does not name). ``dtype`` is resolved for the DiT's device.
    """
    check_beta_end(beta_end)
    storage = resolve_weight_dtype(weight_dtype)
    devices = resolve_devices(device, device_map)
    one_device = offload is None and len(set(devices.values())) == 1
    parts = load_parts(path, device=devices["dit"] if one_device else CPU, dtype=resolve_dtype(dtype, devices["dit"]),
                       variant=variant, bert_vocab=bert_vocab)
    if storage is not None:
        store_fp8(parts.dit, storage, "dit")
        store_fp8(parts.text_encoder.mt5, storage, "mt5")
    pipe = HunyuanDiTPipeline(parts.dit, parts.text_encoder, parts.vae, beta_end=beta_end)
    pipe.set_placement(offload, devices, resident_blocks)
    return pipe
