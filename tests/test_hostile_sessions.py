"""Hostile cases for conversations (sessions), saved instructions and the multi-turn nodes: concurrent
writers, damaged and malicious files, bad values, pictures that must never be replaced or read from
elsewhere, and the conversation carried through the ComfyUI graph. Run as a script, this file is the
worker of the two-process test."""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from comfy_host import WORKFLOW_DIR, require_comfyui, run_node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hunyuan_core.errors import InputError, OutputError
from hunyuan_core.rewriter import BUILTIN_INSTRUCTIONS, Instruction, InstructionStore, Session, SessionStore
from hunyuan_core.rewriter.rewriter import RewriteResult

require_comfyui()  # the rewriter nodes are driven here (on the pack's host outside ComfyUI)

from nodes import host  # noqa: E402
from nodes.rewriter import HunyuanDiTConversationImage, HunyuanDiTInstruction, HunyuanDiTRewritePrompt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TURN = dict(undo_last=False, reset=False, session_seed=5, reuse_seed=True, img2img_strength=0.0)
pytestmark = pytest.mark.filterwarnings("ignore::hunyuan_core.rewriter.userdir.UserFileWarning")  # asserted where due
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class EchoRewriter:
    """Stands in for a language model: the request is the prompt (a short pause widens any race)."""

    def rewrite(self, request, session, instruction=None, count_tokens=None):
        time.sleep(0.001)
        turn = session.add_turn(request, f"<画图>{request}", request, refused=False)
        return RewriteResult(prompt=request, refused=False, reply=turn.reply, draw=True, seed=turn.seed)


def rewrite(request: str, session: str = "shared", **changes) -> tuple:
    return run_node(HunyuanDiTRewritePrompt, rewriter=EchoRewriter(), request=request, session=session,
                    **TURN | changes)[0]


@pytest.fixture()
def user(tmp_path, monkeypatch) -> Path:
    """ComfyUI's user folder of this test; returns the pack's folder in it."""
    monkeypatch.setattr(host, "user_directory", lambda: str(tmp_path / "user"))
    return tmp_path / "user" / "hunyuan-dit"


def session_file(**changes) -> dict:
    turn = {"request": "画一只猫", "reply": "<画图>一只猫", "prompt": "一只猫", "refused": False, "seed": 5,
            "image": None, "created": 1.5}
    data = {"format": "hunyuan-dit-session", "version": 1, "name": "x", "seed": 5, "reuse_seed": True,
            "img2img_strength": None, "turns": [turn]}
    return data | changes


# ----------------------------------------------------------------------------- 1. concurrent writers
def test_threads_adding_turns_and_instructions_lose_none_and_readers_see_whole_files(user):
    errors, done = [], threading.Event()

    def writer(tag: str) -> None:
        try:
            for i in range(5):
                rewrite(f"{tag}-{i}")
                InstructionStore(user).save(Instruction(f"{tag}-{i}", "{prompt}!"))
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            errors.append(exc)

    def reader() -> None:
        path = SessionStore(user / "sessions").path("shared")
        while not done.is_set():
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(6)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    assert errors == []
    requests = [t.request for t in SessionStore(user / "sessions").load("shared").turns]
    assert sorted(requests) == sorted(f"t{n}-{i}" for n in range(6) for i in range(5))
    assert set(InstructionStore(user).names()) >= {f"t{n}-{i}" for n in range(6) for i in range(5)}
    assert not list((user / "sessions").glob(".*.tmp")) and not list(user.glob(".*.tmp"))


def _worker(folder: Path, tag: str, count: int) -> None:
    """One of the processes of the test below: waits for the other, then adds turns and instructions."""
    (folder / f"ready-{tag}").touch()
    deadline = time.time() + 60
    while len(list(folder.glob("ready-*"))) < 2 and time.time() < deadline:
        time.sleep(0.01)
    for i in range(count):
        rewrite(f"{tag}-{i}")
        InstructionStore().save(Instruction(f"{tag}-{i}", "{prompt}!"))


