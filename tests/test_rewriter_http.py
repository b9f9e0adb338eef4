"""The OpenAI-compatible HTTP backend against a small server started here on 127.0.0.1, and what builds on
it: conversations across processes, separate sessions, the ``chat`` command's loop."""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from hunyuan_core.errors import InputError
from hunyuan_core.metadata import read_params
from hunyuan_core.rewriter import (
    BackendError,
    Instruction,
    InstructionStore,
    Session,
    SessionStore,
    load_rewriter,
)
from hunyuan_core.rewriter.cli import add_parser, chat

ROOT = Path(__file__).resolve().parents[1]
SLOW_SECONDS = 2.0


class FakeOpenAI(BaseHTTPRequestHandler):
    """``/v1/models`` and ``/v1/chat/completions``. The last user message picks the behaviour: 慢 = slow,
    炸弹 = refusal, 坏 = not JSON, 空 = JSON without choices; anything else is drawn, and the reply lists
    every user message received, so tests see the history that was sent."""

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [{"id": "tiny-test", "object": "model"}]}).encode())
        else:
            self._send(404, b'{"error": "no such route"}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append(body)
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        last = users[-1]
        if "慢" in last:
            time.sleep(SLOW_SECONDS)
        if "坏" in last:
            return self._send(200, b"<html>gateway error</html>")
        if "空" in last:
            return self._send(200, b'{"choices": []}')
        content = "对不起，我不能画这个。" if "炸弹" in last else f"<画图>{'；'.join(users)}（第{len(users)}轮）"
        reply = {"object": "chat.completion", "model": body.get("model"),
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
        self._send(200, json.dumps(reply, ensure_ascii=False).encode("utf-8"))


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    httpd.daemon_threads = True
    httpd.received = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_success_sends_model_options_and_history(server):
    rewriter = load_rewriter(_url(server), temperature=0, seed=11, max_new_tokens=64, timeout=5)
    assert rewriter.backend.model == "tiny-test"  # the first model the server lists
    session = Session(name="h", seed=9)
    first = rewriter.rewrite("画一个木制的鸟", session)
    assert (first.prompt, first.draw, first.refused, first.seed) == ("画一个木制的鸟（第1轮）", True, False, 9)
    second = rewriter.rewrite("变成玻璃的", session)
    assert second.prompt == "画一个木制的鸟；变成玻璃的（第2轮）"
    body = server.received[-1]
    assert (body["model"], body["temperature"], body["seed"], body["max_tokens"]) == ("tiny-test", 0, 11, 64)
    assert body["messages"][0]["role"] == "system" and "Hunyuan-DiT" in body["messages"][0]["content"]
    assert body["messages"][2] == {"role": "assistant", "content": first.reply}


def test_refusal_is_a_result_not_an_error(server):
    rewriter = load_rewriter(_url(server), model="any", timeout=5)
    session = Session(name="r")
    result = rewriter.rewrite("画一个炸弹", session)
    assert result.refused and result.prompt == "" and not result.draw
    assert result.reply.startswith("对不起") and session.turns[-1].refused


def test_timeout_is_bounded_and_says_so(server):
    rewriter = load_rewriter(_url(server), model="any", timeout=0.3)
    start = time.monotonic()
    with pytest.raises(BackendError, match="did not answer within 0.3 s"):
        rewriter.rewrite("慢慢画")
    assert time.monotonic() - start < SLOW_SECONDS


@pytest.mark.parametrize("request_text, message", [("坏", "not JSON"), ("空", "without choices")])
def test_malformed_replies(server, request_text, message):
    rewriter = load_rewriter(_url(server), model="any", timeout=5)
    session = Session(name="m")
    with pytest.raises(BackendError, match=message):
        rewriter.rewrite(request_text, session)
    assert session.turns == []  # nothing recorded for a failed request


def test_unreachable_server_is_a_clear_error():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(BackendError, match="unreachable"):
        load_rewriter(url, timeout=2)
    rewriter = load_rewriter(url, model="named", timeout=2)  # a named model needs no listing at load time
    with pytest.raises(BackendError, match="is it running"):
        rewriter.rewrite("画一只猫")


def test_empty_requests_and_bad_settings_are_refused(server):
    with pytest.raises(InputError, match="empty"):
        load_rewriter(_url(server), model="any").rewrite("  ")
    with pytest.raises(InputError, match="temperature"):
        load_rewriter(_url(server), model="any", temperature=-1)
    with pytest.raises(InputError, match="timeout"):
        load_rewriter(_url(server), model="any", timeout=0)


def test_two_sessions_never_mix(server):
    rewriter = load_rewriter(_url(server), model="any", timeout=5)
    cats, birds = Session(name="cats"), Session(name="birds")
    rewriter.rewrite("一只猫", cats)
    rewriter.rewrite("一只鸟", birds)
    assert rewriter.rewrite("变成蓝色", cats).prompt == "一只猫；变成蓝色（第2轮）"
    assert rewriter.rewrite("变成玻璃的", birds).prompt == "一只鸟；变成玻璃的（第2轮）"


def test_instructions_before_and_after_rewriting(server):
    rewriter = load_rewriter(_url(server), model="any", timeout=5)
    before = rewriter.rewrite("一只猫", instruction=Instruction("en", "In English: {prompt}", position="before"))
    assert server.received[-1]["messages"][-1]["content"] == "In English: 一只猫"
    assert before.prompt == "In English: 一只猫（第1轮）"
    after = rewriter.rewrite("一只猫", instruction=Instruction("ink", "{prompt}，水墨画风格"))
    assert server.received[-1]["messages"][-1]["content"] == "一只猫"
    assert after.prompt == "一只猫（第1轮），水墨画风格"


_CONTINUE = """
import sys
from hunyuan_core.rewriter import SessionStore, load_rewriter
url, folder, text = sys.argv[1:]
store = SessionStore(folder)
session = store.load("shared", seed=5)
result = load_rewriter(url, model="any", timeout=5).rewrite(text, session)
store.save(session)
print(result.prompt)
"""


def test_a_session_saved_in_one_process_continues_in_another(server, tmp_path):
    def run(text: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", _CONTINUE, _url(server), str(tmp_path), text], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run("画一个木制的鸟") == "画一个木制的鸟（第1轮）"
    assert run("变成玻璃的") == "画一个木制的鸟；变成玻璃的（第2轮）"
    session = SessionStore(tmp_path).load("shared")
    assert [t.request for t in session.turns] == ["画一个木制的鸟", "变成玻璃的"] and session.seed == 5


# ------------------------------------------------------------------------------------ chat command
class FakePipe:
    """Stands in for a Hunyuan-DiT pipeline: records each call, returns one small image."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompt, **kwargs):
        self.calls.append((prompt, kwargs))
        return SimpleNamespace(images=[Image.new("RGB", (16, 16), (len(self.calls) * 40, 0, 0))], seeds=[kwargs["seed"]])


def _chat_args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["chat", "--model", "unused", "--rewriter", "unused", "--session", "demo",
                              "--session-dir", str(tmp_path / "sessions"), "--out", str(tmp_path / "out"),
                              "--width", "64", "--height", "48", "--steps", "3", *extra])


def test_chat_loop_draws_each_turn_with_history_seed_and_previous_image(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HUNYUAN_DIT_CONFIG_DIR", str(tmp_path / "cfg"))
    InstructionStore().save(Instruction("ink", "{prompt}，水墨画风格"))
    rewriter = load_rewriter(_url(server), model="any", timeout=5)
    pipe, out = FakePipe(), io.StringIO()
    commands = "画一个木制的鸟\n变成玻璃的\n画一个炸弹\n/use ink\n放在桌上\n/undo\n/history\n/quit\n"
    args = _chat_args(tmp_path, "--seed", "7", "--img2img", "0.6")
    assert chat(pipe, rewriter, args, io.StringIO(commands), out) == 0
    text = out.getvalue()
    assert "rewriter refused: 对不起" in text and "dropped: 放在桌上" in text
    assert [p for p, _ in pipe.calls] == ["画一个木制的鸟（第1轮）", "画一个木制的鸟；变成玻璃的（第2轮）",
                                          "画一个木制的鸟；变成玻璃的；画一个炸弹；放在桌上（第4轮），水墨画风格"]
    first, second = pipe.calls[0][1], pipe.calls[1][1]
    assert (first["seed"], first["width"], first["height"], first["steps"], first["image"]) == (7, 64, 48, 3, None)
    assert second["seed"] == 7 and second["strength"] == 0.6 and second["image"].getpixel((0, 0)) == (40, 0, 0)
    session = SessionStore(tmp_path / "sessions").load("demo")
    assert [t.refused for t in session.turns] == [False, False, True]
    assert all(Path(t.image).is_file() for t in session.turns[:2]) and session.turns[2].image is None
    drawn = read_params(session.turns[1].image)  # each picture carries what drew it
    assert (drawn.prompt, drawn.seed, drawn.width, drawn.height, drawn.steps, drawn.model) == (
        "画一个木制的鸟；变成玻璃的（第2轮）", 7, 64, 48, 3, "unused")
    assert (drawn.image, drawn.strength) == (session.turns[0].image, 0.6)

    # The same session continues in a new run: its history is sent again.
    pipe = FakePipe()
    chat(pipe, rewriter, _chat_args(tmp_path), io.StringIO("加上月光\n"), io.StringIO())
    assert pipe.calls[0][0].endswith("加上月光（第4轮）") and pipe.calls[0][1]["seed"] == 7


def test_chat_loop_reports_errors_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("HUNYUAN_DIT_CONFIG_DIR", str(tmp_path / "cfg"))
    rewriter = load_rewriter(f"http://127.0.0.1:{_free_port()}/v1", model="any", timeout=2)
    out = io.StringIO()
    assert chat(FakePipe(), rewriter, _chat_args(tmp_path), io.StringIO("画一只猫\n/bogus\n"), out) == 0
    assert "error: rewriter server" in out.getvalue() and "commands:" in out.getvalue()


def test_a_drawing_that_fails_leaves_no_turn(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HUNYUAN_DIT_CONFIG_DIR", str(tmp_path / "cfg"))

    def failing_pipe(prompt, **kwargs):
        raise InputError("height must be between 64 and 4096 px, got 48")

    out = io.StringIO()
    rewriter = load_rewriter(_url(server), model="any", timeout=5)
    chat(failing_pipe, rewriter, _chat_args(tmp_path), io.StringIO("画一只猫\n"), out)
    assert "error: height must be" in out.getvalue()
    assert SessionStore(tmp_path / "sessions").load("demo").turns == []
