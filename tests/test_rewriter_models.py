"""Local rewriter models end to end on tiny checkpoints built at test time (hunyuan_core.rewriter.tiny):
a chat LLM in Hugging Face format (config in code, character-level tokenizer with a chat template) and
DialogGen in the original LLaVA format (original key names, sharded safetensors, sentencepiece tokenizer).
"Scripted" ones answer a known reply through the real generate path; the others are random."""

from __future__ import annotations

import io
import json

import pytest
import torch

from hunyuan_core.errors import InputError, ModelFileError
from hunyuan_core.rewriter import SYSTEM_PROMPT, Session, load_rewriter
from hunyuan_core.rewriter.dialoggen import placeholder_image_features
from hunyuan_core.rewriter.local import LocalModel
from hunyuan_core.rewriter.templates import DIALOGGEN_QUERY
from hunyuan_core.rewriter.tiny import make_tiny_chat_llm as make_chat_llm
from hunyuan_core.rewriter.tiny import make_tiny_dialoggen as make_dialoggen


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("rewriter-models")
    return {
        "chat": make_chat_llm(root / "chat", reply="提示词：一只玻璃做的鸟，站在枝头上。阳光照耀"),
        "chat_refuses": make_chat_llm(root / "chat_refuses", reply="对不起，无法绘制。"),
        "chat_random": make_chat_llm(root / "chat_random", reply=None),
        "ckpts": make_dialoggen(root / "ckpts" / "dialoggen", reply="<画图>一只玻璃鸟").parent,
        "dialoggen_refuses": make_dialoggen(root / "dg_refuses", reply="对不起，无法绘制"),
    }


# ------------------------------------------------------------------------------------------ chat LLM
def test_chat_llm_template_history_parsing_and_truncation(built, monkeypatch):
    rewriter = load_rewriter(built["chat"], device="cpu", dtype="fp32", max_prompt_tokens=10)
    rendered = []
    original = rewriter.backend.prompt_text
    monkeypatch.setattr(rewriter.backend, "prompt_text", lambda h, r: rendered.append(original(h, r)) or rendered[-1])
    session = Session(name="birds", seed=3)
    first = rewriter.rewrite("画一个木制的鸟", session)
    assert first.reply == "提示词：一只玻璃做的鸟，站在枝头上。阳光照耀"
    assert (first.prompt, first.truncated, first.draw, first.seed) == ("一只玻璃做的鸟", "站在枝头上。阳光照耀", True, 3)
    assert rendered[-1].startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n画一个木制的鸟")
    rewriter.rewrite("变成玻璃的", session)
    assert (f"<|im_start|>user\n画一个木制的鸟<|im_end|>\n<|im_start|>assistant\n{first.reply}<|im_end|>\n"
            "<|im_start|>user\n变成玻璃的<|im_end|>\n<|im_start|>assistant\n") in rendered[-1]
    assert [t.prompt for t in session.turns] == ["一只玻璃做的鸟"] * 2


def test_chat_llm_exact_counter_and_refusal(built):
    from transformers import AutoTokenizer

    chars = AutoTokenizer.from_pretrained(str(built["chat"]))
    rewriter = load_rewriter(built["chat"], device="cpu", dtype="fp32", max_prompt_tokens=13,
                             count_tokens=lambda s: len(chars(s).input_ids))  # one token per character
    assert rewriter.rewrite("画一个木制的鸟").prompt == "一只玻璃做的鸟，站在枝头上"
    refused = load_rewriter(built["chat_refuses"], device="cpu", dtype="fp32").rewrite("画一个木制的鸟")
    assert refused.refused and refused.prompt == "" and refused.reply == "对不起，无法绘制。"


def test_chat_llm_sampling_is_repeatable_with_a_seed(built):
    def reply(seed, temperature=1.0):
        rewriter = load_rewriter(built["chat_random"], device="cpu", dtype="fp32", temperature=temperature,
                                 seed=seed, max_new_tokens=12)
        return rewriter.rewrite("画一个木制的鸟").reply

    state = torch.random.get_rng_state()
    assert reply(3) == reply(3) != reply(4)
    assert reply(None, temperature=0) == reply(5, temperature=0)
    assert torch.equal(state, torch.random.get_rng_state())  # seeded sampling leaves the global RNG alone


