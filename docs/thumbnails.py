"""Draw ``workflows/<name>.jpg``, the thumbnail ComfyUI's template browser shows beside each workflow: the graph
itself (nodes where the canvas puts them, named as on the canvas, wires coloured by type), scaled to fit.

    python docs/thumbnails.py            # the workflows that have no thumbnail yet
    python docs/thumbnails.py --all      # all of them again
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hunyuan_core.outputs import atomic_path  # noqa: E402

SIZE = (512, 384)
MARGIN = 16
TITLE_H = 30  # the canvas draws a node's title bar above its position
SLOT_H = 20
BACKGROUND, BODY, TITLE_BAR, TEXT = (32, 32, 32), (53, 53, 53), (34, 34, 34), (220, 220, 220)
WIRE_COLOURS = {
    "HYDIT_MODEL": (180, 160, 255), "HYDIT_TEXT_ENCODER": (255, 210, 80), "HYDIT_VAE": (255, 100, 100),
    "HYDIT_CONDITIONING": (255, 160, 60), "LATENT": (255, 150, 200), "IMAGE": (100, 180, 255),
    "MASK": (120, 220, 120), "STRING": (140, 220, 140),
}
OTHER_WIRE = (170, 170, 170)


def node_name(node: dict) -> str:
    """The name the canvas shows: the node's own title, else its type without our prefix, words apart."""
    if node.get("title"):
        return node["title"]
    kind = re.sub(r"^HunyuanDiT", "", node["type"]) or node["type"]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", kind)


def render(workflow: dict, size: tuple[int, int] = SIZE) -> Image.Image:
    """The graph of a UI-format workflow (``nodes``, ``links``) as a picture of ``size``."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    boxes = {i: (n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for i, n in nodes.items()}
    left, top = min(b[0] for b in boxes.values()), min(b[1] for b in boxes.values())
    right, bottom = max(b[2] for b in boxes.values()), max(b[3] for b in boxes.values())
    scale = min((size[0] - 2 * MARGIN) / (right - left), (size[1] - 2 * MARGIN) / (bottom - top))
    dx = (size[0] - (right - left) * scale) / 2 - left * scale
    dy = (size[1] - (bottom - top) * scale) / 2 - top * scale

    def at(x: float, y: float) -> tuple[float, float]:
        return x * scale + dx, y * scale + dy

    image = Image.new("RGB", size, BACKGROUND)  # wires over the nodes: at this size they would hide the flow
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(11, round(15 * scale)))
    for i, node in nodes.items():
        x0, y0 = at(*boxes[i][:2])
        x1, y1 = at(*boxes[i][2:])
        bar = y0 + TITLE_H * scale
        radius = max(2, round(8 * scale))
        draw.rounded_rectangle((x0, y0, x1, y1), radius=radius, fill=BODY)
        draw.rounded_rectangle((x0, y0, x1, bar), radius=radius, fill=TITLE_BAR)
        draw.text((x0 + 8 * scale, (y0 + bar) / 2), _fit(draw, node_name(node), font, x1 - x0 - 12 * scale),
                  fill=TEXT, font=font, anchor="lm")
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        (x0, y0), (x1, y1) = at(*_slot(nodes[src], src_slot, output=True)), at(*_slot(nodes[dst], dst_slot))
        bend = max(20.0, abs(x1 - x0) / 2)
        points = [_bezier((x0, y0), (x0 + bend, y0), (x1 - bend, y1), (x1, y1), t / 24) for t in range(25)]
        draw.line(points, fill=WIRE_COLOURS.get(kind, OTHER_WIRE), width=3)
    return image


def _slot(node: dict, index: int, output: bool = False) -> tuple[float, float]:
    x = node["pos"][0] + (node["size"][0] if output else 0)
    return x, node["pos"][1] + (index + 0.7) * SLOT_H


def _bezier(p0, p1, p2, p3, t: float) -> tuple[float, float]:
    u = 1 - t
    return tuple(u ** 3 * a + 3 * u * u * t * b + 3 * u * t * t * c + t ** 3 * d for a, b, c, d in zip(p0, p1, p2, p3))


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 1 else ""
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw workflows/<name>.jpg for ComfyUI's template browser.")
    parser.add_argument("--all", action="store_true", help="redraw every thumbnail, not only the missing ones")
    args = parser.parse_args(argv)
    for path in sorted((ROOT / "workflows").glob("*.json")):
        target = path.with_suffix(".jpg")
        if target.exists() and not args.all:
            continue
        picture = render(json.loads(path.read_text(encoding="utf-8")))
        with atomic_path(target) as tmp:
            picture.save(tmp, format="JPEG", quality=90)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
