"""A ceiling on the prompt tokens one inline image can be billed (break-14c N8).

Vision tokenizers count an image by its pixel size, not its bytes: a 1092x1092 PNG of one
colour is 226 bytes, and about 1,600 tokens on Anthropic's models. So the body's bytes
(the prompt bound of _costs) do not bound an image part. OpenRouter's docs are silent on a
per-image count (multimodal/overview.mdx: images are "typically priced per image or as
input tokens"; multimodal/image-understanding.mdx gives no figure), so the ceiling is the
largest of the providers' own published formulas, at the image's dimensions read from its
header (PNG, JPEG, WebP; a GIF's logical screen and every frame in it), or the largest value
any of them reaches when the dimensions cannot be read:

- OpenAI, tiled models (platform.openai.com/docs/guides/images-vision, "Calculating costs"):
  the image is scaled to fit 2048x2048, then its shortest side to 768 px, and billed per
  512 px tile; gpt-4o-mini's figures are the largest listed (2,833 + 5,667 a tile), at most
  8 tiles: 48,169 tokens. Patch models (32 px patches, at most 1,536, times up to 2.46 for
  the nano models): at most 3,779.
- Anthropic (docs.anthropic.com, "Vision"): about width x height / 750, the long edge
  scaled to 1,568 px at most.
- Google Gemini (ai.google.dev, "Understand and count tokens"): 258 tokens when both sides
  are at most 384 px, else 258 per 768 px tile; images are scaled to fit 3072x3072.

The headroom this costs: OpenAI's gpt-4o-mini formula dominates (8,500 tokens for any
image up to 512 px, 25,501 for 1092x1092), about 15 times what Anthropic counts. A formula
a provider adopts later and that counts more is not covered: the key window and the
reconciliation see such a charge (a charge above its worst case is flagged).
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import struct
from typing import Any
from urllib.parse import unquote_to_bytes

OPENAI_BASE, OPENAI_TILE = 2833, 5667  # gpt-4o-mini, the largest tile figures OpenAI lists
OPENAI_PATCH_CAP, OPENAI_PATCH_FACTOR = 1536, 2.46
ANTHROPIC_LONG_EDGE, ANTHROPIC_PIXELS_PER_TOKEN = 1568, 750
GEMINI_SMALL, GEMINI_TILE_PX, GEMINI_TILE_TOKENS, GEMINI_MAX_SIDE = 384, 768, 258, 3072
# Bytes read to find a JPEG's or a GIF's size: a JPEG's SOF marker follows the metadata
# segments (EXIF, ICC profiles, thumbnails), which can be large, and a GIF's frames each
# have a size of their own; past this the fallback applies (such an image is over a million
# prompt tokens of bytes already: the fallback adds under 5% to it).
SCAN_BYTES = 1 << 20


def _fit(width: int, height: int, side: int) -> tuple[float, float]:
    """Scaled down (never up) to fit a side x side square."""
    scale = min(1.0, side / max(width, height))
    return width * scale, height * scale


def _openai_tiles(width: int, height: int) -> int:
    w, h = _fit(width, height, 2048)
    shortest = min(w, h)
    if shortest > 768:
        w, h = w * 768 / shortest, h * 768 / shortest
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return OPENAI_BASE + OPENAI_TILE * tiles


def _openai_patches(width: int, height: int) -> int:
    patches = min(OPENAI_PATCH_CAP, math.ceil(width / 32) * math.ceil(height / 32))
    return math.ceil(patches * OPENAI_PATCH_FACTOR)


def _anthropic(width: int, height: int) -> int:
    w, h = _fit(width, height, ANTHROPIC_LONG_EDGE)
    return math.ceil(w * h / ANTHROPIC_PIXELS_PER_TOKEN)


def _gemini(width: int, height: int) -> int:
    if width <= GEMINI_SMALL and height <= GEMINI_SMALL:
        return GEMINI_TILE_TOKENS
    w, h = _fit(width, height, GEMINI_MAX_SIDE)
    return math.ceil(w / GEMINI_TILE_PX) * math.ceil(h / GEMINI_TILE_PX) * GEMINI_TILE_TOKENS


def tokens_for_size(width: int, height: int) -> int:
    """The largest of the published formulas for an image of this size."""
    width, height = max(1, width), max(1, height)
    return max(f(width, height) for f in (_openai_tiles, _openai_patches, _anthropic, _gemini))


# Any size: each formula is capped by its resize, so this is their largest value (48,169:
# OpenAI's 8 tiles of a 2048x768 image; the others stay under 4,200).
UNREADABLE_IMAGE_TOKENS = max(
    tokens_for_size(2048, 768),  # OpenAI tiles: at most 4 x 2 after the two scalings
    tokens_for_size(3072, 3072),  # Gemini: 16 tiles; OpenAI patches: capped
    tokens_for_size(ANTHROPIC_LONG_EDGE, ANTHROPIC_LONG_EDGE),
)


def _png(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return None


def _after_sub_blocks(data: bytes, at: int) -> int | None:
    """Where a GIF's chain of data sub-blocks (a size byte, that many bytes; 0 ends it) ends."""
    while at < len(data):
        size = data[at]
        at += 1 + size
        if size == 0:
            return at
    return None