def test_chat_llm_drops_the_oldest_turns_to_fit_its_context(built):
    rewriter = load_rewriter(built["chat"], device="cpu", dtype="fp32", max_new_tokens=40)
    backend = rewriter.backend
    session = Session(name="long")
    for i in range(4):
        session.add_turn(f"request {i}", f"reply {i}", f"reply {i}", refused=False)
    alone = len(backend.prompt_ids(session.history()[-1:], "x"))
    backend.max_context = alone + 40  # room for the newest turn only
    seen = []
    original = backend.prompt_ids
    backend.prompt_ids = lambda h, r: seen.append(list(h)) or original(h, r)
    rewriter.rewrite("x", session)
    assert seen[-1] == [("request 3", "reply 3")]
    backend.max_context = 10
    with pytest.raises(InputError, match="too long"):
        rewriter.rewrite("x", session)


def test_chat_llm_folder_errors(built, tmp_path):
    from transformers import AutoTokenizer

    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "config.json").write_text(json.dumps({"model_type": "my_secret_arch", "auto_map": {"AutoModel": "x.Y"}}))
    (custom / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelFileError, match="never run"):
        load_rewriter(custom, device="cpu")
    base = tmp_path / "base"
    AutoTokenizer.from_pretrained(str(built["chat"])).save_pretrained(base)
    config = json.loads((built["chat"] / "config.json").read_text())
    (base / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((base / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (base / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ModelFileError, match="no chat template"):
        load_rewriter(base, device="cpu")
    with pytest.raises(ModelFileError, match="neither DialogGen"):
        load_rewriter(tmp_path, device="cpu")
    with pytest.raises(InputError, match="bitsandbytes|CUDA"):
        load_rewriter(built["chat"], device="cpu", quantize="4bit")


def test_local_models_leave_the_device_or_are_released_after_use():
    loads = []

    def load():
        loads.append(1)
        return torch.nn.Linear(2, 2)

    moved = LocalModel(load, torch.device("cpu"), quantized=False, keep_loaded=False)
    with moved.use():
        pass
    assert moved._model is not None and len(loads) == 1
    released = LocalModel(load, torch.device("cpu"), quantized=True, keep_loaded=False)
    with released.use():
        pass
    assert released._model is None
    with released.use() as model:
        assert isinstance(model, torch.nn.Linear)
    assert len(loads) == 3
    kept = LocalModel(load, torch.device("cpu"), quantized=True, keep_loaded=True)
    with kept.use():
        pass
    assert kept._model is not None


# ----------------------------------------------------------------------------------------- DialogGen
def test_dialoggen_loads_the_original_llava_checkpoint_and_rewrites(built):
    rewriter = load_rewriter(built["ckpts"])  # the ckpts folder, as users download it
    backend = rewriter.backend
    assert backend.style == "dialoggen" and backend.folder.name == "dialoggen"
    assert (rewriter.options.temperature, rewriter.options.max_new_tokens, rewriter.options.top_k) == (0.2, 512, 50)
    session = Session(name="dg", seed=1)
    first = rewriter.rewrite("画一个木制的鸟", session)
    assert (first.reply, first.prompt, first.draw, first.refused) == ("<画图>一只玻璃鸟", "一只玻璃鸟", True, False)
    rewriter.rewrite("变成玻璃的", session)
    before, after = backend.prompt_ids(session.history(), "再画一次")
    tokenizer = backend.tokenizer
    assert before[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in after
    text = tokenizer.decode(before + after)
    assert text.count(DIALOGGEN_QUERY.format("")) == 3 and text.count("<画图>一只玻璃鸟") == 2
    refused = load_rewriter(built["dialoggen_refuses"]).rewrite("画一个木制的鸟")
    assert refused.refused and refused.prompt == "" and refused.reply == "对不起，无法绘制"


def test_dialoggen_placeholder_image_packs_as_transformers_llava_next(built):
    rewriter = load_rewriter(built["ckpts"], dtype="fp32", keep_loaded=True)
    backend = rewriter.backend
    with backend.model.use() as model:
        ours = placeholder_image_features(model, backend.llava_config)
        zeros = torch.zeros(5, 3, 28, 28)
        hidden = model.model.vision_tower(pixel_values=zeros, output_hidden_states=True).hidden_states[-2][:, 1:]
        projected = model.model.multi_modal_projector(hidden)
        packed, lengths = model.model.pack_image_features(
            [projected], torch.tensor([[1024, 1024]]), vision_feature_select_strategy="default",
            image_newline=model.model.image_newline)
    # base crop 2x2 patches + a 4x4 tile map with a newline per row = 4 + 4 * 5 (the release: 576 + 48 * 49)
    assert ours.shape[0] == 24 == int(lengths[0])
    torch.testing.assert_close(ours, packed[0])
    assert ours.abs().sum() > 0  # what text-only use would leave out


def test_dialoggen_placeholder_changes_what_the_model_reads(built, tmp_path):
    folder = make_dialoggen(tmp_path / "random", reply=None)  # attention on: the image features reach the last token
    rewriter = load_rewriter(folder, dtype="fp32", keep_loaded=True)
    backend = rewriter.backend
    with backend.model.use() as model:
        before, after = backend.prompt_ids([], "画一个木制的鸟")
        embed = model.get_input_embeddings()
        text = torch.cat([embed(torch.tensor(before)), embed(torch.tensor(after))])[None]
        with_image = torch.cat([text[0, : len(before)], backend.image_features(model), text[0, len(before):]])[None]
        logits_text = model(inputs_embeds=text).logits[0, -1]
        logits_image = model(inputs_embeds=with_image).logits[0, -1]
    assert not torch.allclose(logits_text, logits_image, atol=1e-3)


def test_dialoggen_vision_config_is_read_off_the_weights_without_the_clip_folder(built, tmp_path):
    folder = make_dialoggen(tmp_path / "dialoggen", reply="<画图>一只玻璃鸟", clip_folder=False)
    with_clip = load_rewriter(built["ckpts"], dtype="fp32", keep_loaded=True).backend
    without = load_rewriter(folder, dtype="fp32", keep_loaded=True).backend
    fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
              "patch_size", "hidden_act", "layer_norm_eps")
    assert [getattr(without.llava_config.vision_config, f) for f in fields] == \
        [getattr(with_clip.llava_config.vision_config, f) for f in fields]
    assert load_rewriter(folder).rewrite("画一个木制的鸟").prompt == "一只玻璃鸟"


def test_dialoggen_config_and_weight_errors(built, tmp_path):
    folder = tmp_path / "dialoggen"
    folder.mkdir()
    source = built["ckpts"] / "dialoggen"
    for item in source.iterdir():
        if item.is_file():
            (folder / item.name).write_bytes(item.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"mm_projector_type": "linear"}))
    with pytest.raises(ModelFileError, match="mlp2x_gelu"):
        load_rewriter(folder)
    (folder / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    index = folder / "model.safetensors.index.json"
    tensors = {}
    for shard in set(json.loads(index.read_text())["weight_map"].values()):
        tensors |= {k: v for k, v in load_file(str(folder / shard)).items() if "vision_tower" not in k}
        (folder / shard).unlink()
    index.unlink()
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ModelFileError, match="no vision tower weights"):
        load_rewriter(folder)


def test_chat_command_draws_a_conversation_with_tiny_models(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from hunyuan_core.cli import main
    from hunyuan_core.rewriter import SessionStore
    from hunyuan_core.rewriter.tiny import DIALOGGEN_REPLY

    monkeypatch.setenv("HUNYUAN_DIT_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setattr("sys.stdin", io.StringIO("画一个木制的鸟\n变成玻璃的\n/history\n/quit\n"))
    code = main(["chat", "--model", "tiny", "--rewriter", "tiny", "--device", "cpu", "--width", "64", "--height", "80",
                 "--steps", "2", "--seed", "5", "--img2img", "0.5", "--out", str(tmp_path / "out")])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count(f"prompt: {DIALOGGEN_REPLY.removeprefix('<画图>')}") == 2
    session = SessionStore().load("chat")
    assert [t.request for t in session.turns] == ["画一个木制的鸟", "变成玻璃的"]
    assert [t.seed for t in session.turns] == [5, 5]
    for turn in session.turns:
        assert Image.open(turn.image).size == (64, 80)
