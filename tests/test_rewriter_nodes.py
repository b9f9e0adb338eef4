"""The rewriter nodes on tiny models (run as ComfyUI's executor runs V3 nodes, on the pack's host outside
ComfyUI): pickers, a conversation that continues across queues with its state on disk, undo/reset, refusals,
the previous picture for img2img, saved instructions; and the multi-turn workflow queued turn after turn on
a real ComfyUI server."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from comfy_host import WORKFLOW_DIR, require_comfyui, to_api_prompt
from comfy_host import run_node as call_node
from comfy_models import DIALOGGEN, tiny_models

require_comfyui()

from hunyuan_core.errors import InputError  # noqa: E402
from hunyuan_core.rewriter import SessionStore  # noqa: E402
from hunyuan_core.rewriter.tiny import (  # noqa: E402
    DIALOGGEN_REPLY,
    make_tiny_chat_llm,
    make_tiny_dialoggen,
)
from nodes import host  # noqa: E402
from nodes.rewriter import (  # noqa: E402
    SERVER,
    HunyuanDiTConversationImage,
    HunyuanDiTInstruction,
    HunyuanDiTRewritePrompt,
    HunyuanDiTRewriterLoader,
    HunyuanDiTSaveInstruction,
    rewriter_choices,
)

WORKFLOW = WORKFLOW_DIR / "Hunyuan-DiT - multi-turn drawing with a prompt rewriter.json"
DRAWN = DIALOGGEN_REPLY.removeprefix("<画图>")
LOADER = dict(endpoint="http://127.0.0.1:8080/v1", server_model="", dtype="auto", quantize="none", keep_on_gpu=False,
              temperature=-1.0, max_new_tokens=512, llm_seed=-1, timeout=120.0)
TURN = dict(session="s", undo_last=False, reset=False, session_seed=666, reuse_seed=True, img2img_strength=0.0)


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """Tiny models (DialogGen in models/LLM/dialoggen) and a ComfyUI user folder of our own."""
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(tiny_models().models))
    monkeypatch.setattr(host, "user_directory", lambda: str(tmp_path / "user"))
    return tmp_path / "user" / "hunyuan-dit"


@pytest.fixture()
def rewriter(env):
    (rewriter, info), _ = call_node(HunyuanDiTRewriterLoader, model=DIALOGGEN, **LOADER)
    assert "DialogGen" in info and "temperature 0.2" in info and "512 new tokens" in info
    return rewriter


def test_rewriter_picker_finds_dialoggen_chat_llms_and_offers_a_server(tmp_path, monkeypatch):
    models = tmp_path / "models"
    make_tiny_chat_llm(models / "LLM" / "Qwen-tiny-Instruct")
    make_tiny_dialoggen(models / "hunyuan" / "HunyuanDiT" / "ckpts" / "dialoggen")
    make_tiny_chat_llm(models / "hunyuan" / "not-a-rewriter")  # only DialogGen counts under hunyuan/
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(models))
    assert rewriter_choices() == ["LLM/Qwen-tiny-Instruct", "hunyuan/HunyuanDiT/ckpts/dialoggen", SERVER]


def test_rewrite_node_continues_undoes_and_resets_the_conversation(rewriter, env):
    first, ui = call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="画一个木制的鸟", **TURN)
    prompt, seed, init, denoise, reply, _turn = first
    assert (prompt, seed, denoise, reply) == (DRAWN, 666, 1.0, DIALOGGEN_REPLY)
    assert init.shape == (1, 64, 64, 3) and float(init.abs().sum()) == 0.0
    assert ui["text"][0] == f"turn 1, seed 666: {DRAWN}"
    call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="变成玻璃的", **TURN)
    store = SessionStore(env / "sessions")
    assert [t.request for t in store.load("s").turns] == ["画一个木制的鸟", "变成玻璃的"]
    call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="变成金色的", **TURN | {"undo_last": True})
    assert [t.request for t in store.load("s").turns] == ["画一个木制的鸟", "变成金色的"]
    call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="画一只猫", **TURN | {"reset": True, "session_seed": 7})
    session = store.load("s")
    assert [t.request for t in session.turns] == ["画一只猫"] and session.seed == 7
    other, _ = call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="画一只狗", **TURN | {"session": "t"})
    assert other[1] == 666 and len(store.load("s").turns) == 1  # another name, another conversation


def test_previous_picture_feeds_img2img_when_asked(rewriter, env):
    (*_, turn), _ = call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="画一个木制的鸟", **TURN)
    picture = torch.full((1, 32, 48, 3), 0.5)
    _, ui = call_node(HunyuanDiTConversationImage, images=picture, conversation=turn)
    assert ui["text"] == ["turn 1: turn_001.png"]
    (_, _, init, denoise, _, _), _ = call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="变成玻璃的",
                                               **TURN | {"img2img_strength": 0.6})
    assert init.shape == (1, 32, 48, 3) and torch.allclose(init, picture, atol=1 / 255) and denoise == pytest.approx(0.6)
    call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="画一只猫", **TURN | {"reset": True})
    with pytest.raises(InputError, match="turn 1 of conversation 's' is no longer there"):
        call_node(HunyuanDiTConversationImage, images=picture, conversation=turn)  # reset since it was drawn


def test_refusal_stops_the_run_with_the_models_answer(env, tmp_path, monkeypatch):
    models = tmp_path / "refusing"
    make_tiny_dialoggen(models / "LLM" / "dialoggen", reply="对不起，无法绘制")
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(models))
    (rewriter, _), _ = call_node(HunyuanDiTRewriterLoader, model="LLM/dialoggen", **LOADER)
    with pytest.raises(InputError, match="refused this request: '对不起，无法绘制'"):
        call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="画一个炸弹", **TURN)
    assert SessionStore(env / "sessions").load("s").turns[-1].refused


def test_saved_instructions_are_picked_and_applied(rewriter, env):
    (saved,), ui = call_node(HunyuanDiTSaveInstruction, name="ink", template="{prompt}，水墨画风格", position="after")
    assert ui["text"] == ["saved 'ink'"]
    assert "ink" in HunyuanDiTInstruction.INPUT_TYPES()["required"]["name"][1]["options"]
    (picked, template), _ = call_node(HunyuanDiTInstruction, name="ink")
    assert picked == saved and template == "{prompt}，水墨画风格"
    before = HunyuanDiTInstruction.fingerprint_inputs(name="ink")
    call_node(HunyuanDiTSaveInstruction, name="ink", template="{prompt}，淡墨", position="after")
    assert HunyuanDiTInstruction.fingerprint_inputs(name="ink") != before
    (prompt, *_), _ = call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="画一个木制的鸟",
                                instruction=picked, **TURN)
    assert prompt == f"{DRAWN}，水墨画风格"
    with pytest.raises(InputError, match="exactly once"):
        call_node(HunyuanDiTSaveInstruction, name="bad", template="no placeholder", position="after")


def test_exact_mt5_count_with_the_text_encoder(rewriter, env):
    counted = []

    def mt5_tokenizer(text, add_special_tokens=True):
        counted.append(text)
        return {"input_ids": list(text)}

    encoder = SimpleNamespace(encoder=SimpleNamespace(mt5_tokenizer=mt5_tokenizer))
    call_node(HunyuanDiTRewritePrompt, rewriter=rewriter, request="画一个木制的鸟", text_encoder=encoder, **TURN)
    assert DRAWN in counted


def test_multiturn_workflow_runs_turn_after_turn_in_real_comfyui(comfyui_server):
    prompt = to_api_prompt(json.loads(WORKFLOW.read_text(encoding="utf-8")), comfyui_server.object_info)
    sampler = next(n for n in prompt.values() if n["class_type"] == "HunyuanDiTSampler")
    sampler["inputs"].update(resolution="custom (width x height below)", width=64, height=64, steps=2)
    rewrite = next(nid for nid, n in prompt.items() if n["class_type"] == "HunyuanDiTRewritePrompt")
    encode = next(n for n in prompt.values() if n["class_type"] == "HunyuanDiTTextEncode")
    assert encode["inputs"]["positive"] == [rewrite, 0]  # the rewritten prompt feeds the bilingual encoder
    prompt[rewrite]["inputs"]["session"] = "multiturn-queues"  # a conversation of this test alone
    sessions = SessionStore(comfyui_server.base / "user" / "hunyuan-dit" / "sessions")

    def queue(request: str) -> set[str]:
        prompt[rewrite]["inputs"]["request"] = request
        entry = comfyui_server.run(copy.deepcopy(prompt))
        assert entry["status"]["status_str"] == "success", entry["status"]
        cached = {n for kind, data in entry["status"]["messages"] if kind == "execution_cached" for n in data["nodes"]}
        return set(prompt) - cached

    queue("画一个木制的鸟")
    assert sessions.load("multiturn-queues").turns[0].prompt == DRAWN
    assert queue("画一个木制的鸟") == set()  # queued again unchanged: no new turn
    ran = queue("变成玻璃的")
    assert rewrite in ran and not any("Loader" in prompt[n]["class_type"] for n in ran)
    session = sessions.load("multiturn-queues")
    assert [t.request for t in session.turns] == ["画一个木制的鸟", "变成玻璃的"]
    assert all(t.image and t.seed == 666 for t in session.turns)


def test_server_loader_sends_the_key_over_plain_http_to_another_machine_only_when_allowed(env, monkeypatch):
    monkeypatch.setenv("HUNYUAN_REWRITER_API_KEY", "sk-node-secret-0123456789")
    remote = dict(LOADER, endpoint="http://192.0.2.7:8080/v1", server_model="m")  # TEST-NET: never contacted
    with pytest.raises(InputError, match="allow_insecure_http") as caught:
        call_node(HunyuanDiTRewriterLoader, model=SERVER, **remote)
    assert "sk-node-secret" not in str(caught.value)
    (rewriter, info), _ = call_node(HunyuanDiTRewriterLoader, model=SERVER, allow_insecure_http=True, **remote)
    assert "192.0.2.7" in info and "sk-node-secret" not in info
