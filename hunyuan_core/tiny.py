"""Tiny random Hunyuan-DiT models, complete and in each real file layout, for tests and install checks.

``make_tiny`` writes the same seeded weights as an official ``ckpts`` tree, a diffusers folder or a
ComfyUI all-in-one ``.safetensors`` file, so every layout must produce identical images. Every weight is
rounded to a value fp16 represents exactly, because the all-in-one file stores fp16 as the real one does.
Tokenizers are built locally: a BERT vocab.txt and an mT5-style sentencepiece model trained in
milliseconds on a small bilingual corpus (pad 0, eos 1, unk 2 like mT5). Nothing is downloaded.
``make_tiny_controlnet`` writes a ControlNet for that tiny DiT in each ControlNet file layout.
"""

from __future__ import annotations

import io
import os
import re
from functools import lru_cache
from pathlib import Path

import torch

from .controlnet.files import save_controlnet
from .controlnet.model import ControlNet
from .errors import InputError
from .formats.all_in_one import bert_vocab_beside
from .formats.convert import LAYOUTS, ModelParts, save_parts
from .model.vae import SDXL_SCALING_FACTOR

VERSIONS = ("1.2", "1.1")

# DiT: depth 4, width 64, 2 heads (head dim 32, divisible by 4 for the 2-D RoPE), MLP 4x.
TINY_DIT = dict(depth=4, hidden_size=64, num_heads=2, mlp_hidden=256, text_dim=32, t5_dim=32, pooled_dim=32)
# BERT width 32 -> 2 heads by text_encoder.bert_heads_for (head size 16), as the all-in-one loader infers.
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=512, type_vocab_size=2)
# mT5: d_model 32 (the DiT's attention pool has 8 heads), gated-GELU like mT5-XL.
TINY_MT5 = dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=1,
                relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", pad_token_id=0,
                eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False)
# SDXL VAE structure (4 levels = 8x downsampling, 4 latent channels) with 32 channels per level.
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 32, 32], layers_per_block=1,
                act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=1024, scaling_factor=SDXL_SCALING_FACTOR,
                force_upcast=False)

_SPECIAL = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CJK = (
    "的一是不了人我在有他这中大来上个国和也子时道说里到你要就出会可对生能而于着自之年过发后作地用家多经"
    "么去天好看起心下样没当把方还如面现同十三想前两长问十只所然进种开美新总高明动水全手心知理眼间点女"
    "男老白花山风云雨雪海河湖月日星光色红黄蓝绿黑金银玉石木火土草树林鸟鱼猫狗马牛羊虎龙凤蝴蝶熊猴兔鸡"
    "鸭猪船车飞机城市街道房屋门窗桥塔庙宫灯画图像照片风格写实卡通油水墨素描插动漫国古代未来科幻梦幻宇"
    "航员骑戴墨镜柴犬奔跑沙滩阳捉追逐小可爱美丽漂亮女孩男孩老人孩子少年穿衣服裙帽子头发眼睛脸笑站坐走"
    "飞游在上下左右前后远近背景远山小船夜晚早晨黄昏春夏秋冬节日中国传统建筑变成玻璃制陶瓷透明的错误糟"
    "糕毁容艺术形多余肢体模糊颜重复病态残缺框架特写四宫格九裸布一个两三只张条朵片座杯茶酒饭菜果苹香蕉"
)
_WORDS = (
    "a an the of in on at with and or to is are wearing sunglasses shiba inu dog cat bird fish horse "
    "astronaut riding running beach sea sky mountain river lake tree flower forest city street house "
    "painting photo style realistic cartoon oil ink watercolor anime portrait landscape night morning "
    "sunset spring summer autumn winter red blue green yellow black white gold silver jade glass wooden "
    "small big cute beautiful girl boy old man woman child hat dress hair eyes face smile sitting standing "
    "flying chasing butterfly butterflies catching traditional chinese building bad ugly blurry high "
    "quality detailed light dark moon sun star cloud rain snow boat bridge tower temple lantern tea cup"
).split()
_CORPUS = [
    "一只戴着墨镜的柴犬在沙滩上奔跑", "a shiba inu wearing sunglasses running on the beach",
    "玉石风格，一只猫在捉蝴蝶", "jade style, a cat catching butterflies",
    "画一个木制的鸟", "draw a wooden bird", "变成玻璃的", "turn it into glass",
    "一个宇航员在骑马", "an astronaut riding a horse", "山水画，远山和小船", "ink landscape painting with a small boat",
    "中国传统建筑，夜晚的灯笼", "traditional chinese building with lanterns at night",
    "可爱的小女孩穿着红色的裙子", "a cute little girl wearing a red dress",
    "春天的花和树林", "spring flowers and a green forest", "冬天的雪山和湖", "a snow mountain and a lake in winter",
    "油画风格的城市街道", "an oil painting of a city street", "卡通风格的小狗和小猫", "a cartoon dog and a cartoon cat",
    "错误的眼睛，糟糕的人脸，毁容，糟糕的艺术，变形，多余的肢体，模糊的颜色，模糊，重复，病态，残缺，",
    "bad eyes, ugly face, blurry colors, extra limbs, low quality",
    "金色的阳光照在海面上", "golden sunlight over the sea", "一杯热茶和苹果", "a cup of hot tea and an apple",
    "月亮和星星在夜空中", "the moon and stars in the night sky", "老人坐在桥上看远山", "an old man sitting on a bridge",
    "high quality, detailed, 4k photo", "高质量，细节丰富的照片", "蓝色的鱼在水里游", "blue fish swimming in the water",
]


