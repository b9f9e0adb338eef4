"""Tiny rewriter models in the real file layouts, for tests and for checking an install without downloads.

* :func:`make_tiny_dialoggen`: DialogGen's layout in miniature — LLaVA-v1.6 on Mistral saved by the LLaVA
  code base (original key names, two safetensors shards + index, sentencepiece ``tokenizer.model``,
  ``openai/clip-vit-large-patch14-336/config.json`` beside it).
* :func:`make_tiny_chat_llm`: a Llama-architecture chat model in Hugging Face format with a character-level
  tokenizer and a ChatML chat template.

With a ``reply`` the model is *scripted*: its real weights make it answer exactly that after any prompt
(embeddings are one-hot, attention and MLP outputs zero, and ``lm_head`` maps each token to the next token
of the reply, starting from the prompt's last token), so a whole rewrite can be checked. Without one the
weights are random. Tokenizers are built locally; nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch

from ..outputs import atomic_path, staged_folder, write_bytes, write_text
from .templates import (
    DIALOGGEN_QUERY,
    IMAGE_TOKEN,
    LLAVA_V1_SYSTEM,
    SYSTEM_PROMPT,
    render_llava_v1,
)

DIALOGGEN_REPLY = "<画图>一只玻璃做的鸟，站在枝头上"
CHAT_REPLY = "一只玻璃做的鸟，站在枝头上。阳光照耀"
# The official llava-v1.6 grid [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]] at 28 px tiles.
TINY_PINPOINTS = [[28, 56], [56, 28], [56, 56], [84, 28], [28, 84]]
_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_CHAT_SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
_COMMON_CHARS = "画一个木制的鸟变成玻璃的猫狗花树山水月夜蓝红白黑金色对不起无法绘制再来加上放在桌子风格"


def _script(lm: torch.nn.Module, hidden: int, chain: list[int], stop: int) -> None:
    """Make ``lm`` answer ``chain[1:]`` after a prompt ending in ``chain[0]``, then ``stop``."""
    if len(set(chain)) != len(chain):
        raise ValueError("a scripted reply needs distinct tokens (and none equal to the prompt's last token)")
    vocab = lm.get_input_embeddings().weight.shape[0]
    with torch.no_grad():
        for name, tensor in lm.state_dict().items():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                tensor.zero_()
        lm.get_input_embeddings().weight.copy_(torch.eye(vocab, hidden))
        following = {i: stop for i in range(vocab)} | dict(zip(chain, chain[1:]))
        head = torch.zeros(vocab, hidden)
        for token, nxt in following.items():
            head[nxt, token] = 1.0
        lm.get_output_embeddings().weight.copy_(head)


def make_tiny_chat_llm(dest: str | os.PathLike, reply: str | None = CHAT_REPLY, seed: int = 0) -> Path:
    """Write a tiny chat LLM folder (``config.json``, ``model.safetensors``, ``tokenizer.json``) and return it."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    dest = Path(dest)
    chars = sorted(set(SYSTEM_PROMPT + _COMMON_CHARS + (reply or "") + "".join(map(chr, range(32, 127))) + "\n"))
    vocab = {t: i for i, t in enumerate(_CHAT_SPECIALS + chars)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(_CHAT_SPECIALS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = _CHAT_TEMPLATE
    size, stop = len(vocab), vocab["<|im_end|>"]
    hidden = (size + 7) // 8 * 8 if reply is not None else 32
    config = LlamaConfig(vocab_size=size, hidden_size=hidden, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=4096,
                         eos_token_id=stop, bos_token_id=None, pad_token_id=vocab["<|endoftext|>"],
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if reply is not None:
        _script(model, hidden, [vocab["\n"]] + [vocab[c] for c in reply] + [stop], stop)
    with staged_folder(dest) as stage:  # transformers writes the files itself; they land whole
        tokenizer.save_pretrained(stage)
        model.save_pretrained(stage)
    return dest


def make_tiny_dialoggen(dest: str | os.PathLike, reply: str | None = DIALOGGEN_REPLY, clip_folder: bool = True,
                        seed: int = 0) -> Path:
    """Write a tiny DialogGen checkpoint folder (as ``ckpts/dialoggen``) and return it.

    ``clip_folder=False`` leaves out the vision tower's config folder, so its settings must be read off the
    weights. The vision tower's weights are in the checkpoint (``unfreeze_mm_vision_tower``), as in the release.
    """
    import sentencepiece as spm
    from safetensors.torch import save_file
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaTokenizer,
        MistralConfig,
        MistralForCausalLM,
    )

    dest = Path(dest)
    corpus = [DIALOGGEN_QUERY, LLAVA_V1_SYSTEM, "USER: ASSISTANT: " + _COMMON_CHARS, reply or ""]
    model_file = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 4), model_writer=model_file, vocab_size=450, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
        hard_vocab_limit=False, minloglevel=2)
    write_bytes(dest / "tokenizer.model", model_file.getvalue())
    write_text(dest / "tokenizer_config.json", json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": True}))
    tokenizer = LlamaTokenizer.from_pretrained(str(dest))
    size = len(tokenizer)
    hidden = (size + 7) // 8 * 8
    text_settings = {"vocab_size": size, "hidden_size": hidden, "intermediate_size": 8, "num_hidden_layers": 1,
                     "num_attention_heads": 1, "num_key_value_heads": 1, "max_position_embeddings": 4096,
                     "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "sliding_window": None, "hidden_act": "silu"}
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=1,
                              image_size=28, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    torch.manual_seed(seed)
    lm, tower = MistralForCausalLM(MistralConfig(**text_settings)), CLIPVisionModel(vision)
    if reply is not None:
        last = tokenizer(render_llava_v1([], "x").split(IMAGE_TOKEN)[1]).input_ids[-1]
        eos = tokenizer.eos_token_id
        _script(lm, hidden, [last] + tokenizer(reply, add_special_tokens=False).input_ids + [eos], eos)
    weights = dict(lm.state_dict())  # model.* and lm_head.*: LLaVA kept the language model's own names
    for name, tensor in tower.state_dict().items():
        weights["model.vision_tower.vision_tower.vision_model." + name.removeprefix("vision_model.")] = tensor
    weights |= {"model.mm_projector.0.weight": torch.randn(hidden, 64) * 0.1,
                "model.mm_projector.0.bias": torch.randn(hidden),
                "model.mm_projector.2.weight": torch.randn(hidden, hidden) * 0.1,
                "model.mm_projector.2.bias": torch.randn(hidden), "model.image_newline": torch.randn(hidden)}
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in shards.items():
        with atomic_path(dest / file) as tmp:
            save_file({k: weights[k].half().contiguous() for k in keys}, str(tmp))
    write_text(dest / "model.safetensors.index.json", json.dumps(
        {"metadata": {}, "weight_map": {k: file for file, keys in shards.items() for k in keys}}))
    config = text_settings | {
        "architectures": ["LlavaMistralForCausalLM"], "model_type": "llava_mistral", "torch_dtype": "float16",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 64,
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_patch_merge_type": "spatial_unpad",
        "image_aspect_ratio": "anyres", "image_grid_pinpoints": TINY_PINPOINTS, "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False, "tokenizer_model_max_length": 4096, "unfreeze_mm_vision_tower": True,
        "bos_token_id": 1, "eos_token_id": 2}
    write_text(dest / "config.json", json.dumps(config, indent=1))
    if clip_folder:
        clip = dest / "openai" / "clip-vit-large-patch14-336"
        write_text(clip / "config.json", json.dumps({"model_type": "clip", "vision_config": vision.to_dict()}))
    return dest
