"""The diffusers folder (``HunyuanDiT-v1.x-Diffusers``): ``model_index.json``, ``transformer/`` (diffusers key
names), ``text_encoder/`` + ``tokenizer/`` (BERT), ``text_encoder_2/`` + ``tokenizer_2/`` (the mT5 encoder, sharded),
``vae/``, ``scheduler/``. A ``transformer/`` folder alone is a DiT-only folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..model.versions import VERSION_DEFAULTS
from .keys import official_to_diffusers
from .model_files import ModelFiles, TextEncoderFiles
from .writing import (
    mt5_encoder_weights,
    save_safetensors,
    transformers_config_json,
    vae_config_json,
    write_bert_tokenizer,
    write_json,
    write_mt5_tokenizer,
)

if TYPE_CHECKING:
    from .convert import ModelParts


def is_diffusers_folder(path: Path) -> bool:
    return (path / "transformer").is_dir()


def is_transformer_folder(path: Path) -> bool:
    """A diffusers model folder on its own (config.json beside safetensors or .bin weights)."""
    return (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin")))


def locate(path: Path) -> ModelFiles:
    """Every part of the diffusers folder at ``path``."""
    return ModelFiles(
        "diffusers", path / "transformer",
        text_encoder=TextEncoderFiles(path / "text_encoder", path / "tokenizer", path / "text_encoder_2", path / "tokenizer_2"),
        vae=path / "vae",
    )


def write_diffusers(folder: Path, p: ModelParts) -> Path:
    """A diffusers ``HunyuanDiTPipeline`` folder (loads with ``HunyuanDiTPipeline.from_pretrained``)."""
    import diffusers
    from transformers import T5Config

    c = p.dit_config
    write_json(folder / "model_index.json", {
        "_class_name": "HunyuanDiTPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
        "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "BertModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "BertTokenizer"],
        "tokenizer_2": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "HunyuanDiT2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
    write_json(folder / "transformer" / "config.json", {
        "_class_name": "HunyuanDiT2DModel", "_diffusers_version": diffusers.__version__,
        "num_attention_heads": c.num_heads, "attention_head_dim": c.head_dim, "in_channels": c.in_channels,
        "patch_size": c.patch_size, "activation_fn": "gelu-approximate", "sample_size": 128,
        "hidden_size": c.hidden_size, "num_layers": c.depth, "mlp_ratio": c.mlp_hidden / c.hidden_size,
        "learn_sigma": c.learn_sigma, "cross_attention_dim": c.text_dim, "norm_type": "layer_norm",
        "cross_attention_dim_t5": c.t5_dim, "pooled_projection_dim": c.pooled_dim, "text_len": c.text_len,
        "text_len_t5": c.t5_len, "use_style_cond_and_image_meta_size": c.size_cond,
    })
    save_safetensors(official_to_diffusers(p.dit), folder / "transformer" / "diffusion_pytorch_model.safetensors")
    write_json(folder / "text_encoder" / "config.json", transformers_config_json(p.bert_config))
    save_safetensors(p.bert, folder / "text_encoder" / "model.safetensors")
    write_bert_tokenizer(folder / "tokenizer", p.vocab)
    # text_encoder_2: a T5EncoderModel in two shards, like the real 2-shard mT5 encoder.
    t5 = {k: v for k, v in transformers_config_json(p.mt5_config).items() if k not in ("model_type", "architectures")}
    t5_config = T5Config(**t5)
    t5_config.architectures = ["T5EncoderModel"]
    t5_config.is_encoder_decoder = False
    write_json(folder / "text_encoder_2" / "config.json", t5_config.to_dict())
    enc = mt5_encoder_weights(p.mt5)
    names = list(enc)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in shards.items():
        save_safetensors({k: enc[k] for k in keys}, folder / "text_encoder_2" / shard)
    write_json(folder / "text_encoder_2" / "model.safetensors.index.json", {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in enc.values())},
        "weight_map": {k: shard for shard, keys in shards.items() for k in keys},
    })
    write_mt5_tokenizer(folder / "tokenizer_2", p.spiece)
    write_json(folder / "vae" / "config.json", vae_config_json(p.vae_config))
    save_safetensors(p.vae, folder / "vae" / "diffusion_pytorch_model.safetensors")
    d = VERSION_DEFAULTS[p.version]
    write_json(folder / "scheduler" / "scheduler_config.json", {
        "_class_name": "DDPMScheduler", "_diffusers_version": diffusers.__version__,
        "beta_start": d.beta_start, "beta_end": d.beta_end, "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction", "num_train_timesteps": 1000, "clip_sample": False,
        "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading",
        "variance_type": "fixed_small", "trained_betas": None, "rescale_betas_zero_snr": False,
    })
    return folder
