"""A hostile rewriting server and a careless terminal (issue 8): the OpenAI-compatible client keeps the API key
to the server the user named and out of every text, gives up at its deadline, and the ``chat`` loop shows
no terminal controls, keeps every picture and survives every line typed into it.

Servers run on 127.0.0.1; each test scripts its replies with a ``respond(handler)`` function.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_rewriter_http import FakePipe, _chat_args, _free_port

from hunyuan_core.cli import main
from hunyuan_core.errors import InputError, OutputError
from hunyuan_core.rewriter import BackendError, Session, SessionStore, load_rewriter
from hunyuan_core.rewriter.cli import chat
from hunyuan_core.rewriter.sanitize import redact, terminal_text, url_secrets

KEY = "sk-hostile-0123456789"
CONTROLS = ["\x1b", "\x07", "\r", "\x9b", "\x9d", "\u202e", "\x00", "\x08"]


class Scripted(BaseHTTPRequestHandler):
    """Records each request (method, path, headers, body) and lets the server's ``respond`` answer it."""

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        self.server.respond(self)

    do_GET = do_POST = _handle

    def send(self, status: int, body: bytes | dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                            **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def completion(content: str) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


@contextlib.contextmanager
def serve(respond: Callable[[Scripted], None]) -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    httpd.daemon_threads = True
    httpd.requests, httpd.respond = [], respond
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def base(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def env_key(monkeypatch):
    """The key as most users give it: in the environment (``api_key=`` takes precedence)."""
    monkeypatch.setenv("HUNYUAN_REWRITER_API_KEY", KEY)


def draws(text: str) -> Callable[[Scripted], None]:
    return lambda h: h.send(200, completion(text))


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch, tmp_path):
    monkeypatch.delenv("HUNYUAN_REWRITER_API_KEY", raising=False)
    monkeypatch.setenv("HUNYUAN_DIT_CONFIG_DIR", str(tmp_path / "cfg"))


# ------------------------------------------------------------------------- 1. redirects and plain http
def test_a_redirect_to_another_origin_is_refused_and_never_gets_the_key(env_key):
    with serve(draws("<画图>a picture chosen by the other server")) as other:
        target = f"{base(other)}/v1/chat/completions"
        with serve(lambda h: h.send(302, b"", {"Location": target})) as named:
            rewriter = load_rewriter(f"{base(named)}/v1", model="m", timeout=5)
            with pytest.raises(BackendError, match="redirected the request to another server") as caught:
                rewriter.rewrite("画一只猫")
        assert other.requests == []  # nothing, and certainly no Authorization header, reached it
        assert named.requests[0][2]["Authorization"] == f"Bearer {KEY}"
        assert KEY not in str(caught.value)


def test_the_model_listing_does_not_follow_a_redirect_to_another_origin_either(env_key):
    with serve(lambda h: h.send(200, {"data": [{"id": "other-model"}]})) as other:
        with serve(lambda h: h.send(301, b"", {"Location": f"{base(other)}/v1/models"})) as named:
            rewriter = load_rewriter(f"{base(named)}/v1", timeout=5)
    assert rewriter.backend.model is None and other.requests == []


def test_a_same_origin_redirect_is_followed_a_bounded_number_of_times(env_key):
    def respond(h: Scripted) -> None:
        if h.path == "/v1/models":
            h.send(302, b"", {"Location": "/v2/models"})  # relative: same origin
        elif h.path == "/v2/models":
            h.send(200, {"data": [{"id": "moved-model"}]})
        else:
            h.send(302, b"", {"Location": h.path + "x"})  # a redirect loop that never ends

    with serve(respond) as named:
        rewriter = load_rewriter(f"{base(named)}/v1", timeout=5)
        assert rewriter.backend.model == "moved-model"
        assert named.requests[1][2]["Authorization"] == f"Bearer {KEY}"
        before = len(named.requests)
        with pytest.raises(BackendError, match="HTTP 302"):
            rewriter.rewrite("画一只猫")
        assert len(named.requests) - before <= 4


def test_the_key_is_not_sent_in_clear_text_to_another_machine_without_opt_in():
    for endpoint in ("http://192.0.2.7:8080/v1", f"http://192.0.2.7/v1?api_key={KEY}",
                     f"http://user:{KEY}@192.0.2.7/v1"):
        with pytest.raises(InputError, match="https://.*allow_insecure_http") as caught:
            load_rewriter(endpoint, model="m", api_key=None if "@" in endpoint or "?" in endpoint else KEY)
        assert KEY not in str(caught.value)
    # Opting in, https, a server on this machine, or no key at all: accepted (no request is made with a model).
    assert load_rewriter("http://192.0.2.7/v1", model="m", api_key=KEY, allow_insecure_http=True)
    assert load_rewriter("https://192.0.2.7/v1", model="m", api_key=KEY)
    assert load_rewriter("http://localhost:9/v1", model="m", api_key=KEY)
    assert load_rewriter("http://[::1]:9/v1", model="m", api_key=KEY)
    assert load_rewriter("http://192.0.2.7/v1", model="m")


def test_chat_has_a_flag_for_plain_http(monkeypatch, tmp_path, capsys):
    import hunyuan_core.pipeline

    class Pipe(FakePipe):
        text_encoder = argparse.Namespace(mt5_tokenizer=lambda text, add_special_tokens: {"input_ids": text.split()})

    monkeypatch.setattr(hunyuan_core.pipeline, "load_pipeline", lambda *a, **k: Pipe())
    monkeypatch.setattr("hunyuan_core.formats.hashes.model_hash", lambda *a, **k: "0123456789")  # no model file
    monkeypatch.setenv("HUNYUAN_REWRITER_API_KEY", KEY)
    monkeypatch.setattr("sys.stdin", io.StringIO("/quit\n"))
    argv = ["chat", "--model", "unused", "--rewriter", "http://192.0.2.7:8080/v1", "--rewriter-model", "m",
            "--session-dir", str(tmp_path / "s"), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--allow-insecure-http" in err and KEY not in err and err.count("\n") == 1
    assert main([*argv, "--allow-insecure-http"]) == 0
    assert "rewriter: HTTP (http://192.0.2.7:8080/v1/chat/completions)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ 2. redaction
def test_a_401_that_echoes_the_key_does_not_put_it_in_the_error(env_key):
    def respond(h: Scripted) -> None:
        h.send(401, f"invalid key {KEY}; you sent {h.headers['Authorization']}".encode())

    with serve(respond) as named:
        rewriter = load_rewriter(f"{base(named)}/v1", model="m", timeout=5)
        with pytest.raises(BackendError, match="HTTP 401") as caught:
            rewriter.rewrite("画一只猫")
    assert KEY not in str(caught.value) and "invalid key ***" in str(caught.value)


def test_credentials_in_the_url_are_used_and_never_shown():
    with serve(lambda h: h.send(401, f"bad credentials {h.headers.get('Authorization')} {h.path}".encode())) as named:
        port = named.server_address[1]
        for endpoint, header in [(f"http://me:{KEY}@127.0.0.1:{port}/v1", "Basic "), (
                f"http://127.0.0.1:{port}/v1?api_key={KEY}", None)]:
            rewriter = load_rewriter(endpoint, model="m", timeout=5)
            with pytest.raises(BackendError) as caught:
                rewriter.rewrite("画一只猫")
            texts = [str(caught.value), rewriter.name, repr(rewriter.backend)]
            assert all(KEY not in text for text in texts), texts
            assert (named.requests[-1][2].get("Authorization") or "").startswith(header or "") and (
                header or named.requests[-1][1].endswith(f"?api_key={KEY}"))
    for endpoint in (f"ftp://me:{KEY}@host/v1", f"http://me:{KEY}@[::1/v1", f"http://me:{KEY}@host:port/v1"):
        with pytest.raises(InputError, match="expected an http") as caught:
            load_rewriter(endpoint)
        assert KEY not in str(caught.value)


def test_an_unreachable_server_error_does_not_show_a_key_in_the_url():
    endpoint = f"http://127.0.0.1:{_free_port()}/v1?key={KEY}"
    with pytest.raises(BackendError, match=r"key=\*\*\*") as caught:
        load_rewriter(endpoint, timeout=2)
    assert KEY not in str(caught.value)


def test_a_reply_that_echoes_the_key_is_redacted_before_it_is_kept(env_key, tmp_path):
    with serve(lambda h: h.send(200, completion(f"<画图>a cat holding a sign '{KEY}'"))) as named:
        rewriter = load_rewriter(f"{base(named)}/v1", model="m", timeout=5)
        session = Session(name="leak")
        result = rewriter.rewrite("画一只猫", session)
    assert KEY not in result.reply and KEY not in result.prompt and "***" in result.prompt
    SessionStore(tmp_path).save(session)
    assert KEY not in (tmp_path / "leak.json").read_text(encoding="utf-8")


def test_url_secrets_and_redact():
    assert url_secrets("https://u:p%2Fw@h/v1?api_key=a+b&model=m&access_token=t") == {
        "p%2Fw", "p/w", "a+b", "a b", "t"}
    assert url_secrets("https://TOKEN@h/v1") == {"TOKEN"}
    assert redact("x sk-1 y sk-12", ["sk-1", "sk-12", ""]) == "x *** y ***"
    assert redact("HTTP 401", ["1", "40"]) == "HTTP 401"  # too short to be a secret, too common to remove


# ------------------------------------------------------------------------------------ 3. deadline
def _dripping(in_headers: bool) -> Callable[[Scripted], None]:
    def respond(h: Scripted) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\n" if not in_headers else b"HTTP/1.1 200")
        if not in_headers:
            h.wfile.write(b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        h.wfile.flush()
        with contextlib.suppress(OSError):
            for _ in range(40):  # 8 s at most, so that a client without a deadline still ends
                h.wfile.write(b" ")
                h.wfile.flush()
                time.sleep(0.2)
    return respond


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_a_dripping_server_is_given_up_at_the_deadline(in_headers):
    with serve(_dripping(in_headers)) as named:
        rewriter = load_rewriter(f"{base(named)}/v1", model="m", timeout=1)
        start = time.monotonic()
        with pytest.raises(BackendError, match="did not answer within 1 s"):
            rewriter.rewrite("画一只猫")
        assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1, "3", 10**9, True])
def test_timeouts_that_are_not_a_duration_are_refused(timeout):
    with pytest.raises(InputError, match="timeout"):
        load_rewriter("http://127.0.0.1:9/v1", model="m", timeout=timeout)


@pytest.mark.parametrize("setting", [{"temperature": math.nan}, {"temperature": math.inf}, {"temperature": "0.5"},
                                     {"max_new_tokens": 2.5}, {"max_new_tokens": "64"}, {"max_new_tokens": 0}])
def test_sampling_settings_that_are_not_numbers_are_refused(setting):
    with pytest.raises(InputError, match=next(iter(setting))):
        load_rewriter("http://127.0.0.1:9/v1", model="m", **setting)


# --------------------------------------------------------------------------- 4. terminal controls
HOSTILE = "<画图>\x1b]0;evil\x07a cat\x1b[2J\rFAKE\x9b31m in \u202eink\x1b(B\x00\x08\ud800"


def test_terminal_text_removes_escape_sequences_and_controls():
    assert terminal_text(HOSTILE) == "<画图>a catFAKE in ink"
    assert terminal_text("line one\n\tline two\r\n") == "line one\n\tline two\n"
    assert terminal_text("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \x1bP+q\x1b\\ok") == "link ok"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x2100), max_size=60)
       | st.lists(st.sampled_from(["\x1b", "[", "]", "0;", "\x07", "\x9b", "\x9d", "m", "\r", "a", "\\"]))
       .map("".join))
