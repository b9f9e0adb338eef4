"""Opt-in long BERT prompts: the default (77 tokens) is unchanged; with ``bert_length`` BERT reads further, its
output equal to transformers' BERT run on the whole sequence, and the DiT pads positions past 77 with the last
learned padding row."""

import pytest
import torch

import hunyuan_core as hy
from hunyuan_core.errors import InputError
from hunyuan_core.model.text_encoder import CLIP_LENGTH, TextEmbeddings

HEAD = "猫" * (CLIP_LENGTH - 2)  # exactly fills BERT's 77 positions with [CLS] and [SEP]


@pytest.fixture(scope="module")
def pipe(tiny_diffusers):
    return hy.load_pipeline(tiny_diffusers, device="cpu", dtype=torch.float32)


def bert_by_hand(encoder, prompt: str, length: int) -> torch.Tensor:
    tok = encoder.bert_tokenizer(prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return encoder.bert(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])[0]


def test_the_default_stays_77_and_ignores_the_tail(pipe):
    enc = pipe.text_encoder
    assert enc.bert_length == CLIP_LENGTH
    with pytest.warns(UserWarning, match="BERT encoder \\(77 tokens\\) ignores '狗狗狗'"):
        a = enc.encode(HEAD + "狗狗狗")
    b = enc.encode(HEAD + "鱼")
    assert a.clip.shape[1] == CLIP_LENGTH and torch.equal(a.clip, b.clip)
    assert torch.equal(a.clip, bert_by_hand(enc, HEAD + "狗狗狗", CLIP_LENGTH))


def test_opted_in_the_tail_changes_the_embedding(pipe):
    enc = pipe.text_encoder
    a, b = enc.encode(HEAD + "狗狗狗", bert_length=128), enc.encode(HEAD + "鱼", bert_length=128)
    assert a.clip.shape[1] == CLIP_LENGTH + 3 and a.clip_mask.sum() == CLIP_LENGTH + 3 and a.truncated == [""]
    assert not torch.allclose(a.clip[:, :CLIP_LENGTH], b.clip[:, :CLIP_LENGTH])
    assert (a.clip - bert_by_hand(enc, HEAD + "狗狗狗", CLIP_LENGTH + 3)).abs().max().item() <= 1e-6
    with pytest.warns(UserWarning, match="BERT encoder \\(80 tokens\\) ignores '狗'"):
        enc.encode(HEAD + "狗狗狗狗", bert_length=80)


def test_opted_in_a_short_prompt_is_encoded_as_by_default(pipe):
    short = pipe.text_encoder.encode("一只猫", bert_length=512)
    assert torch.equal(short.clip, pipe.text_encoder.encode("一只猫").clip)


@pytest.mark.parametrize("length", [76, 513, 100.0])
def test_bert_length_beyond_the_positions_is_refused(pipe, length):
    with pytest.raises(InputError, match="bert_length \\(official 77; this BERT has 512 positions\\) must be"):
        pipe.text_encoder.encode("x", bert_length=length)


def test_the_dit_pads_past_77_with_the_last_learned_row(pipe):
    dit, enc = pipe.dit, pipe.text_encoder
    long, short = enc.encode(HEAD + "狗狗狗", bert_length=128), enc.encode("一只猫")
    both = TextEmbeddings.cat([short, long])
    assert both.clip.shape[1] == CLIP_LENGTH + 3 and both.clip_mask[0, CLIP_LENGTH:].sum() == 0
    with torch.no_grad():
        text = dit.text_states(both.clip, both.clip_mask, both.t5, both.t5_mask)
        alone = dit.text_states(short.clip, short.clip_mask, short.t5, short.t5_mask)
    padding = dit.text_embedding_padding
    assert torch.equal(text[0, CLIP_LENGTH:CLIP_LENGTH + 3], padding[CLIP_LENGTH - 1].expand(3, -1))
    assert torch.equal(text[0, :CLIP_LENGTH], alone[0, :CLIP_LENGTH])
    assert torch.equal(text[0, CLIP_LENGTH + 3:], alone[0, CLIP_LENGTH:])  # the mT5 part, its own padding
    assert torch.equal(text[1, :CLIP_LENGTH + 3], long.clip[0])


def test_load_pipeline_opts_in_and_sampling_uses_the_tail(tiny_diffusers, pipe):
    """mT5 reads the tail either way; opted in, BERT reads it too, so the long prompt's image changes while a
    short prompt's stays the same."""
    long_pipe = hy.load_pipeline(tiny_diffusers, device="cpu", dtype=torch.float32, bert_length=256)
    settings = dict(width=64, height=64, steps=1, seed=3, output_type="latent")
    with pytest.warns(UserWarning, match="BERT encoder"):
        default = pipe(HEAD + "狗狗狗", **settings)
    assert not torch.allclose(long_pipe(HEAD + "狗狗狗", **settings).latents, default.latents, atol=1e-4)
    assert torch.equal(long_pipe("一只猫", **settings).latents, pipe("一只猫", **settings).latents)
    with pytest.raises(InputError, match="bert_length"):
        hy.load_pipeline(tiny_diffusers, device="cpu", bert_length=1000)