def _bert_vocab() -> list[str]:
    """The tiny BERT vocabulary: special tokens at their BERT ids (0, 100-103), ASCII, CJK, English words."""
    ascii_chars = [c for c in (chr(i) for i in range(33, 127)) if not c.isupper()]
    pieces = ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + ["##s", "##es", "##ing", "##ed", "##ly"]
    full_width = list("，。、！？：；（）“”《》")
    out: list[str] = []
    for tok in _SPECIAL + ascii_chars + pieces + full_width + list(_CJK) + _WORDS:
        if tok not in out:
            out.append(tok)
    return out


@lru_cache(maxsize=1)
def _spiece_model() -> bytes:
    """An mT5-style unigram sentencepiece model (pad 0, eos 1, unk 2, NFKC), trained on the bilingual corpus."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 3), model_writer=buf, vocab_size=400, hard_vocab_limit=False,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        normalization_rule_name="nmt_nfkc", num_threads=1, minloglevel=2,
    )
    return buf.getvalue()


def _fp16_exact(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous fp32 copies rounded through fp16, so an fp16 file holds exactly the same numbers."""
    return {k: (v.half().float() if v.is_floating_point() else v).contiguous().clone() for k, v in sd.items()}


@lru_cache(maxsize=4)
def _random_parts(version: str, seed: int) -> ModelParts:
    """Seeded random weights (the caller's RNG state is left untouched); cached, the writers only read them."""
    import sentencepiece as spm
    from diffusers import AutoencoderKL
    from transformers import (
        BertConfig,
        BertModel,
        MT5Config,
        MT5ForConditionalGeneration,
    )

    from .model.config import DiTConfig
    from .model.dit import HunyuanDiT

    vocab, spiece = _bert_vocab(), _spiece_model()
    pieces = spm.SentencePieceProcessor(model_proto=spiece).get_piece_size()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bert_config = BertConfig(vocab_size=len(vocab), **TINY_BERT)
        bert_config.architectures = ["BertModel"]
        bert = _fp16_exact(BertModel(bert_config).state_dict())
        mt5_config = MT5Config(vocab_size=pieces + 12, **TINY_MT5)  # mT5-XL too has a few ids beyond its spm
        mt5_config.architectures = ["MT5ForConditionalGeneration"]
        mt5 = _fp16_exact(MT5ForConditionalGeneration(mt5_config).state_dict())
        size_cond = version == "1.1"
        dit_config = DiTConfig(**TINY_DIT, size_cond=size_cond, style_cond=size_cond)
        dit = HunyuanDiT(dit_config)
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in dit.named_parameters():
                is_norm_scale = re.search(r"norm[^.]*\.weight$", name) is not None
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen) if is_norm_scale
                        else 0.05 * torch.randn(p.shape, generator=gen))
        vae = _fp16_exact(AutoencoderKL(**TINY_VAE).state_dict())
    # The official BERT file also carries the image tower of its CLIP-style training model; loaders drop it.
    visual = {"visual.conv1.weight": torch.zeros(8, 3, 4, 4), "visual.ln_post.weight": torch.ones(8)}
    return ModelParts(version, _fp16_exact(dit.state_dict()), dit_config, bert, bert_config, mt5, mt5_config, vae,
                      dict(TINY_VAE), vocab, spiece, clip_extra=visual)