def _gif(data: bytes) -> tuple[int, int] | None:
    """The canvas a decoder shows: the logical screen grown to every frame's right and bottom
    edge (Pillow opens a GIF whose screen says 1x1 and whose frame is 4000x3000 as 4000x3000:
    break14e E7). None unless the whole GIF could be walked to its trailer."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        return None
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    at: int | None = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # the global colour table
    while at is not None and at < len(data):
        block = data[at]
        if block == 0x3B:  # trailer
            return int(width), int(height)
        if block == 0x21:  # extension: its label, then sub-blocks
            at = _after_sub_blocks(data, at + 2)
        elif block == 0x2C and at + 10 <= len(data):  # image descriptor
            left, top, w, h, flags = struct.unpack_from("<HHHHB", data, at + 1)
            width, height = max(width, left + w), max(height, top + h)
            at += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # and its local colour table
            at = _after_sub_blocks(data, at + 1)  # the image data, after its LZW code size
        else:
            return None
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:  # lossy: the frame header after a 3-byte tag and the start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:  # lossless: 14 bits each, minus one
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:  # extended: 24 bits each, minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return int(width), int(height)
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        at += 2 + length
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF or WebP header; None for anything else."""
    for reader in (_png, _gif, _webp, _jpeg):
        size = reader(data)
        if size is not None:
            return size
    return None


def _data_url_prefix(url: str, size: int) -> bytes | None:
    """The first `size` bytes (about) of a `data:` URL's content; None when it is not one."""
    head, comma, payload = url.partition(",")
    if not comma or head[:5].lower() != "data:":
        return None
    if head.lower().endswith(";base64"):
        chunk = "".join(payload[: size * 4 // 3 + 8].split())
        chunk = chunk[: len(chunk) // 4 * 4]
        try:
            return base64.b64decode(chunk)
        except (binascii.Error, ValueError):
            return None
    return unquote_to_bytes(payload[: size * 3])[:size]


@functools.lru_cache(maxsize=256)  # a row's images recur across models and repeats (str hashes are cached)
def inline_image_tokens(url: str) -> int:
    """The ceiling for one `data:` image: its dimensions' largest formula, or the largest
    value any formula reaches when the header cannot be read."""
    data = _data_url_prefix(url, 64)
    if data is not None and (data[:2] == b"\xff\xd8" or data[:3] == b"GIF"):
        data = _data_url_prefix(url, SCAN_BYTES)
    size = image_size(data) if data else None
    return UNREADABLE_IMAGE_TOKENS if size is None else tokens_for_size(*size)


def image_part_tokens(body: dict[str, Any]) -> int:
    """The image ceilings of every inline image part of a chat body (URL images have no
    bound at all: _unbounded makes their worst case unknown)."""
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                total += inline_image_tokens(url)
    return total
