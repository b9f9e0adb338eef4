"""Text that came from outside (a rewriting server, a language model) on its way to a person.

Two helpers, used wherever such text leaves the package: :func:`redact` takes the user's secrets out of
it (an API key a server echoes in an error or a reply, a key written into the endpoint URL), and
:func:`terminal_text` takes out what a terminal would obey instead of show (escape sequences that
retitle or clear it, carriage returns that overwrite a line, bidi overrides that reorder it).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

REDACTED = "***"
MIN_SECRET = 4  # characters

# Query parameters that carry credentials (?key=, ?api_key=, ?access_token=, ?sig=, ...).
_SECRET_PARAM = re.compile(r"key|token|secret|passw|auth|sig", re.IGNORECASE)

_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: cursor moves, clearing, colours (7- and 8-bit forms)
    r"|(?:\x1b[\]P^_X]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"  # OSC, DCS, PM, APC, SOS up to ST
    r"|\x1b[ -/]*[0-~]",  # any other escape sequence (character sets, keypad modes, resets)
    re.DOTALL,
)
# C0 controls except tab and newline, DEL, C1 controls, bidi embeddings/overrides/isolates, lone surrogates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def url_secrets(url: str) -> set[str]:
    """The credentials written into ``url``: userinfo and credential-like query values, as written and decoded."""
    rest = url.split("://", 1)[-1]  # split by hand: urlsplit refuses some malformed URLs that must be shown
    authority, query = re.split(r"[/?#]", rest, maxsplit=1)[0], rest.partition("?")[2].partition("#")[0]
    found = []
    if "@" in authority:
        user, _, password = authority.rpartition("@")[0].partition(":")
        found.append(password or user)  # https://user:KEY@host, or https://KEY@host
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if _SECRET_PARAM.search(urllib.parse.unquote_plus(name)):
            found.append(value)
    found += [decode(value) for value in found for decode in (urllib.parse.unquote, urllib.parse.unquote_plus)]
    return {value for value in found if value}


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``.

    Values shorter than :data:`MIN_SECRET` are left alone: they guard nothing (a query's ``?sig=1``) and
    replacing them would garble every number and word that holds them.
    """
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def terminal_text(text: str) -> str:
    """``text`` safe to print to a terminal: escape sequences and control characters removed (newlines and
    tabs kept), so that a reply can neither retitle, clear or recolour the terminal nor fake earlier output."""
    return _CONTROL.sub("", _ESCAPE.sub("", text))