def tiny_bert_vocab_path(dest: str | os.PathLike) -> Path:
    """The BERT vocab.txt that ``make_tiny(dest, "comfy")`` writes beside the all-in-one file."""
    return bert_vocab_beside(Path(dest) / "model.safetensors")


def make_tiny(dest: str | os.PathLike, layout: str = "official", version: str = "1.2", seed: int = 0,
              overwrite: bool = False) -> Path:
    """Write a complete tiny random model into ``dest`` and return the path to load.

    official: ``dest/ckpts`` (``t2i/model/pytorch_model_ema.pt``, ``clip_text_encoder/``, ``tokenizer/``,
    ``mt5/``, ``sdxl-vae-fp16-fix/``); diffusers: ``dest`` itself (``model_index.json``, ``transformer/``, ...); comfy:
    ``dest/hunyuan_dit_<version>.safetensors`` plus ``dest/hydit_clip_tokenizer/`` (see
    :func:`tiny_bert_vocab_path`). ``version`` "1.1" adds size and style conditioning. The same seed gives
    the same weights in every layout. Files already at ``dest`` are replaced only with ``overwrite``.
    """
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if version not in VERSIONS:
        raise InputError(f"version must be one of {', '.join(VERSIONS)}; got {version!r}")
    return save_parts(_random_parts(version, seed), dest, layout, overwrite)


def tiny_controlnet(version: str = "1.2", seed: int = 0) -> ControlNet:
    """A ControlNet for the tiny DiT of ``make_tiny(version=version, seed=seed)``: its front end and first
    blocks copied from that DiT (as the official training starts), every weight then moved by seeded noise
    and the zero-initialised projections random, so that it visibly changes the result."""
    if version not in VERSIONS:
        raise InputError(f"version must be one of {', '.join(VERSIONS)}; got {version!r}")
    dit = _random_parts(version, seed).dit
    config = _random_parts(version, seed).dit_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        controlnet = ControlNet(config)
    sd = controlnet.state_dict()
    gen = torch.Generator().manual_seed(seed + 3)
    for name, t in sd.items():
        base = dit[name] if name in dit else torch.zeros_like(t)
        t.copy_(base + 0.05 * torch.randn(t.shape, generator=gen))
    controlnet.load_state_dict(_fp16_exact(sd))
    return controlnet.eval()


def make_tiny_controlnet(dest: str | os.PathLike, layout: str = "official", version: str = "1.2", seed: int = 0,
                         overwrite: bool = False) -> Path:
    """Write :func:`tiny_controlnet` at ``dest`` in a ControlNet layout (``official`` .pt, ``safetensors``,
    ``diffusers`` folder, ``diffusers_file``) and return the path to load with ``hy.load_controlnet``."""
    return save_controlnet(tiny_controlnet(version, seed), dest, layout, overwrite)
# IP-Adapter for TINY_DIT (8 image tokens as the release, from a 16-d embedding) and its image encoder: a CLIP ViT
# tower at the real 224 px / patch 14 / 80-wide heads, 160 wide (2 heads), 2 layers, projecting to 16.
TINY_IP_ADAPTER = dict(clip_dim=16, tokens=8)
TINY_IMAGE_ENCODER = dict(width=160, layers=2, patch=14, image_size=224)