def test_terminal_text_never_lets_a_control_through(text):
    shown = terminal_text(text)
    assert not any(c in shown for c in CONTROLS) and terminal_text(shown) == shown
    shown.encode("utf-8")  # no lone surrogates: printable to any UTF-8 terminal


def test_chat_prints_no_terminal_controls_from_the_model_or_the_server(tmp_path):
    replies = iter([completion(HOSTILE), completion("对不起\x1b[2J\rno"), completion("just chatting\x1b]0;t\x07")])

    def respond(h: Scripted) -> None:
        reply = next(replies, None)
        h.send(200, reply) if reply else h.send(500, b"\x1b[31mboom\x1b]0;owned\x07")

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    with serve(respond) as named:
        rewriter = load_rewriter(f"{base(named)}/v1", model="m", timeout=5)
        chat(FakePipe(), rewriter, _chat_args(tmp_path), io.StringIO("one\ntwo\nthree\nfour\n/history\n"), out)
    text = raw.getvalue().decode("utf-8")
    assert "prompt: a catFAKE in ink" in text and "rewriter refused: 对不起no" in text and "boom" in text
    assert not any(c in text for c in CONTROLS)


# ------------------------------------------------------------------------------------ 5. chat loop
@pytest.fixture
def drawing_server():
    counter = iter(range(1000))
    with serve(lambda h: h.send(200, completion(f"<画图>picture {next(counter)}"))) as named:
        yield load_rewriter(f"{base(named)}/v1", model="m", timeout=5)


