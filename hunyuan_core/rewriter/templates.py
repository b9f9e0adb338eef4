"""The words sent to the language model: DialogGen's official template and ours for other chat LLMs.

History is a list of ``(request, reply)`` pairs, oldest first: the user's request as it was sent and the
model's raw reply, exactly what the official multi-turn app keeps in its LLaVA conversation object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

History = Sequence[tuple[str, str]]
Encoded = TypeVar("Encoded")


def fit_history(history: History, encode: Callable[[History], Encoded], length: Callable[[Encoded], int],
                budget: int) -> Encoded:
    """The conversation encoded with as many of the newest turns as fit ``budget`` tokens: the oldest turns are
    dropped first, and with none left the request alone is returned (the caller says when even that is too long)."""
    history = list(history)
    encoded = encode(history)
    while length(encoded) > budget and history:
        history = history[1:]
        encoded = encode(history)
    return encoded

# --- DialogGen (Tencent HunyuanDiT, mllm/dialoggen_demo.py and app/multiTurnT2I_app.py) ----------------
# "First judge the user's intent; if it is drawing, put <画图> before the output:" + the request.
DIALOGGEN_QUERY = "请先判断用户的意图，若为画图则在输出前加入<画图>:{}"
# LLaVA's "llava_v1" conversation: this system line, roles USER/ASSISTANT, " " after a user message,
# "</s>" after an assistant message.
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
LLAVA_V1_ROLES = ("USER", "ASSISTANT")
LLAVA_V1_SEPS = (" ", "</s>")
IMAGE_TOKEN = "<image>"

# --- Our instructions for any other chat LLM -------------------------------------------------------------
SYSTEM_PROMPT = """\
You write prompts for Hunyuan-DiT, a text-to-image model that reads Chinese and English.
你为混元DiT（能读懂中文和英文的文生图模型）撰写画面描述。

Turn the user's request into ONE description of the picture to draw:
1. Write in the language of the user's request (中文请求用中文写), unless the user asks for another language.
2. Be concrete: the main subject and its details, the scene and background, composition and viewpoint,
   the art style or medium, lighting, colours and mood. Keep everything the user asked for; add details
   only where the request leaves them open.
3. When the user asks to change the previous picture (for example “变成玻璃的” or “make it night”),
   write the whole previous description again with that change applied and everything else kept.
4. One paragraph of at most 120 Chinese characters or 80 English words. No title, no list, no quotation
   marks, no explanation: answer with the description only.
5. If the request cannot or must not be drawn, answer with one short sentence that starts with
   “对不起” (Chinese) or “Sorry” (English).

Example / 示例:
User: 画一个木制的鸟
Assistant: 一只木雕小鸟站在长满青苔的树枝上，木纹清晰，羽毛由细腻的刻痕表现，背景是柔和虚化的森林，清晨的侧光，暖棕色调，写实摄影风格
User: a cat astronaut
Assistant: A fluffy orange cat in a white astronaut suit floating inside a space station, Earth glowing through the round window behind it, soft blue rim light, detailed digital illustration, cinematic composition"""


def dialoggen_query(request: str) -> str:
    """A user message as DialogGen was trained to read it (every turn goes through the template)."""
    return DIALOGGEN_QUERY.format(request)


def render_llava_v1(history: History, request: str, image: bool = True) -> str:
    """The full DialogGen prompt text for ``request`` after ``history``, ending with ``"ASSISTANT:"``.

    ``image``: the first user message starts with ``<image>\\n``, where the official code inserts the
    features of its placeholder image (see dialoggen.py). Assistant messages are the raw replies.
    """
    messages: list[tuple[str, str]] = []
    for past_request, reply in history:
        messages += [(LLAVA_V1_ROLES[0], dialoggen_query(past_request)), (LLAVA_V1_ROLES[1], reply)]
    messages.append((LLAVA_V1_ROLES[0], dialoggen_query(request)))
    if image:
        role, first = messages[0]
        messages[0] = (role, f"{IMAGE_TOKEN}\n{first}")
    text = LLAVA_V1_SYSTEM + LLAVA_V1_SEPS[0]
    for i, (role, message) in enumerate(messages):
        # LLaVA writes an empty message as a bare "ROLE:" with no separator.
        text += f"{role}: {message}{LLAVA_V1_SEPS[i % 2]}" if message else f"{role}:"
    return text + f"{LLAVA_V1_ROLES[1]}:"


def chat_messages(history: History, request: str, system: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """OpenAI-style ``[{"role", "content"}]`` messages: our system prompt, the history, the new request."""
    messages = [{"role": "system", "content": system}]
    for past_request, reply in history:
        messages += [{"role": "user", "content": past_request}, {"role": "assistant", "content": reply}]
    messages.append({"role": "user", "content": request})
    return messages