def test_two_processes_adding_turns_and_instructions_lose_none(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HUNYUAN_DIT_CONFIG_DIR": str(tmp_path)}
    workers = [subprocess.Popen([sys.executable, __file__, str(tmp_path), tag, "12"], env=env, cwd=ROOT,
                                stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read()
    expected = {f"{tag}-{i}" for tag in "ab" for i in range(12)}
    turns = SessionStore(tmp_path / "sessions").load("shared").turns
    assert len(turns) == 24 and {t.request for t in turns} == expected
    assert set(InstructionStore(tmp_path).names()) == expected | {i.name for i in BUILTIN_INSTRUCTIONS}


# ---------------------------------------------------------------------- 2. damaged files are skipped
def test_damaged_instructions_file_is_skipped_and_kept_as_bak(user):
    path = user / "instructions.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"instructions": [{"name": "ink", "templ')
    with pytest.warns(UserWarning, match="instructions.json' is not valid JSON"):
        names = HunyuanDiTInstruction.INPUT_TYPES()["required"]["name"][1]["options"]
    assert names == [i.name for i in BUILTIN_INSTRUCTIONS]
    with pytest.warns(UserWarning, match="kept as '.*instructions.json.bak'"):
        InstructionStore(user).save(Instruction("mine", "{prompt}!"))
    assert (user / "instructions.json.bak").read_bytes() == b'{"instructions": [{"name": "ink", "templ'
    assert InstructionStore(user).get("mine").template == "{prompt}!"
    path.write_bytes(b"[")  # damaged again: the first backup is kept too
    with pytest.warns(UserWarning):
        InstructionStore(user).save(Instruction("again", "{prompt}?"))
    assert (user / "instructions.json_00001_.bak").read_bytes() == b"["


def test_a_bad_instruction_entry_hides_none_of_the_others(user):
    user.mkdir(parents=True)
    entries = [{"name": 7, "template": "{prompt}"}, {"name": "ok", "template": "{prompt}，淡墨"}, "text",
               {"name": "extra", "template": "{prompt}", "colour": "red"}]
    (user / "instructions.json").write_text(json.dumps({"instructions": entries}), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"entry 1: instruction name 7: expected text; skipped"):
        assert "ok" in InstructionStore(user).names()
    with pytest.warns(UserWarning, match="kept as"):  # entries dropped by this save are in the .bak
        InstructionStore(user).delete("ok")
    assert json.loads((user / "instructions.json.bak").read_text())["instructions"] == entries


def test_damaged_session_file_breaks_no_other_session(tmp_path):
    store = SessionStore(tmp_path)
    good = store.load("good", seed=3)
    good.add_turn("a", "b", "c", refused=False)
    store.save(good)
    store.path("bad").write_bytes(b"\xff\xfe not json")
    (tmp_path / "deep.json").write_text("[" * 100_000, encoding="utf-8")
    with pytest.warns(UserWarning) as caught:
        assert store.names() == ["good"]
    assert {Path(str(w.message).split("'")[1]).name for w in caught} == {"bad.json", "deep.json"}
    assert len(store.load("good").turns) == 1
    with pytest.warns(UserWarning, match="bad.json' cannot be read.*starts afresh"):
        fresh = store.load("bad", seed=9)
    assert fresh.turns == [] and fresh.seed == 9
    with pytest.warns(UserWarning, match="kept as"):
        store.save(fresh)
    assert (tmp_path / "bad.json.bak").read_bytes() == b"\xff\xfe not json"
    assert store.load("bad").seed == 9


def test_a_session_file_of_another_name_is_kept_before_it_is_replaced(tmp_path):
    store = SessionStore(tmp_path)
    store.path("x").write_text(json.dumps(session_file(name="renamed")), encoding="utf-8")
    with pytest.warns(UserWarning, match="belongs to session 'renamed'"):
        session = store.load("x")
    with pytest.warns(UserWarning, match="kept as"):
        store.save(session)
    assert json.loads((tmp_path / "x.json.bak").read_text())["name"] == "renamed"


# ------------------------------------------------------------------------------------ 3. bad values
@pytest.mark.parametrize("changes, expected", [
    (dict(seed=float("inf")), r'session seed inf: expected a whole number'),  # what "seed": 1e999 reads as
    (dict(seed=True), "session seed True"),
    (dict(name={"a": 1}), r"session name \{'a': 1\}: expected a non-empty text"),
    (dict(name=""), "session name '': expected a non-empty text"),
    (dict(version="2"), '"version" is \'2\'; expected a whole number'),
    (dict(turns=[1]), "turn 1: expected an object"),
    (dict(turns="abc"), '"turns" is \'abc\'; expected a list'),
    (dict(turns=[{**session_file()["turns"][0], "seed": -1}]), r'turn 1: "seed" is -1'),
    (dict(turns=[{**session_file()["turns"][0], "refused": "no"}]), r'"refused" is \'no\'; expected true or false'),
    (dict(turns=[{**session_file()["turns"][0], "created": "now"}]), r'"created" is \'now\''),
    (dict(turns=[{**session_file()["turns"][0], "image": 5}]), r'"image" is 5'),
    (dict(turns=[{**session_file()["turns"][0], "request": "\ud800"}]), r'"request" is'),
    (dict(img2img_strength=float("nan")), "img2img strength nan"),
    (dict(reuse_seed="yes"), "reuse_seed 'yes'"),
])
def test_bad_session_values_are_input_errors_naming_the_file(tmp_path, changes, expected):
    path = tmp_path / "x.json"
    text = json.dumps(session_file(**changes), ensure_ascii=True).replace("Infinity", "1e999")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=expected) as info:
        Session.load(path)
    assert str(path) in str(info.value)


def test_an_instruction_name_that_is_a_number_is_an_input_error():
    with pytest.raises(InputError, match="instruction name 5: expected text"):
        Instruction(5, "{prompt}")
    with pytest.raises(InputError, match="instruction template None"):
        Instruction("x", None)


def test_a_300_character_session_name_is_shortened_to_a_distinct_file(tmp_path):
    store = SessionStore(tmp_path)
    names = ["长" * 300, "长" * 299 + "短", "a" * 300]
    for name in names:
        session = store.load(name, seed=1)
        session.add_turn(name[-1], "r", "p", refused=False)
        store.save(session)
        assert len(store.path(name).name.encode("utf-8")) < 200
        assert len(store.image_dir(name).name.encode("utf-8")) < 200
    assert len({store.path(n) for n in names}) == 3
    assert [store.load(n).turns[0].request for n in names] == ["长", "短", "a"]
    assert store.path(names[0]) == SessionStore(tmp_path).path(names[0])  # the same file every time
    assert sorted(store.names()) == sorted(names)


def test_a_config_folder_that_is_a_file_is_an_output_error(tmp_path):
    config = tmp_path / "config"
    config.write_text("not a folder")
    assert InstructionStore(config).names() == [i.name for i in BUILTIN_INSTRUCTIONS]
    with pytest.raises(OutputError, match="is a file"):
        InstructionStore(config).save(Instruction("x", "{prompt}"))
    store = SessionStore(config / "sessions")
    assert store.names() == [] and store.load("s").turns == []
    with pytest.raises(OutputError, match="config"):
        store.save(Session("s"))


@pytest.fixture()
def read_only(tmp_path, monkeypatch) -> Path:
    """A folder nothing can be created in: chmod 555, and (since root ignores modes) opening a file for
    writing or creating there fails with EACCES as the OS would say."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_open, real_os_open = builtins.open, os.open

    def inside(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and Path(os.path.abspath(path)).parent == folder

    def denied(path):
        return PermissionError(errno.EACCES, "Permission denied", str(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(c in mode for c in "wax+"):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_a_read_only_folder_is_an_output_error_not_a_permission_error(read_only):
    with pytest.raises(OutputError, match="ro"):
        InstructionStore(read_only).save(Instruction("x", "{prompt}"))
    with pytest.raises(OutputError, match="ro"):
        SessionStore(read_only).save(Session("s"))
    assert SessionStore(read_only).names() == []  # reading still works


# ------------------------------------------------------------------ 4. pictures stay in their folder
def test_pictures_named_outside_the_session_folder_are_ignored(tmp_path, user):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(secret)
    store = SessionStore(user / "sessions")
    own = store.image_dir("x") / "turn_001.png"
    own.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 0, 255)).save(own)
    (store.image_dir("x") / "link.png").symlink_to(secret)
    turn = session_file()["turns"][0]
    images = [f"{own.parent.name}/turn_001.png", "../../../secret.png", str(secret), f"{own.parent.name}/link.png",
              "x-images/../../../secret.png", "x-images"]
    data = session_file(turns=[turn | {"image": image} for image in images])
    store.path("x").write_text(json.dumps(data), encoding="utf-8")
    with pytest.warns(UserWarning, match="outside the session's picture folder") as caught:
        session = store.load("x")
    assert len(caught) == 5
    assert [t.image for t in session.turns] == [str(own.resolve()), None, None, None, None, None]


def test_a_sent_session_cannot_feed_another_file_to_img2img(tmp_path, user):
    secret = tmp_path / "secret.png"  # ../../../secret.png seen from user/hunyuan-dit/sessions/
    Image.new("RGB", (8, 8), (255, 0, 0)).save(secret)
    store = SessionStore(user / "sessions")
    store.directory.mkdir(parents=True)
    data = session_file(turns=[session_file()["turns"][0] | {"image": "../../../secret.png"}])
    store.path("x").write_text(json.dumps(data), encoding="utf-8")
    with pytest.warns(UserWarning, match="secret.png' is outside"):
        _, _, init, denoise, _, _ = rewrite("变成玻璃的", "x", img2img_strength=0.5)
    assert denoise == 1.0 and float(init.sum()) == 0.0  # drawn from scratch, the file was never read


def test_pictures_from_elsewhere_are_copied_into_the_session_folder(tmp_path):
    outside = tmp_path / "out" / "chat_01.png"
    outside.parent.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside)
    store = SessionStore(tmp_path / "sessions")
    session = store.load("c", seed=1)
    session.add_turn("a", "b", "c", refused=False).image = str(outside)
    store.save(session)
    stored = json.loads(store.path("c").read_text(encoding="utf-8"))["turns"][0]["image"]
    assert stored == "c-images/chat_01.png" and outside.is_file()
    loaded = store.load("c").turns[0].image
    assert Image.open(loaded).getpixel((0, 0)) == (1, 2, 3)


# ------------------------------------------------------------------- 5. pictures are never replaced
def test_remember_picture_never_replaces_a_picture(user, monkeypatch):
    *_, turn = rewrite("画一只猫", "p")
    picture = torch.full((1, 8, 8, 3), 0.5)
    run_node(HunyuanDiTConversationImage, images=picture, conversation=turn)
    first = SessionStore(user / "sessions").image_dir("p") / "turn_001.png"
    before = first.read_bytes()

    def interrupted(self, fp, format=None, **params):
        Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Image.Image, "save", interrupted)
        run_node(HunyuanDiTConversationImage, images=picture, conversation=turn)
    assert first.read_bytes() == before and [p.name for p in first.parent.iterdir()] == ["turn_001.png"]
    ui = run_node(HunyuanDiTConversationImage, images=torch.zeros(1, 8, 8, 3), conversation=turn)[1]
    assert ui["text"] == ["turn 1: turn_001_00001_.png"] and first.read_bytes() == before
    assert SessionStore(user / "sessions").load("p").turns[0].image.endswith("turn_001_00001_.png")


# --------------------------------------------------------------------- 6. the conversation in the graph
def test_the_workflow_names_the_conversation_once():
    workflow = json.loads((WORKFLOW_DIR / "Hunyuan-DiT - multi-turn drawing with a prompt rewriter.json").read_text(encoding="utf-8"))
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    remember = next(n for n in nodes.values() if n["type"] == "HunyuanDiTConversationImage")
    link = next(links[i["link"]] for i in remember["inputs"] if i["name"] == "conversation")
    assert nodes[link[1]]["type"] == "HunyuanDiTRewritePrompt" and link[2] == 5 and link[5] == "HYDIT_CONVERSATION"
    assert remember["widgets_values"] == []  # no second session widget to fall out of step


def test_renaming_the_conversation_moves_its_pictures_too(user):
    picture = torch.full((1, 8, 8, 3), 0.25)
    for name in ("multiturn", "other"):  # the name typed once, in Rewrite Prompt
        *_, turn = rewrite("画一只猫", name)
        run_node(HunyuanDiTConversationImage, images=picture, conversation=turn)
    store = SessionStore(user / "sessions")
    for name in ("multiturn", "other"):
        turns = store.load(name).turns
        assert len(turns) == 1 and Path(turns[0].image).parent == store.image_dir(name).resolve()


# ------------------------------------------------------------------------------------- 7. fuzzing
@contextlib.contextmanager
def tolerated_warnings():
    """A skip-with-warning is the contract for damaged files: warnings are recorded, errors pass through."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        yield


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _check_session_reader(folder: Path, raw: bytes) -> None:
    store = SessionStore(folder)
    store.path("x").write_bytes(raw)
    try:
        loaded = Session.load(store.path("x"))
    except InputError:
        pass
    else:
        loaded.validate()
    store.names()
    session = store.load("x")  # damaged: a fresh one, with a warning
    session.add_turn("a", "b", "c", refused=False)
    store.save(session)
    assert store.load("x").turns[-1].request == "a"


@FUZZ
@given(raw=st.binary(max_size=300))
def test_fuzz_session_reader_random_bytes(tmp_path, raw):
    with tolerated_warnings():
        _check_session_reader(tmp_path, raw)


@FUZZ
@given(key=st.sampled_from(["format", "version", "name", "seed", "reuse_seed", "img2img_strength", "turns",
                            "turns.0", "turns.0.request", "turns.0.refused", "turns.0.seed", "turns.0.image",
                            "turns.0.created", "turns.0.extra"]),
       value=json_values, delete=st.booleans())
def test_fuzz_session_reader_mutated_files(tmp_path, key, value, delete):
    data = session_file()
    *parents, last = key.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    elif delete:
        target.pop(last, None)
    else:
        target[last] = value
    with tolerated_warnings():
        _check_session_reader(tmp_path, json.dumps(data, ensure_ascii=True).encode())


@FUZZ
@given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps({"instructions": v}).encode())
       | st.lists(json_values, max_size=4).map(lambda v: json.dumps({"instructions": v}).encode()))
def test_fuzz_instruction_reader(tmp_path, raw):
    (tmp_path / "instructions.json").write_bytes(raw)
    store = InstructionStore(tmp_path)
    with tolerated_warnings():
        assert all(isinstance(name, str) for name in store.names())
        store.save(Instruction("fuzz", "{prompt}"))
    assert store.get("fuzz").template == "{prompt}"


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