def tiny_image_encoder_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random ``visual.*`` weights in the official (Chinese-CLIP / OpenAI CLIP) names, fp16-exact."""
    w, p, size = TINY_IMAGE_ENCODER["width"], TINY_IMAGE_ENCODER["patch"], TINY_IMAGE_ENCODER["image_size"]
    gen = torch.Generator().manual_seed(seed + 7)

    def rand(*shape: int, scale: float = 0.05, offset: float = 0.0) -> torch.Tensor:
        return offset + scale * torch.randn(shape, generator=gen)

    sd = {
        "conv1.weight": rand(w, 3, p, p), "class_embedding": rand(w, scale=0.5),
        "positional_embedding": rand((size // p) ** 2 + 1, w, scale=0.5),
        "ln_pre.weight": rand(w, offset=1.0), "ln_pre.bias": rand(w),
        "ln_post.weight": rand(w, offset=1.0), "ln_post.bias": rand(w),
        "proj": rand(w, TINY_IP_ADAPTER["clip_dim"], scale=0.1),
    }
    for i in range(TINY_IMAGE_ENCODER["layers"]):
        b = f"transformer.resblocks.{i}."
        sd.update({
            b + "attn.in_proj_weight": rand(3 * w, w), b + "attn.in_proj_bias": rand(3 * w),
            b + "attn.out_proj.weight": rand(w, w), b + "attn.out_proj.bias": rand(w),
            b + "ln_1.weight": rand(w, offset=1.0), b + "ln_1.bias": rand(w),
            b + "ln_2.weight": rand(w, offset=1.0), b + "ln_2.bias": rand(w),
            b + "mlp.c_fc.weight": rand(4 * w, w), b + "mlp.c_fc.bias": rand(4 * w),
            b + "mlp.c_proj.weight": rand(w, 4 * w), b + "mlp.c_proj.bias": rand(w),
        })
    return _fp16_exact({f"visual.{k}": v for k, v in sd.items()})


def tiny_ip_adapter_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random IP-Adapter weights (the official keys of ``ipa.pt``) that fit the tiny v1.2 DiT, fp16-exact."""
    d, w, heads = TINY_DIT["text_dim"], TINY_DIT["hidden_size"], TINY_DIT["num_heads"]
    clip_dim, tokens = TINY_IP_ADAPTER["clip_dim"], TINY_IP_ADAPTER["tokens"]
    gen = torch.Generator().manual_seed(seed + 11)

    def rand(*shape: int, scale: float = 0.2, offset: float = 0.0) -> torch.Tensor:
        return offset + scale * torch.randn(shape, generator=gen)

    sd = {"ip_adapter_clip_len_trans_block.weight": rand(tokens * d, clip_dim, scale=clip_dim ** -0.5),
          "ip_adapter_clip_len_trans_block.bias": rand(tokens * d),
          "ip_adapter_img_norm_cond.weight": rand(d, offset=1.0), "ip_adapter_img_norm_cond.bias": rand(d)}
    for i in range(TINY_DIT["depth"]):
        b = f"blocks.{i}.attn2."
        sd.update({b + "kv_proj_ip_adapter.weight": rand(2 * w, d), b + "kv_proj_ip_adapter.bias": rand(2 * w),
                   b + "k_norm_ip_adapter.weight": rand(w // heads, offset=1.0),
                   b + "k_norm_ip_adapter.bias": rand(w // heads)})
    return _fp16_exact(sd)


def make_tiny_ip_adapter(dest: str | os.PathLike, seed: int = 0, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a tiny ``ipa.pt`` (fp16, as released) and a tiny ``clip_img_encoder.pt`` in the official training
    checkpoint form (``state_dict`` with ``module.`` prefixes, a stand-in text tower, ``epoch``/``step``) into
    ``dest``; returns both paths. They fit the tiny v1.2 model of :func:`make_tiny`."""
    from .formats.writing import save_pickle

    dest = Path(dest)
    ipa, encoder = dest / "ipa.pt", dest / "clip_img_encoder.pt"
    save_pickle({k: v.half() for k, v in tiny_ip_adapter_weights(seed).items()}, ipa, overwrite)
    gen = torch.Generator().manual_seed(seed + 13)
    text_tower = {"bert.embeddings.word_embeddings.weight": torch.randn(40, 16, generator=gen),
                  "text_projection": torch.randn(16, TINY_IP_ADAPTER["clip_dim"], generator=gen),
                  "logit_scale": torch.tensor(4.6)}
    weights = {f"module.{k}": v for k, v in {**tiny_image_encoder_weights(seed), **text_tower}.items()}
    save_pickle({"state_dict": weights, "epoch": 3, "step": 1200}, encoder, overwrite)
    return ipa, encoder
