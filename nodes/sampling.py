"""The sampler node: text-to-image, img2img (LATENT + denoise) and inpainting (MASK), on ComfyUI's LATENT, with the
model handle's LoRAs, ControlNets and IP-Adapter image prompt."""

from __future__ import annotations

import torch

from hunyuan_core import PreparedControl, apply_loras, prepare_controls
from hunyuan_core.errors import InputError, NumericsError
from hunyuan_core.images import mask_batch
from hunyuan_core.model.text_encoder import TextEmbeddings
from hunyuan_core.sampling.sample import sample as sample_latents
from hunyuan_core.sampling.schedulers import SAMPLERS, SCHEDULES, scheduler_settings
from hunyuan_core.settings.limits import MAX_SEED, MAX_SIZE, MIN_SIZE
from hunyuan_core.settings.sizes import MULTIPLE, PRESETS, check_size, preset_label
from hunyuan_core.settings.validate import dit_activation_bytes

from . import host
from ._common import (
    CONDITIONING,
    MODEL,
    SAMPLING,
    ModelHandle,
    io,
    latent_to_comfy,
    latent_to_core,
)
from .memory import on_compute_device

CUSTOM = "custom (width x height below)"
EMPTY_MASK = "The inpainting mask is all zero (nothing to repaint): sampling was skipped and the latent passed through."
RESOLUTIONS = {preset_label(w, h): (w, h) for w, h in PRESETS}


def resolution_choices() -> list[str]:
    """The resolution picker: the 10 official sizes, then the custom entry."""
    return [*RESOLUTIONS, CUSTOM]


def prepared_controls(model: ModelHandle, width: int, height: int) -> list[PreparedControl]:
    """The handle's ControlNet hints fitted to ``width`` x ``height`` and encoded by their VAEs (each once)."""
    prepared = []
    for control, vae in model.controls:
        with on_compute_device(vae, offload_device=host.vae_offload_device()):
            prepared += prepare_controls([control], vae, width, height)
    return prepared


