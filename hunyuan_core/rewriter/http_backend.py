"""A language model behind an OpenAI-compatible HTTP server (llama.cpp server, Ollama, vLLM, LM Studio).

Standard library only. The server is untrusted: every request has a total deadline and every reply is read
up to a size bound; redirects are followed only within the server's own origin, so the credentials never
reach another host; credentials are never sent in clear text to another machine unless the caller opts in;
and every string the backend hands out (errors, its name, the reply) has the credentials redacted. Anything
that is not a chat completion becomes a :class:`BackendError` that says what happened and where.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import json
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request

from ..errors import HunyuanError, InputError
from .local import GenerationOptions
from .parsing import ParsedReply, parse_chat
from .sanitize import redact, url_secrets
from .templates import SYSTEM_PROMPT, History, chat_messages

HTTP_OPTIONS = GenerationOptions(temperature=0.7, max_new_tokens=512)
API_KEY_ENV = "HUNYUAN_REWRITER_API_KEY"
MAX_REPLY_BYTES = 8 * 1024 * 1024
MAX_TIMEOUT = 24 * 3600.0  # seconds; also what socket and timer waits accept
MAX_REDIRECTS = 3  # same-origin redirects followed per request


class BackendError(HunyuanError):
    """The rewriting server could not be reached, did not answer in time, or answered something unusable."""


class ServerUnreachable(BackendError):
    """No connection to the server, or no answer within the timeout."""


def chat_completions_url(endpoint: str) -> str:
    """The ``…/chat/completions`` URL for a server address (``http://host:port``, ``…/v1`` or the full URL)."""
    try:
        parsed = urllib.parse.urlparse(endpoint.strip())
        valid = parsed.port is None or parsed.port > 0  # .port raises for a port that is not a number
    except ValueError:  # also an unclosed [IPv6 address
        valid = False
    if not valid or parsed.scheme not in ("http", "https") or not parsed.hostname \
            or not all(c.isprintable() and not c.isspace() for c in endpoint.strip()):
        raise InputError(f"rewriter endpoint '{redact(endpoint, url_secrets(endpoint))}': expected an http(s) URL "
                         "such as http://127.0.0.1:8080/v1")
    path = parsed.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions" if path.endswith("/v1") else "/v1/chat/completions"
    return urllib.parse.urlunparse(parsed._replace(path=path))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port that is not a number: no origin matches it
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Deadline:
    """The total time one request may take, from connecting to the last byte of the reply.

    Socket timeouts bound each read only, so a server sending one byte a second would hold the caller for
    ever; when the time is up a timer shuts the request's connections down, which ends the read in progress.
    """

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()

    def _watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def connection_class(self, http_class: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        """``http_class`` whose sockets this deadline shuts down."""
        deadline = self

        class Watched(http_class):
            def connect(self) -> None:
                super().connect()
                deadline._watch(self.sock)

        return Watched


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the reader
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain call also for TLS: it leaves the reader an EOF


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(self.deadline.connection_class(http_class), req, **kwargs)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(self.deadline.connection_class(http_class), req, **kwargs)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same scheme, host and port: the credentials must not travel further."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, backend: HttpBackend):
        super().__init__()
        self.backend = backend

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != _origin(req.full_url):
            fp.close()
            scheme, host, port = _origin(newurl)
            raise self.backend._error(
                BackendError, f"rewriter server {self.backend.where} redirected the request to another server "
                f"({scheme}://{host}:{port}); not following it, so that the API key and the prompt stay with the "
                "server you named. Point the rewriter at the server that answers.")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HttpBackend:
    """Sends the conversation to ``POST /v1/chat/completions`` and returns the assistant's text.

    ``timeout`` bounds each request as a whole (seconds). The API key (``api_key``, else the
    ``HUNYUAN_REWRITER_API_KEY`` environment variable) or credentials written into the URL
    (``https://user:password@host``, sent as HTTP basic auth; ``?key=…``) go only to the named server, and over
    plain ``http://`` only to this machine unless ``allow_insecure_http`` says the network is trusted.
    """

    style = "chat"
    defaults = HTTP_OPTIONS

    def __init__(self, endpoint: str, model: str | None = None, timeout: float = 120.0, api_key: str | None = None,
                 system_prompt: str = SYSTEM_PROMPT, *, allow_insecure_http: bool = False):
        url = chat_completions_url(endpoint)
        self._secrets = url_secrets(url)
        parts = urllib.parse.urlsplit(url)
        self.url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.where = redact(self.url, self._secrets)
        self.name = f"HTTP ({self.where})"
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
            raise InputError(f"rewriter timeout {timeout!r}: expected a number of seconds in (0, {MAX_TIMEOUT:g}]")
        self.timeout = float(timeout)
        self._authorization = self._credentials(parts, api_key or os.environ.get(API_KEY_ENV))
        local = _is_loopback(parts.hostname or "")
        if (self._authorization or self._secrets) and parts.scheme == "http" and not local and not allow_insecure_http:
            raise InputError(
                f"rewriter endpoint {self.where}: refusing to send the API key in clear text (http://) to another "
                "machine; use https://, or allow it on a trusted network (allow_insecure_http=True, "
                "chat --allow-insecure-http)")
        self.system_prompt = system_prompt
        # A server on this machine is reached directly, never through the user's HTTP proxy.
        self._proxies = urllib.request.ProxyHandler({} if local else None)
        self.model = model or self._first_listed_model()

    def _credentials(self, parts: urllib.parse.SplitResult, api_key: str | None) -> str | None:
        """The Authorization header value (and every form of the secret in it joins the redacted ones)."""
        if "@" in parts.netloc:
            if api_key:
                raise InputError(f"rewriter endpoint {self.where}: both an API key and credentials in the URL; "
                                 "give one of them")
            userinfo = urllib.parse.unquote(parts.netloc.rpartition("@")[0])
            token = base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
            self._secrets |= {token, userinfo}
            return f"Basic {token}"
        if api_key:
            self._secrets.add(api_key)
            return f"Bearer {api_key}"
        return None

    def __repr__(self) -> str:
        return f"HttpBackend({self.where!r}, model={self.model!r}, timeout={self.timeout:g})"

    def _text(self, text: str) -> str:
        """A server's text as this backend hands it out: credentials redacted, and lone surrogates (JSON may
        escape them, UTF-8 cannot carry them: a session file or terminal would fail on them) replaced."""
        return redact(text, self._secrets).encode("utf-8", "replace").decode("utf-8")

    def _error(self, kind: type[BackendError], message: str) -> BackendError:
        """Every error this backend raises is built here, its message through :meth:`_text`."""
        return kind(self._text(message))

    def parse(self, reply: str) -> ParsedReply:
        return parse_chat(reply)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        return headers

    def _request(self, url: str, body: dict | None) -> dict:
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(url, data=data, headers=self._headers(),
                                         method="GET" if body is None else "POST")
        where = redact(url, self._secrets)
        late = f"rewriter server {where} did not answer within {self.timeout:g} s"
        failure: BackendError | None = None
        with _Deadline(self.timeout) as deadline:
            opener = urllib.request.build_opener(self._proxies, _SameOriginRedirects(self),
                                                 _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
            try:
                with opener.open(request, timeout=self.timeout) as response:
                    raw = response.read(MAX_REPLY_BYTES + 1)
            except BackendError as exc:  # a refused redirect
                failure = exc
            except urllib.error.HTTPError as exc:
                detail = b""
                with contextlib.suppress(OSError, http.client.HTTPException):  # an error page cut short
                    detail = exc.read(2000)
                failure = BackendError(f"rewriter server {where} answered HTTP {exc.code} {exc.reason}: "
                                       f"{detail.decode('utf-8', 'replace').strip()[:500]}")
            except (TimeoutError, socket.timeout):
                failure = ServerUnreachable(late)
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                    failure = ServerUnreachable(late)
                else:
                    failure = ServerUnreachable(f"rewriter server {where} is unreachable ({exc.reason}); "
                                                "is it running?")
            except http.client.HTTPException as exc:
                failure = BackendError(f"rewriter server {where} sent a malformed HTTP reply "
                                       f"({type(exc).__name__}: {exc})")
            except OSError as exc:  # connection reset or closed mid-reply
                failure = ServerUnreachable(f"rewriter server {where}: connection failed ({exc})")
        if deadline.expired:  # whatever the shut connection looked like to the reader
            raise self._error(ServerUnreachable, late)
        if failure is not None:
            raise self._error(type(failure), str(failure))
        if len(raw) > MAX_REPLY_BYTES:
            raise self._error(BackendError, f"rewriter server {where} sent more than {MAX_REPLY_BYTES:,} bytes; "
                                            "not a chat reply")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            snippet = raw[:200].decode("utf-8", "replace")
            raise self._error(BackendError,
                              f"rewriter server {where} sent a reply that is not JSON: {snippet!r}") from None

    def _first_listed_model(self) -> str | None:
        """The first model the server lists (``GET …/models``); None when it lists none or has no such route
        (llama.cpp serves one model and ignores the name). An unreachable server fails here, at load time."""
        parts = urllib.parse.urlsplit(self.url)
        url = urllib.parse.urlunsplit(parts._replace(path=parts.path[: -len("/chat/completions")] + "/models"))
        try:
            listing = self._request(url, None)
        except ServerUnreachable:
            raise
        except BackendError:
            return None
        models = listing.get("data") if isinstance(listing, dict) else None
        if isinstance(models, list) and models and isinstance(models[0], dict) and isinstance(models[0].get("id"), str):
            return models[0]["id"]
        return None

    def complete(self, history: History, request: str, options: GenerationOptions) -> str:
        """The assistant's reply text for the conversation (credentials a server echoes are redacted)."""
        body: dict = {"messages": chat_messages(history, request, self.system_prompt), "stream": False,
                      "temperature": options.temperature, "max_tokens": options.max_new_tokens}
        if self.model:
            body["model"] = self.model
        if options.seed is not None:
            body["seed"] = options.seed
        if options.top_p is not None:
            body["top_p"] = options.top_p
        reply = self._request(self.url, body)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            shown = json.dumps(reply, ensure_ascii=False)[:300]
            raise self._error(BackendError, f"rewriter server {self.where} sent JSON without "
                                            f"choices[0].message.content: {shown}") from None
        if not isinstance(content, str):
            raise self._error(BackendError, f"rewriter server {self.where} sent a non-text message content: "
                                            f"{content!r:.200}")
        return self._text(content).strip()

    def unload(self) -> None:
        """Nothing to free here: the server owns its model."""
