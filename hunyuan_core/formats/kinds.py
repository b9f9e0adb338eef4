"""Name the kind of model a weights file holds, so a wrong file gets "this is an SDXL VAE", not a key dump."""

from __future__ import annotations

from collections.abc import Iterable

DIT = "a Hunyuan-DiT"
BERT = "a BERT text encoder"
T5 = "a T5 / mT5 text encoder"
CONTROLNET = "a Hunyuan-DiT ControlNet"

# Module names of the SD 1.x / SDXL UNet and its CLIP text encoders, in LDM, diffusers and kohya spelling.
_UNET_NAMES = ("input_blocks", "down_blocks", "middle_block", "mid_block", "text_model_encoder", "text_model.encoder")


def _is_lora(key: str) -> bool:
    return ".lora_" in key or "lora_down" in key or key.startswith("lora_")


# (description, predicate over the set of key names); first match wins, most specific first.
_KINDS = [
    ("a ComfyUI all-in-one checkpoint", lambda ks: any(k.startswith("text_encoders.") for k in ks)),
    (CONTROLNET, lambda ks: any(k.endswith(("after_proj_list.0.weight", "input_block.weight")) for k in ks)
     and any(k.endswith(("mlp_t5.0.weight", "text_embedder.linear_1.weight")) for k in ks)),
    ("a Hunyuan-DiT IP-Adapter", lambda ks: any(k.endswith("ip_adapter_clip_len_trans_block.weight") for k in ks)),
    ("an SD / SDXL IP-Adapter", lambda ks: any(".to_k_ip." in k or k.startswith("image_proj.") for k in ks)),
    ("a CLIP model with an image tower (such as the IP-Adapter's clip_img_encoder.pt)",
     lambda ks: any(k.endswith("visual.transformer.resblocks.0.ln_1.weight") for k in ks)),
    (DIT, lambda ks: any(k.endswith("mlp_t5.0.weight") or k.endswith("text_embedder.linear_1.weight") for k in ks)),
    ("an SD / SDXL LoRA", lambda ks: any(_is_lora(k) and any(m in k for m in _UNET_NAMES) for k in ks)),
    ("a Flux LoRA", lambda ks: any(_is_lora(k) and ("double_blocks" in k or "single_transformer_blocks" in k) for k in ks)),
    ("an SD3 LoRA", lambda ks: any(_is_lora(k) and "joint_blocks" in k for k in ks)),
    ("a LoRA", lambda ks: any(map(_is_lora, ks))),
    ("a Stable Diffusion / SDXL UNet", lambda ks: any("input_blocks.0.0.weight" in k or "down_blocks.0.attentions" in k for k in ks)),
    ("a Flux model", lambda ks: any(k.endswith("double_blocks.0.img_attn.qkv.weight") for k in ks)),
    ("an SD3 model", lambda ks: any("joint_blocks.0." in k for k in ks)),
    ("a VAE (SD/SDXL autoencoder)", lambda ks: any(k.endswith(("decoder.conv_in.weight", "encoder.conv_in.weight")) for k in ks)),
    (BERT, lambda ks: any(k.endswith("embeddings.word_embeddings.weight") for k in ks)),
    (T5, lambda ks: any(k.endswith("block.0.layer.0.SelfAttention.q.weight") for k in ks)),
    ("a CLIP text or image encoder", lambda ks: any("text_model.encoder." in k or "vision_model.encoder." in k for k in ks)),
    ("a language model (LLM)", lambda ks: any(k.endswith("embed_tokens.weight") for k in ks) and any("lm_head" in k for k in ks)),
    ("an ESRGAN-family upscaler", lambda ks: any(k.startswith(("conv_first.", "model.0.", "RRDB_trunk.", "body.0.")) for k in ks)),
]


def describe_weights(keys: Iterable[str]) -> str | None:
    """A short noun phrase for what these weight names look like (e.g. ``"a VAE (SD/SDXL autoencoder)"``), or None."""
    ks = set(keys)
    return next((name for name, match in _KINDS if match(ks)), None)
