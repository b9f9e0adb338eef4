"""Prompt rewriter, the parts without a model: templates, reply parsing, the encoder limit, sessions and
saved instructions."""

from __future__ import annotations

import json

import pytest

from hunyuan_core.errors import InputError
from hunyuan_core.rewriter import (
    BUILTIN_INSTRUCTIONS,
    Instruction,
    InstructionStore,
    Session,
    SessionStore,
    approx_mt5_tokens,
    fit_to_limit,
)
from hunyuan_core.rewriter.dialoggen import best_resolution
from hunyuan_core.rewriter.http_backend import chat_completions_url
from hunyuan_core.rewriter.parsing import (
    CHAT,
    DRAW,
    REFUSE,
    parse_chat,
    parse_dialoggen,
)
from hunyuan_core.rewriter.templates import chat_messages, render_llava_v1

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
QUERY = "请先判断用户的意图，若为画图则在输出前加入<画图>:"


# ------------------------------------------------------------------------------------------ templates
def test_llava_v1_first_turn_matches_the_official_layout():
    assert render_llava_v1([], "画一个木制的鸟") == f"{SYSTEM} USER: <image>\n{QUERY}画一个木制的鸟 ASSISTANT:"


def test_llava_v1_later_turns_keep_the_image_in_the_first_message_and_raw_replies():
    text = render_llava_v1([("画一个木制的鸟", "<画图>一只木鸟")], "变成玻璃的")
    assert text == (f"{SYSTEM} USER: <image>\n{QUERY}画一个木制的鸟 ASSISTANT: <画图>一只木鸟</s>"
                    f"USER: {QUERY}变成玻璃的 ASSISTANT:")
    assert text.count("<image>") == 1


def test_chat_messages_carry_system_history_and_request():
    messages = chat_messages([("a cat", "A fluffy cat"), ("make it blue", "A blue cat")], "at night", "SYS")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == "SYS" and messages[-1]["content"] == "at night"
    assert messages[4]["content"] == "A blue cat"


def test_official_placeholder_image_uses_a_2x2_tile_grid():
    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # llava-v1.6 grid
    assert best_resolution((1024, 1024), pinpoints) == (672, 672)  # + base crop = the official 5 crops
    assert best_resolution((2000, 500), pinpoints) == (1008, 336)


# ------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("reply, intent, prompt", [
    ("<画图>一只玻璃鸟", DRAW, "一只玻璃鸟"),
    ("<画图>: 一只玻璃鸟 ", DRAW, "一只玻璃鸟"),
    ("好的。<画图>一只玻璃鸟", DRAW, "一只玻璃鸟"),
    ("对不起，我不能画这个", REFUSE, ""),
    ("这是一只鸟。", CHAT, "这是一只鸟。"),
])
def test_dialoggen_replies(reply, intent, prompt):
    parsed = parse_dialoggen(reply)
    assert (parsed.intent, parsed.prompt) == (intent, prompt)


@pytest.mark.parametrize("reply, intent, prompt", [
    ("A glass bird on a branch", DRAW, "A glass bird on a branch"),
    ("<think>the user wants glass</think>\n一只玻璃鸟", DRAW, "一只玻璃鸟"),
    ("Prompt: “A glass bird”", DRAW, "A glass bird"),
    ("提示词：一只玻璃鸟", DRAW, "一只玻璃鸟"),
    ('"a" and "b"', DRAW, '"a" and "b"'),
    ("Sorry, I can't draw that.", REFUSE, ""),
    ("对不起，这个请求不能画。", REFUSE, ""),
    ("   ", REFUSE, ""),
])
def test_chat_replies(reply, intent, prompt):
    parsed = parse_chat(reply)
    assert (parsed.intent, parsed.prompt) == (intent, prompt)


# ------------------------------------------------------------------------------------ encoder limit
def test_approximate_mt5_count_counts_cjk_words_digits_and_symbols():
    assert approx_mt5_tokens("") == 1  # </s>
    assert approx_mt5_tokens("一只鸟") == 4
    assert approx_mt5_tokens("a photorealistic cat") == 1 + 1 + 3 + 1
    assert approx_mt5_tokens("4K, 8mm") == 1 + 1 + 1 + 1 + 1 + 1


def test_fit_to_limit_cuts_at_a_clause_and_reports_the_rest():
    text = "一只玻璃做的鸟，站在枝头上，阳光照耀"
    kept, dropped = fit_to_limit(text, approx_mt5_tokens, 10)
    assert (kept, dropped) == ("一只玻璃做的鸟", "站在枝头上，阳光照耀")
    assert fit_to_limit(text, approx_mt5_tokens, 256) == (text, "")


def test_fit_to_limit_keeps_a_wrapping_instruction_whole():
    wrap = Instruction("ink", "{prompt}，水墨画风格").apply
    kept, dropped = fit_to_limit("一只玻璃做的鸟，站在枝头上", approx_mt5_tokens, 14, wrap)
    assert wrap(kept) == "一只玻璃做的鸟，水墨画风格" and dropped == "站在枝头上"