class HunyuanDiTSampler(io.ComfyNode):
    """Denoises with the DiT; returns ComfyUI LATENT (unscaled SDXL latents, so VAEDecode works on it too)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        size = {"default": 1024, "min": MIN_SIZE, "max": MAX_SIZE, "step": MULTIPLE}
        return io.Schema(
            node_id="HunyuanDiTSampler",
            display_name="HunyuanDiT Sampler",
            category=SAMPLING,
            description="Generates with HunyuanDiT: text-to-image, img2img (latent + denoise) or inpainting (mask).",
            inputs=[
                MODEL.Input("model", tooltip="The DiT from a HunyuanDiT loader."),
                CONDITIONING.Input("positive", tooltip="Encoded prompt: what to draw."),
                CONDITIONING.Input("negative", tooltip="Encoded negative prompt: what to avoid."),
                io.Combo.Input("resolution", options=resolution_choices(), default=preset_label(1024, 1024), tooltip=(
                    "One of the 10 sizes HunyuanDiT was trained on, or custom to use width and height. "
                    "Ignored when a latent is connected (its size is used)."
                )),
                io.Int.Input("width", display_name="width (custom only)", **size, tooltip=(
                    "Width in pixels when resolution is custom (multiple of 16); ignored for the preset sizes."
                )),
                io.Int.Input("height", display_name="height (custom only)", **size, tooltip=(
                    "Height in pixels when resolution is custom (multiple of 16); ignored for the preset sizes."
                )),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip=(
                    "Denoising steps (official: 50; distilled models: 25). With a latent and denoise < 1 only "
                    "the last denoise x steps run."
                )),
                io.Float.Input("cfg", default=6.0, min=0.0, max=30.0, step=0.1, round=0.01, tooltip=(
                    "Classifier-free guidance scale (official: 6). 1 or less turns guidance off."
                )),
                io.Float.Input("guidance_rescale", default=0.0, min=0.0, max=1.0, step=0.01, tooltip=(
                    "Rescales the guided prediction towards the conditional one's spread; fights over-exposure "
                    "at high cfg (0 = off, as official)."
                )),
                io.Combo.Input("sampler_name", options=list(SAMPLERS), default="ddpm", tooltip=(
                    "The sampling algorithm. ddpm, ddim and dpmms are the official ones, the others KSampler's; "
                    "all are diffusers schedulers on HunyuanDiT's noise schedule."
                )),
                io.Combo.Input("schedule", options=list(SCHEDULES), default="default", tooltip=(
                    "Where the steps fall (KSampler's scheduler). default: the sampler's own spacing; a sampler "
                    "without the option refuses it."
                )),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True, tooltip=(
                    "Noise seed; image i of a batch uses seed + i, so any image can be re-made alone."
                )),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip=(
                    "Images per run. With a latent input, each latent is repeated this many times."
                )),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01, tooltip=(
                    "Only with a latent input: how much to change it (1 = start from pure noise)."
                )),
                io.Latent.Input("latent", optional=True, tooltip=(
                    "A starting image for img2img/inpainting (e.g. from HunyuanDiT VAE Encode or VAE Encode)."
                )),
                io.Mask.Input("mask", optional=True, tooltip=(
                    "Inpainting: 1 (white) = repaint, 0 = keep the latent's content. Needs a latent. A LATENT "
                    "noise_mask (Set Latent Noise Mask) is used when this is not connected."
                )),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip=(
                "Unscaled SDXL latents: decode with HunyuanDiT VAE Decode, or ComfyUI's VAE Decode with an SDXL VAE."
            ))],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, resolution, width, height, sampler_name, schedule=None) -> bool | str:
        """Reject a bad size, sampler or schedule before any model loads (ComfyUI then skips its own checks of
        these five; ComfyUI 0.3.64 does not check the values of V3 combos at all)."""
        if resolution is not None and resolution not in resolution_choices():
            return f"resolution '{resolution}' is not one of: {', '.join(resolution_choices())}"
        if sampler_name is not None and sampler_name not in SAMPLERS:
            return f"sampler_name '{sampler_name}' is not one of: {', '.join(SAMPLERS)}"
        if sampler_name is not None and schedule is not None:
            try:
                scheduler_settings(sampler_name, schedule)
            except InputError as exc:
                return str(exc)
        if resolution == CUSTOM and width is not None and height is not None:
            try:
                check_size(int(width), int(height))
            except InputError as exc:
                return str(exc)
        return True

    @classmethod
    def execute(
        cls, model: ModelHandle, positive: TextEmbeddings, negative: TextEmbeddings, resolution: str, width: int, height: int, steps: int,
        cfg: float, guidance_rescale: float, sampler_name: str, seed: int, batch_size: int, denoise: float,
        latent: dict | None = None, mask: torch.Tensor | None = None, schedule: str = "default",
    ) -> io.NodeOutput:
        unique_id = cls.hidden.unique_id
        init = None
        if latent is not None:
            init = latent_to_core(latent)
            height, width = init.shape[2] * 8, init.shape[3] * 8
            if mask is None and latent.get("noise_mask") is not None:
                mask = latent["noise_mask"]
            if mask is not None:
                mask = mask_batch(mask)
                if mask.shape[0] > 1:
                    mask = mask.repeat_interleave(batch_size, dim=0)
            # each latent `batch_size` times in a row, as the core repeats the prompt
            init = init.repeat_interleave(batch_size, dim=0)
            batch_size = init.shape[0]
            if mask is not None and not mask.any():  # sampling would return the latent unchanged
                host.show_text(unique_id, EMPTY_MASK)
                return io.NodeOutput(latent_to_comfy(init), ui={"text": [EMPTY_MASK]})
        elif mask is not None:
            raise InputError(
                "inpainting: a mask was connected without a latent; connect the image to repaint "
                "(HunyuanDiT VAE Encode) to the latent input"
            )
        elif resolution != CUSTOM:
            width, height = RESOLUTIONS[resolution]

        if model.ip_adapter is not None:
            model.ip_adapter.attach(model.dit)  # before ComfyUI loads the DiT: its size counts the image branch
        controls = prepared_controls(model, width, height)
        controlnets = {id(c.controlnet): c.controlnet for c, _vae in model.controls}.values()
        # ComfyUI makes room for the weights and one step's activations (evicting e.g. the text encoders); the
        # DiT and its ControlNets load together, so loading one cannot evict another.
        rows = batch_size * (2 if cfg > 1 else 1)
        work = dit_activation_bytes(model.dit.config, model.dit.dtype, width, height, rows, len(controlnets))
        try:
            with on_compute_device(model.dit, *controlnets, offload_device=host.offload_device(), memory_required=work):
                # This branch's LoRAs, merged from the base weights on the device the DiT is on (a no-op when the
                # last run used the same set; none restores the base exactly): other branches share the DiT.
                apply_loras(model.dit, list(model.loras))
                scaled = sample_latents(
                    model.dit, positive, negative, width=width, height=height, steps=steps, guidance_scale=cfg,
                    guidance_rescale=guidance_rescale, sampler=sampler_name, schedule=schedule, seed=seed,
                    batch_size=batch_size, init_latents=init, strength=denoise if init is not None else 1.0, mask=mask,
                    controls=controls, image_prompt=model.image_prompt,
                    progress=host.progress_callback(steps), cancel=host.cancel_callback(),
                )
        except NumericsError as exc:  # on the node itself, then as the node's error: never a silent black image
            host.show_text(unique_id, f"HunyuanDiT Sampler: {exc}")
            raise
        return io.NodeOutput(latent_to_comfy(scaled))


NODES = [HunyuanDiTSampler]
