"""Contact sheets: the hits of a query drawn in a grid, each with its rank, score and name."""
from __future__ import annotations

import math
import os
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from clip_jax.search.files import UnreadableImage
from clip_jax.search.thumbs import thumbnail

CELL = 220
CAPTION = 34
MARGIN = 8


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older PIL without sized default fonts
        return ImageFont.load_default()


def _fit(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


def contact_sheet(hits: Sequence, out: str, title: str = "", columns: int | None = None, cell: int = CELL) -> str:
    """Draw `hits` (clip_jax.search.Hit) into the image file `out` (format from its extension)."""
    if not hits:
        raise ValueError("no hits to draw")
    columns = columns or min(len(hits), max(1, math.ceil(math.sqrt(len(hits) * 1.5))))
    rows = -(-len(hits) // columns)
    header = 30 if title else 0
    width = columns * (cell + MARGIN) + MARGIN
    height = header + rows * (cell + CAPTION + MARGIN) + MARGIN
    sheet = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    font, title_font = _font(12), _font(16)
    if title:
        draw.text((MARGIN, 7), _fit(title, draw, title_font, width - 2 * MARGIN), fill=(20, 20, 20), font=title_font)
    for rank, hit in enumerate(hits):
        x = MARGIN + (rank % columns) * (cell + MARGIN)
        y = header + MARGIN + (rank // columns) * (cell + CAPTION + MARGIN)
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(225, 225, 225))
        try:
            image = thumbnail(hit.file, cell)
            sheet.paste(image, (x + (cell - image.width) // 2, y + (cell - image.height) // 2))
        except (UnreadableImage, FileNotFoundError):
            draw.text((x + 10, y + cell // 2), "(missing)", fill=(120, 0, 0), font=font)
        draw.text((x, y + cell + 3), f"{rank + 1}. {hit.score:.3f}", fill=(20, 20, 20), font=font)
        draw.text((x, y + cell + 18), _fit(os.path.basename(hit.path), draw, font, cell), fill=(70, 70, 70), font=font)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    sheet.save(out)
    return out