# ------------------------------------------------------------------------------------------ sessions
def _turns(session: Session, n: int) -> None:
    for i in range(n):
        session.add_turn(f"request {i}", f"<画图>reply {i}", f"reply {i}", refused=False)


def test_session_seeds_undo_reset_and_history():
    session = Session(name="s", seed=42)
    _turns(session, 3)
    assert [t.seed for t in session.turns] == [42, 42, 42]
    assert session.history(2) == [("request 1", "<画图>reply 1"), ("request 2", "<画图>reply 2")]
    assert session.history(0) == [] and len(session.history()) == 3
    assert session.undo().request == "request 2" and len(session.turns) == 2
    session.reuse_seed = False
    assert session.next_seed() == 44
    session.reset(seed=7)
    assert session.turns == [] and session.seed == 7 and session.undo() is None
    with pytest.raises(InputError, match="seed"):
        session.reset(seed=-1)
    with pytest.raises(InputError, match="strength"):
        Session(img2img_strength=1.5)


def test_session_round_trips_through_json_with_relative_images(tmp_path):
    store = SessionStore(tmp_path)
    session = store.load("畫 1/2", seed=3)
    session.img2img_strength = 0.6
    _turns(session, 2)
    image = store.image_dir(session.name) / "t1.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"png")
    session.turns[0].image = str(image.resolve())
    path = store.save(session)
    assert json.loads(path.read_text(encoding="utf-8"))["turns"][0]["image"] == f"{image.parent.name}/t1.png"
    loaded = store.load("畫 1/2")
    assert loaded == session
    assert loaded.init_image() == str(image.resolve())
    assert store.names() == ["畫 1/2"]


def test_session_names_never_share_a_file(tmp_path):
    store = SessionStore(tmp_path)
    assert len({store.path(n) for n in ["a/b", "a_b", "a b", "a:b", "A_b"]}) == 5
    first, second = store.load("a/b"), store.load("a_b")
    _turns(first, 1)
    store.save(first), store.save(second)
    assert len(store.load("a/b").turns) == 1 and store.load("a_b").turns == []
    with pytest.raises(InputError, match="empty"):
        store.path(" ")


def test_session_file_errors_name_the_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(InputError, match="not a Hunyuan-DiT session file"):
        Session.load(path)
    path.write_text('{"format": "hunyuan-dit-session", "version": 1, "turns": [{"oops": 1}], "name": "x", "seed": 1}')
    with pytest.raises(InputError, match="turn 1: expected an object with prompt, refused, reply, request, seed"):
        Session.load(path)


# -------------------------------------------------------------------------------------- instructions
def test_instructions_are_listed_saved_replaced_and_applied(tmp_path):
    store = InstructionStore(tmp_path)
    assert store.names() == [i.name for i in BUILTIN_INSTRUCTIONS]
    store.save(Instruction("ink", "{prompt}，水墨画风格"))
    store.save(Instruction(BUILTIN_INSTRUCTIONS[0].name, "{prompt}，淡墨"))
    again = InstructionStore(tmp_path)
    assert again.get("ink").apply("一只猫 {x}") == "一只猫 {x}，水墨画风格"
    assert again.get(BUILTIN_INSTRUCTIONS[0].name).template == "{prompt}，淡墨"
    assert again.names().count(BUILTIN_INSTRUCTIONS[0].name) == 1
    again.delete("ink")
    with pytest.raises(InputError, match="no saved instruction named 'ink'"):
        again.get("ink")


def test_instruction_templates_are_checked(tmp_path):
    with pytest.raises(InputError, match="exactly once"):
        Instruction("x", "no placeholder")
    with pytest.raises(InputError, match="position"):
        Instruction("x", "{prompt}", position="during")
    (tmp_path / "instructions.json").write_text("[1, 2")
    with pytest.warns(UserWarning, match="instructions.json' is not valid JSON"):  # skipped, not fatal
        assert InstructionStore(tmp_path).names() == [i.name for i in BUILTIN_INSTRUCTIONS]


def test_user_dir_default_follows_the_environment(tmp_path, monkeypatch):
    from hunyuan_core.rewriter import user_dir

    monkeypatch.setenv("HUNYUAN_DIT_CONFIG_DIR", str(tmp_path / "cfg"))
    assert user_dir() == tmp_path / "cfg"
    assert InstructionStore().path == tmp_path / "cfg" / "instructions.json"
    assert SessionStore().directory == tmp_path / "cfg" / "sessions"


@pytest.mark.parametrize("endpoint, url", [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/chat/completions"),
    ("http://127.0.0.1:11434/v1/", "http://127.0.0.1:11434/v1/chat/completions"),
    ("https://host/api/v1/chat/completions", "https://host/api/v1/chat/completions"),
])
def test_endpoint_forms(endpoint, url):
    assert chat_completions_url(endpoint) == url


def test_endpoint_must_be_http():
    with pytest.raises(InputError, match="http"):
        chat_completions_url("ftp://x")