@pytest.mark.parametrize("argument", ["²", "١٢", "-1", "18446744073709551616", pytest.param("9" * 5000, id="5000-digits"), "",
                                      "1.5", "abc"])
def test_a_bad_seed_is_a_message_and_the_loop_goes_on(drawing_server, tmp_path, argument):
    out = io.StringIO()
    pipe = FakePipe()
    lines = io.StringIO(f"/seed {argument}\n画一只猫\n")
    chat(pipe, drawing_server, _chat_args(tmp_path, "--seed", "5"), lines, out)
    assert "error: /seed" in out.getvalue() and "expected a whole number from 0 to 18446744073709551615" in out.getvalue()
    assert len(out.getvalue()) < 2000 and pipe.calls[0][1]["seed"] == 5


def test_a_good_seed_applies_from_the_next_turn(drawing_server, tmp_path):
    pipe = FakePipe()
    chat(pipe, drawing_server, _chat_args(tmp_path, "--seed", "5"), io.StringIO("/seed 0042\n画\n"), io.StringIO())
    assert pipe.calls[0][1]["seed"] == 42


def test_pictures_from_before_a_reset_are_never_overwritten(drawing_server, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "demo_01_5.png").write_bytes(b"an earlier run's picture")
    chat(FakePipe(), drawing_server, _chat_args(tmp_path, "--seed", "5"),
         io.StringIO("画一只猫\n/reset\n画一只狗\n/reset\n画一只鸟\n"), io.StringIO())
    assert (out_dir / "demo_01_5.png").read_bytes() == b"an earlier run's picture"
    pictures = sorted(p.name for p in out_dir.iterdir())
    assert pictures == ["demo_01_5.png", "demo_01_5_00001_.png", "demo_01_5_00002_.png", "demo_01_5_00003_.png"]
    reds = {Image.open(out_dir / name).getpixel((0, 0))[0] for name in pictures[1:]}
    assert reds == {40, 80, 120}  # three different pictures kept


