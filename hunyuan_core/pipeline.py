"""Text-to-image end to end: encode the prompts, sample the DiT, decode with the VAE."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .adapters import IPAdapter, LoRA, apply_loras, load_lora
from .controlnet import Control, check_control, check_controlnet, prepare_controls
from .diffusers_style import check_output_type, check_step_end_tensors, generator_seeds, image_size, pick, to_output
from .errors import InputError
from .images import pil_to_tensor
from .loaders import load_parts
from .model.dit import HunyuanDiT
from .model.text_encoder import CLIP_LENGTH, DEFAULT_NEGATIVE_PROMPT, BilingualTextEncoder, TextEmbeddings
from .model.vae import decode_latents, decode_needs_tiles, encode_images
from .offload import CPU, weight_device
from .placement import Placement, resolve_devices
from .progress import TqdmProgress
from .sampling.image_prompt import ImagePrompt
from .sampling.loop import Progress
from .sampling.sample import sample
from .settings.devices import resolve_dtype
from .settings.validate import check_beta_end, check_finite, check_prompts, check_sampling, check_seeds, check_texts


@dataclass
class PipelineOutput:
    """The images (PIL by default; see ``output_type``) with the seed each one was drawn with, and their scaled
    latents. ``tuple(output)`` is ``(images, seeds, latents)``, what ``return_dict=False`` returns."""

    images: list[Image.Image] | np.ndarray | torch.Tensor
    seeds: list[int]
    latents: torch.Tensor

    def __iter__(self):
        return iter((self.images, self.seeds, self.latents))


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


DEFAULT_STRENGTH = 0.8  # img2img: how much of the input image is redrawn


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
        self.vae_tiling = False
        self.progress_bar_config: dict = {}

    def _components(self) -> dict[str, object]:
        return {"text_encoder": self.text_encoder, "dit": self.dit, "vae": self.vae}

    def set_progress_bar_config(self, **config: object) -> None:
        """Options of the sampling progress bar (tqdm's: ``disable=True`` hides it, ``desc``, ``leave``, ...)."""
        self.progress_bar_config = dict(config)

    def enable_vae_tiling(self) -> None:
        """Decode tile by tile from now on (large images in less memory); a call's ``tiled_decode`` wins."""
        self.vae_tiling = True

    def disable_vae_tiling(self) -> None:
        self.vae_tiling = False

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
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance_scale: float = 6.0,
        seed: int | list[int] | None = 42,
        sampler: str = "ddpm",
        batch_size: int | None = None,
        latents: torch.Tensor | None = None,
        guidance_rescale: float = 0.0,
        image: Image.Image | torch.Tensor | None = None,
        strength: float = DEFAULT_STRENGTH,
        mask: Image.Image | torch.Tensor | None = None,
        beta_end: float | None = None,
        tiled_decode: bool | None = None,
        progress: Progress | None = None,
        cancel: Callable[[], None] | None = None,
        controlnets: Sequence[Control] = (),
        ip_adapter: IPAdapter | None = None,
        ip_image: Image.Image | list[Image.Image] | torch.Tensor | None = None,
        ip_scale: float = 1.0,
        image_prompt: ImagePrompt | None = None,
        schedule: str = "default",
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        num_inference_steps: int | None = None,
        num_images_per_prompt: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> PipelineOutput | tuple:
        """Generate images: text-to-image, img2img (``image`` + ``strength``) or inpainting (``image`` + ``mask``).

        The documented names are ours; the diffusers spellings in the last group are accepted as aliases with
        the same meaning (giving both with different values is an error), so a call written for
        ``diffusers.HunyuanDiTPipeline`` runs as is.

        Args:
            prompt: what to draw (Chinese or English), a list of prompts, or encodings from ``encode_prompt``.
            negative_prompt: what to avoid; ``None`` is the official negative prompt, any string ("" included)
                is encoded as given; one for all prompts or one per prompt.
            width, height: pixels, multiples of 16. Default 1024x1024; for img2img the input image's size
                (rounded to a multiple of 16, with a warning when rounding changed it). Given sizes win.
            steps: denoising steps (default 50; alias ``num_inference_steps``).
            guidance_scale: classifier-free guidance (official 6; 1 or less turns it off).
            seed: default 42, so a call repeats its images; ``None`` draws a random one. Image i of a batch uses
                ``seed + i``; a list gives one seed per image. Alias ``generator`` (see below).
            sampler: one of ``hunyuan_core.SAMPLERS`` (ddpm, ddim, dpmms are the official ones; the others carry
                ComfyUI's KSampler names), each a diffusers scheduler.
            batch_size: images per prompt (default 1; alias ``num_images_per_prompt``).
            latents: the starting noise ``[n, 4, height/8, width/8]`` instead of drawing it from the seeds.
            guidance_rescale: 0..1, blends the guided prediction towards the conditional one's spread.
            image: the picture to start from (img2img / inpainting), PIL or ``[B,C,H,W]`` 0..1.
            strength: img2img, how much to change ``image`` (1 = ignore it); default 0.8 (as diffusers).
            mask: inpainting, white (1) = repaint, needs ``image``.
            beta_end: this call's schedule end (default: the one given at load time, else the release's).
            tiled_decode: decode the VAE tile by tile; default: ``enable_vae_tiling()``'s setting, else only when a
                whole decode would not fit in the VAE device's free memory (never on the CPU).
            progress: ``progress(step, total, latents)`` after every step (hosts); the tqdm bar is drawn as well
                unless ``set_progress_bar_config(disable=True)``.
            cancel: called before every step; raises to stop the run.
            schedule: where the steps fall (KSampler's "scheduler"): default, normal, karras, exponential, beta,
                simple, sgm_uniform (``hunyuan_core.SCHEDULES``); refused for samplers whose diffusers class
                lacks the option.
            output_type: "pil" (list of images), "np" (``[B,H,W,3]`` float array), "pt" (``[B,3,H,W]`` tensor),
                both 0..1, or "latent" (the scaled latents, not decoded).
            return_dict: False returns the tuple ``(images, seeds, latents)`` instead of :class:`PipelineOutput`.
            callback_on_step_end: ``fn(pipe, step_index, timestep, {"latents": x}) -> dict`` after every step;
                a ``"latents"`` entry in the returned dict replaces the latents.
            callback_on_step_end_tensor_inputs: the tensors passed to it; only ``"latents"`` exists here.
            controlnets: :class:`~hunyuan_core.Control` items (ControlNet, hint image, strength, start/end)
                guiding the DiT; several are summed.
            ip_adapter, ip_image, ip_scale: an IP-Adapter (``hy.load_ip_adapter``, attached to this pipeline's DiT)
                and its reference image (several: their embeddings averaged) with its weight.
            image_prompt: ready IP-Adapter embeddings (``hy.ImagePrompt``, with scale and start/end) instead of
                ``ip_image``, for an adapter given or attached before.
            num_inference_steps, num_images_per_prompt: diffusers' names of ``steps`` and ``batch_size``.
            generator: a ``torch.Generator`` (its ``initial_seed()`` is ``seed``) or a list, one per image (each
                one's ``initial_seed()`` seeds its image). Only that seed counts, not the generator's device or
                state, so the same call gives the same images anywhere. Conflicts with a ``seed`` other than 42.

        Returns:
            :class:`PipelineOutput` (``images``, ``seeds``, ``latents``), or its tuple when ``return_dict`` is False.
        """
        steps = pick("steps", steps, "num_inference_steps", num_inference_steps, 50)
        batch_size = pick("batch_size", batch_size, "num_images_per_prompt", num_images_per_prompt, 1)
        if generator is not None:
            seed = pick("seed", None if seed == 42 else seed, "generator", generator_seeds(generator), 42)
        if seed is None:
            seed = random.getrandbits(32)  # short enough to retype
        output_type = check_output_type(output_type)
        step_tensors = check_step_end_tensors(callback_on_step_end_tensor_inputs)
        if image is not None:
            width, height = image_size(image, width, height)
        width, height = 1024 if width is None else width, 1024 if height is None else height
        negative_texts = None if isinstance(negative_prompt, TextEmbeddings) else negative_prompt
        count = len(prompt) if isinstance(prompt, TextEmbeddings) else len(check_prompts(prompt, negative_texts))
        check_sampling(width=width, height=height, steps=steps, guidance_scale=guidance_scale,
                       guidance_rescale=guidance_rescale, sampler=sampler, schedule=schedule, seed=seed,
                       batch_size=batch_size, prompts=count, strength=strength if image is not None else 1.0,
                       beta_end=beta_end)
        seeds = check_seeds(seed, count * batch_size)
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
            encoder = ip_adapter.image_encoder
            with self.placement.guest("image_encoder", encoder, "dit") if encoder is not None else nullcontext():
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
                    # the posterior drawn with each image's own seed: image i repeats a single run with seeds[i]
                    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
                    init = encode_images(self.vae, pixels, generator=generators)
                controls = prepare_controls(controlnets, self.vae, width, height)
        step_end = None
        if callback_on_step_end is not None:
            def step_end(i: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
                out = callback_on_step_end(self, i, t, {name: x for name in step_tensors}) or {}
                return out.get("latents", x)
        bar = TqdmProgress(**{"desc": "sampling", **self.progress_bar_config})

        def report(step: int, total: int, x: torch.Tensor) -> None:
            bar(step, total)
            if progress is not None:
                progress(step, total, x)

        nets = {id(c.controlnet): c.controlnet for c in controlnets}  # a ControlNet given twice visits once
        try:
            with self.placement.visit("dit"), ExitStack() as guests:
                for i, net in enumerate(nets.values()):
                    guests.enter_context(self.placement.guest(f"controlnet.{i}", net, "dit"))
                lat = sample(
                    self.dit, positive, neg, width=width, height=height, steps=steps, guidance_scale=guidance_scale,
                    guidance_rescale=guidance_rescale, sampler=sampler, schedule=schedule, seed=seeds,
                    batch_size=batch_size, latents=latents, init_latents=init,
                    strength=strength if image is not None else 1.0, mask=mask_t, beta_end=beta_end or self.beta_end,
                    progress=report, cancel=cancel, step_end=step_end, controls=controls, image_prompt=image_prompt,
                )
        finally:
            bar.close()
        if output_type == "latent":
            images = lat
        else:
            with self.placement.visit("vae"), torch.no_grad():
                z = lat.to(self.vae.device, self.vae.dtype)
                tiled = (self.vae_tiling or decode_needs_tiles(self.vae, z)) if tiled_decode is None else tiled_decode
                images = to_output(decode_latents(self.vae, z, tiled=tiled), output_type)
        out = PipelineOutput(images, seeds, lat)
        return out if return_dict else tuple(out)


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
    bert_length: int = CLIP_LENGTH,
) -> HunyuanDiTPipeline:
    """Load a complete model from an official tree, a diffusers folder or a ComfyUI all-in-one file.

    Args:
        path: the official ``ckpts`` folder (or ``ckpts/t2i``), a diffusers folder, or an all-in-one
            ``.safetensors`` file. Nothing is downloaded; tokenizers come from the model files.
        device: where the model runs; default CUDA, then XPU, MPS, else CPU.
        dtype: "fp32", "fp16", "bf16" or a ``torch.dtype``; default: fp16 on GPUs, fp32 on the CPU (resolved for
            the DiT's device).
        variant: which official weights: "ema", "module", "distill" or "merge" (default: what the folder has).
        bert_vocab: BERT's ``vocab.txt`` for an all-in-one file that lacks it.
        beta_end: the noise schedule's end for every call (default: the release's; 0.02 = official v1.2
            inference).
        offload: None, ``"model"`` (each component on the device only while it works) or ``"blocks"`` (the DiT's
            and mT5's blocks streamed ``resident_blocks`` at a time): less GPU memory, identical images.
        weight_dtype: ``"fp8_e4m3fn"`` / ``"fp8_e5m2"`` stores the DiT's and mT5's block Linears in fp8
            (approximate, see README); None keeps ``dtype``.
        device_map: ``{"text_encoder": ..., "dit": ..., "vae": ...}`` puts components on their own devices
            (``device`` for the ones it does not name).
        resident_blocks: blocks on the device at once with ``offload="blocks"``.
        bert_length: how many tokens BERT reads (default 77, the official training length). Up to the
            BERT's 512 positions lets long prompts reach it; this goes beyond what the model was trained on,
            and prompts within 77 tokens are encoded exactly as by default.
    """
    check_beta_end(beta_end)
    devices = resolve_devices(device, device_map)
    one_device = offload is None and len(set(devices.values())) == 1
    parts = load_parts(path, device=devices["dit"] if one_device else CPU, dtype=resolve_dtype(dtype, devices["dit"]),
                       variant=variant, bert_vocab=bert_vocab, weight_dtype=weight_dtype)
    parts.text_encoder.bert_length = parts.text_encoder.check_bert_length(bert_length)
    pipe = HunyuanDiTPipeline(parts.dit, parts.text_encoder, parts.vae, beta_end=beta_end)
    pipe.set_placement(offload, devices, resident_blocks)
    return pipe
