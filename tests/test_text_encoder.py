"""The bilingual text encoder against diffusers' HunyuanDiTPipeline.encode_prompt, across every layout."""

import warnings

import pytest
import torch

from hunyuan_core.errors import InputError, ModelFileError
from hunyuan_core.formats.all_in_one import load_text_encoder_from_single_file
from hunyuan_core.formats.files import read_state_dict
from hunyuan_core.formats.text_encoder_files import (
    bert_config_from_weights,
    bert_heads_for,
    load_text_encoder_from_folders,
    t5_config_from_weights,
)
from hunyuan_core.model.text_encoder import (
    CLIP_LENGTH,
    DEFAULT_NEGATIVE_PROMPT,
    T5_LENGTH,
    TextEmbeddings,
)

PROMPTS = ["一只戴着墨镜的柴犬在沙滩上奔跑", "A shiba inu wearing sunglasses, oil painting", ""]


def diffusers_dirs(root):
    return [root / n for n in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")]


def official_dirs(ckpts):
    t2i = ckpts / "t2i"
    return [t2i / "clip_text_encoder", t2i / "tokenizer", t2i / "mt5", t2i / "mt5"]


@pytest.fixture(scope="module")
def official(tiny_official):
    return load_text_encoder_from_folders(*official_dirs(tiny_official), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def reference_pipe(tiny_diffusers):
    """diffusers' own pipeline, its encoders and tokenizers loaded by diffusers/transformers from the folder."""
    from diffusers import HunyuanDiTPipeline

    return HunyuanDiTPipeline.from_pretrained(tiny_diffusers, transformer=None, vae=None, torch_dtype=torch.float32)


def test_default_negative_prompt_is_the_official_one():
    assert DEFAULT_NEGATIVE_PROMPT == "错误的眼睛，糟糕的人脸，毁容，糟糕的艺术，变形，多余的肢体，模糊的颜色，模糊，重复，病态，残缺，"


def test_matches_diffusers_encode_prompt(tiny_diffusers, reference_pipe):
    ours = load_text_encoder_from_folders(*diffusers_dirs(tiny_diffusers), device="cpu", dtype=torch.float32)
    pos, neg = ours.encode(PROMPTS), ours.encode(["模糊"] * len(PROMPTS))
    for index, length, (emb, mask, neg_emb, neg_mask) in (
        (0, CLIP_LENGTH, (pos.clip, pos.clip_mask, neg.clip, neg.clip_mask)),
        (1, T5_LENGTH, (pos.t5, pos.t5_mask, neg.t5, neg.t5_mask)),
    ):
        ref, ref_neg, ref_mask, ref_neg_mask = reference_pipe.encode_prompt(
            PROMPTS, device="cpu", dtype=torch.float32, negative_prompt=["模糊"] * len(PROMPTS),
            max_sequence_length=length, text_encoder_index=index,
        )
        assert torch.equal(mask, ref_mask) and torch.equal(neg_mask, ref_neg_mask)
        torch.testing.assert_close(emb, ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(neg_emb, ref_neg, rtol=0, atol=1e-5)


def test_padding_and_masks(official):
    e = official.encode(PROMPTS)
    assert e.clip.shape == (3, CLIP_LENGTH, 32) and e.t5.shape == (3, T5_LENGTH, 32)
    assert e.clip_mask.dtype == e.t5_mask.dtype == torch.int64
    bert_ids = official.bert_tokenizer(PROMPTS[1]).input_ids  # [CLS] ... [SEP]
    t5_ids = official.mt5_tokenizer(PROMPTS[0]).input_ids  # ... </s>
    assert bert_ids[0] == 101 and bert_ids[-1] == 102 and t5_ids[-1] == 1
    assert e.clip_mask[1].sum() == len(bert_ids) and e.t5_mask[0].sum() == len(t5_ids)
    assert e.clip_mask[2].sum() == 2 and e.t5_mask[2].sum() == 1  # empty prompt: [CLS][SEP] / </s>
    for mask in (*e.clip_mask, *e.t5_mask):  # ones, then zeros (right padding)
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
    assert e.truncated == ["", "", ""] and e.prompts == PROMPTS
    # padding is masked out: a prompt encodes the same alone as in a batch of longer ones
    alone = official.encode(PROMPTS[2])
    torch.testing.assert_close(alone.clip[0], e.clip[2], rtol=0, atol=1e-5)
    torch.testing.assert_close(alone.t5[0], e.t5[2], rtol=0, atol=1e-5)


def test_truncation_warns_and_quotes_the_dropped_text(official):
    bert_long = "猫" * (CLIP_LENGTH - 2) + "最后的话"  # exactly 75 content tokens fit beside [CLS] and [SEP]
    with pytest.warns(UserWarning, match="BERT encoder \\(77 tokens\\) ignores '最后的话'") as record:
        e = official.encode([bert_long, "a cat"])
    assert e.truncated == ["最后的话", ""]
    assert not any("mT5" in str(w.message) for w in record)

    both_long = "一只猫在沙滩上奔跑，" * 60 + "尾巴是蓝色的"
    with pytest.warns(UserWarning) as record:
        e = official.encode(both_long)
    message = str(record[0].message)
    assert "BERT encoder" in message and "mT5 encoder (256 tokens) ignores" in message
    assert e.truncated[0].endswith("尾巴是蓝色的") and len(e.truncated[0]) > 100
    assert both_long.endswith(e.truncated[0])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        official.encode("猫" * (CLIP_LENGTH - 2))  # fits exactly: no warning


def test_all_layouts_give_identical_embeddings(official, tiny_diffusers, tiny_comfy, tiny_bert_vocab):
    reference = official.encode(PROMPTS)
    diffusers = load_text_encoder_from_folders(*diffusers_dirs(tiny_diffusers), device="cpu", dtype=torch.float32)
    sd = read_state_dict(tiny_comfy)
    for bert_vocab in (tiny_bert_vocab, tiny_bert_vocab.parent):  # a vocab.txt or a tokenizer folder
        comfy = load_text_encoder_from_single_file(sd, bert_vocab=bert_vocab, device="cpu", dtype=torch.float32)
        for enc in (diffusers, comfy):
            e = enc.encode(PROMPTS)
            for name in ("clip", "clip_mask", "t5", "t5_mask"):
                assert torch.equal(getattr(e, name), getattr(reference, name)), name


def test_lean_loading_in_target_dtype(tiny_official):
    enc = load_text_encoder_from_folders(*official_dirs(tiny_official), device="cpu", dtype=torch.bfloat16)
    assert enc.dtype == torch.bfloat16 and enc.device == torch.device("cpu")
    assert {p.dtype for p in enc.bert.parameters()} == {p.dtype for p in enc.mt5.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in enc.mt5.parameters()) and not enc.bert.training
    # only the mT5 encoder is built from the encoder-decoder file; the tied embedding is stored once
    assert not any(k.startswith(("decoder.", "lm_head.")) for k in enc.mt5.state_dict())
    assert enc.mt5.shared.weight.data_ptr() == enc.mt5.encoder.embed_tokens.weight.data_ptr()
    assert not any(b.is_meta for m in (enc.bert, enc.mt5) for b in m.buffers())
    assert enc.encode("一只猫").t5.dtype == torch.bfloat16


def test_embeddings_container(official):
    a, b = official.encode(["一只猫", "a dog"]), official.encode("模糊")
    assert len(a) == 2
    r = a.repeat(2)
    assert r.prompts == ["一只猫", "一只猫", "a dog", "a dog"] and len(r.truncated) == 4
    assert torch.equal(r.clip[1], a.clip[0]) and torch.equal(r.t5_mask[2], a.t5_mask[1])
    c = TextEmbeddings.cat([b, a])
    assert c.prompts == ["模糊", "一只猫", "a dog"] and torch.equal(c.t5[0], b.t5[0]) and torch.equal(c.clip[2], a.clip[1])
    h = c.to(dtype=torch.float16)
    assert h.clip.dtype == h.t5.dtype == torch.float16 and h.clip_mask.dtype == h.t5_mask.dtype == torch.int64
    with pytest.raises(InputError):
        a.repeat(0)
    with pytest.raises(InputError):
        official.encode([])


def test_config_inference_for_the_real_encoders():
    assert [bert_heads_for(w) for w in (1024, 768, 32, 8)] == [16, 12, 2, 1]
    meta = lambda *shape: torch.empty(*shape, device="meta")  # noqa: E731
    bert = {"embeddings.word_embeddings.weight": meta(47020, 1024), "embeddings.position_embeddings.weight": meta(512, 1024),
            "embeddings.token_type_embeddings.weight": meta(2, 1024), "encoder.layer.23.output.dense.weight": meta(1024, 4096),
            "encoder.layer.0.intermediate.dense.weight": meta(4096, 1024)}
    c = bert_config_from_weights(bert)
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (47020, 1024, 24, 16, 4096)
    att = "encoder.block.0.layer.0.SelfAttention."
    t5 = {"shared.weight": meta(250112, 2048), att + "q.weight": meta(2048, 2048), att + "relative_attention_bias.weight": meta(32, 32),
          "encoder.block.0.layer.1.DenseReluDense.wi_0.weight": meta(5120, 2048), "encoder.block.23.layer.0.layer_norm.weight": meta(2048)}
    c = t5_config_from_weights(t5)
    assert (c.vocab_size, c.d_model, c.num_layers, c.num_heads, c.d_kv, c.d_ff, c.is_gated_act) == (250112, 2048, 24, 32, 64, 5120, True)


def test_clear_errors(tiny_official, tiny_comfy, tmp_path):
    sd = read_state_dict(tiny_comfy)
    with pytest.raises(ModelFileError, match="bert_vocab"):
        load_text_encoder_from_single_file(sd)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_text_encoder_from_single_file(sd, bert_vocab=tmp_path / "nope" / "vocab.txt")
    with pytest.raises(ModelFileError, match="no mT5 text encoder"):
        load_text_encoder_from_single_file({k: v for k, v in sd.items() if "mt5xl" not in k}, bert_vocab=tmp_path)
    dirs = official_dirs(tiny_official)
    with pytest.raises(ModelFileError, match="BERT text encoder folder not found.*missing"):
        load_text_encoder_from_folders(tmp_path / "missing", *dirs[1:])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((dirs[2] / "config.json").read_text())
    with pytest.raises(ModelFileError, match=r"no weights in .*expected \*.safetensors or \*.bin weights\); found: config.json"):
        load_text_encoder_from_folders(*dirs[:2], tmp_path / "empty", dirs[3])
    with pytest.raises(ModelFileError, match="neither spiece.model nor tokenizer.json"):
        load_text_encoder_from_folders(*dirs[:3], tmp_path / "empty")
