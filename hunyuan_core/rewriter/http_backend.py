"""A language model behind an OpenAI-compatible HTTP server (llama.cpp server, Ollama, vLLM, LM Studio).

Standard library only. Every request has a timeout and every reply is read up to a size bound; anything
that is not a chat completion becomes a :class:`BackendError` that says what happened and where.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request

from ..errors import HunyuanError, InputError
from .local import GenerationOptions
from .parsing import ParsedReply, parse_chat
from .templates import SYSTEM_PROMPT, History, chat_messages

HTTP_OPTIONS = GenerationOptions(temperature=0.7, max_new_tokens=512)
API_KEY_ENV = "HUNYUAN_REWRITER_API_KEY"
MAX_REPLY_BYTES = 8 * 1024 * 1024


class BackendError(HunyuanError):
    """The rewriting server could not be reached, did not answer in time, or answered something unusable."""


class ServerUnreachable(BackendError):
    """No connection to the server, or no answer within the timeout."""


def chat_completions_url(endpoint: str) -> str:
    """The ``…/chat/completions`` URL for a server address (``http://host:port``, ``…/v1`` or the full URL)."""
    parsed = urllib.parse.urlparse(endpoint.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"rewriter endpoint '{endpoint}': expected an http(s) URL such as http://127.0.0.1:8080/v1")
    path = parsed.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions" if path.endswith("/v1") else "/v1/chat/completions"
    return urllib.parse.urlunparse(parsed._replace(path=path))


class HttpBackend:
    """Sends the conversation to ``POST /v1/chat/completions`` and returns the assistant's text."""

    style = "chat"
    defaults = HTTP_OPTIONS

    def __init__(self, endpoint: str, model: str | None = None, timeout: float = 120.0, api_key: str | None = None,
                 system_prompt: str = SYSTEM_PROMPT):
        if timeout <= 0:
            raise InputError(f"rewriter timeout {timeout}: expected a positive number of seconds")
        self.url = chat_completions_url(endpoint)
        self.name = f"HTTP ({self.url})"
        self.timeout = float(timeout)
        self.api_key = api_key or os.environ.get(API_KEY_ENV)
        self.system_prompt = system_prompt
        host = urllib.parse.urlparse(self.url).hostname or ""
        # A server on this machine is reached directly, never through the user's HTTP proxy.
        local = host == "localhost" or host.startswith("127.") or host == "::1"
        proxies = urllib.request.ProxyHandler({}) if local else urllib.request.ProxyHandler()
        self._opener = urllib.request.build_opener(proxies)
        self.model = model or self._first_listed_model()

    def parse(self, reply: str) -> ParsedReply:
        return parse_chat(reply)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _request(self, url: str, body: dict | None) -> dict:
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(url, data=data, headers=self._headers(), method="GET" if body is None else "POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read(MAX_REPLY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace").strip()
            raise BackendError(f"rewriter server {url} answered HTTP {exc.code} {exc.reason}: {detail[:500]}") from None
        except (TimeoutError, socket.timeout):
            raise ServerUnreachable(f"rewriter server {url} did not answer within {self.timeout:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise ServerUnreachable(f"rewriter server {url} did not answer within {self.timeout:g} s") from None
            raise ServerUnreachable(f"rewriter server {url} is unreachable ({exc.reason}); is it running?") from None
        except OSError as exc:  # connection reset or closed mid-reply
            raise ServerUnreachable(f"rewriter server {url}: connection failed ({exc})") from None
        except http.client.HTTPException as exc:
            raise BackendError(f"rewriter server {url} sent a malformed HTTP reply ({type(exc).__name__}: {exc})") from None
        if len(raw) > MAX_REPLY_BYTES:
            raise BackendError(f"rewriter server {url} sent more than {MAX_REPLY_BYTES:,} bytes; not a chat reply")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            snippet = raw[:200].decode("utf-8", "replace")
            raise BackendError(f"rewriter server {url} sent a reply that is not JSON: {snippet!r}") from None

    def _first_listed_model(self) -> str | None:
        """The first model the server lists (``GET …/models``); None when it lists none or has no such route
        (llama.cpp serves one model and ignores the name). An unreachable server fails here, at load time."""
        url = self.url[: -len("/chat/completions")] + "/models"
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
        """The assistant's reply text for the conversation."""
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
            raise BackendError(
                f"rewriter server {self.url} sent JSON without choices[0].message.content: {json.dumps(reply)[:300]}"
            ) from None
        if not isinstance(content, str):
            raise BackendError(f"rewriter server {self.url} sent a non-text message content: {content!r:.200}")
        return content.strip()

    def unload(self) -> None:
        """Nothing to free here: the server owns its model."""