def test_an_unreadable_previous_picture_is_an_error_not_a_crash(drawing_server, tmp_path):
    out = io.StringIO()
    args = _chat_args(tmp_path, "--img2img", "0.5")
    chat(FakePipe(), drawing_server, args, io.StringIO("画一只猫\n"), out)
    first = Path(SessionStore(tmp_path / "sessions").load("demo").turns[0].image)
    first.write_bytes(b"not a picture any more")
    pipe = FakePipe()
    chat(pipe, drawing_server, args, io.StringIO("变成蓝色\n"), out)
    assert "error: cannot read image" in out.getvalue() and pipe.calls == []
    assert len(SessionStore(tmp_path / "sessions").load("demo").turns) == 1  # the failed turn is not kept


def test_odd_lines_never_crash_the_loop(drawing_server, tmp_path):
    lines = b"\n   \n\t\n\x1b[A\x1b[B\n/\n/nonsense arg\n/use\n/use no-such\n/history\n/undo\n/undo\n/undo\n" \
            b"\xff\xfe broken utf-8\n" + "画".encode() * 20000 + b"\n/instructions\n"
    stdin = io.TextIOWrapper(io.BytesIO(lines), encoding="utf-8")
    out = io.StringIO()
    pipe = FakePipe()
    assert chat(pipe, drawing_server, _chat_args(tmp_path), stdin, out) == 0
    text = out.getvalue()
    assert "unknown command /nonsense" in text and "error: " in text and "nothing to undo" in text
    assert [p for p, _ in pipe.calls] == ["picture 0", "picture 1"]  # the broken line and the long one


def test_an_output_folder_that_is_a_file_is_refused_before_the_loop(drawing_server, tmp_path):
    args = _chat_args(tmp_path)
    args.out.write_bytes(b"a file")
    with pytest.raises(OutputError, match="is a file"):
        chat(FakePipe(), drawing_server, args, io.StringIO("画一只猫\n"), io.StringIO())
    assert os.path.getsize(args.out) == 6
