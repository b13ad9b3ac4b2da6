"""Inline images are bounded by a per-image token ceiling, not by their bytes (break-14c N8).

Vision tokenizers count pixels: a 1092x1092 PNG of one colour is a few hundred bytes and
about 1,600 prompt tokens on Anthropic's models (w x h / 750). OpenRouter's docs give no
per-image figure (multimodal/overview.mdx: "typically priced per image or as input
tokens"; multimodal/image-understanding.mdx), so the worst case takes the largest of the
providers' published formulas at the image's dimensions (_image_tokens).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode
from batchrun._image_tokens import (
    SCAN_BYTES,
    UNREADABLE_IMAGE_TOKENS,
    image_part_tokens,
    image_size,
    inline_image_tokens,
    tokens_for_size,
)

from .bound_server import COMPLETION, PROMPT, Billing, run, server
from .hostile import RawRequest

pytestmark = pytest.mark.usefixtures("api_key_env")


def png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of one colour: its size in bytes grows with the width only a little."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height, 9))
        + chunk(b"IEND", b"")
    )


def data_url(image: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64,{base64.b64encode(image).decode()}"


def jpeg(width: int, height: int, metadata: int = 40_000) -> bytes:
    """A JPEG head: SOI, a large APP1 (EXIF-like) segment, then the SOF0 frame header."""
    app1 = b"\xff\xe1" + struct.pack(">H", metadata + 2) + b"\0" * metadata
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app1 + sof0 + b"\xff\xd9"


def gif(screen: tuple[int, int], frames: list[tuple[int, int, int, int]], local_table: bool = False) -> bytes:
    """A GIF89a with a 2-colour global table, a comment, and one frame per (left, top, width,
    height), each holding a minimal LZW stream (clear, one pixel, end); then the trailer."""
    out = [b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"]
    out.append(b"\x21\xfe\x05hello\x00")  # a comment extension
    for left, top, width, height in frames:  # joined once: appending bytes was quadratic (4 s)
        out.append(b"\x21\xf9\x04\x00\x00\x00\x00\x00")  # graphic control
        flags = 0x80 if local_table else 0
        out.append(b"\x2c" + struct.pack("<HHHHB", left, top, width, height, flags))
        out.append(b"\0\0\0\xff\xff\xff" if local_table else b"")
        out.append(b"\x02\x02\x44\x01\x00")  # LZW code size 2; codes 4 (clear), 0, 5 (end); terminator
    return b"".join(out) + b"\x3b"


def webp(kind: bytes, width: int, height: int) -> bytes:
    if kind == b"VP8X":
        body = b"\0" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif kind == b"VP8L":
        bits = (width - 1) | ((height - 1) << 14)
        body = b"\x2f" + bits.to_bytes(4, "little")
    else:  # lossy: frame tag (3 bytes), start code, then 14-bit sizes
        body = b"\0\0\0" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBP" + kind + struct.pack("<I", len(body)) + body


# -- the header reader ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "size"),
    [
        (png(1092, 1092), (1092, 1092)),
        (gif((640, 480), [(0, 0, 640, 480)]), (640, 480)),
        (jpeg(4000, 3000), (4000, 3000)),
        (webp(b"VP8 ", 800, 600), (800, 600)),
        (webp(b"VP8L", 1000, 16383), (1000, 16383)),
        (webp(b"VP8X", 20000, 3), (20000, 3)),
    ],
    ids=["png", "gif", "jpeg-after-exif", "webp-lossy", "webp-lossless", "webp-extended"],
)
def test_dimensions_are_read_from_the_header(image: bytes, size: tuple[int, int]) -> None:
    assert image_size(image) == size
    assert inline_image_tokens(data_url(image)) == tokens_for_size(*size)


@pytest.mark.parametrize(
    ("image", "size"),
    [
        # Pillow opens a GIF whose screen says 1x1 and whose frame is 4000x3000 as 4000x3000
        # (break14e E7: it was costed at 1x1, 8,500 tokens instead of 25,501).
        (gif((1, 1), [(0, 0, 4000, 3000)]), (4000, 3000)),
        (gif((640, 480), [(0, 0, 10, 10), (600, 470, 100, 100)], local_table=True), (700, 570)),
        (gif((4000, 3000), [(0, 0, 1, 1)]), (4000, 3000)),
        (gif((1, 1), [(65535, 65535, 65535, 65535)]), (131070, 131070)),
    ],
    ids=["frame-beyond-screen", "frames-offset", "screen-beyond-frame", "largest"],
)
def test_a_gif_is_as_large_as_its_screen_and_every_frame(image: bytes, size: tuple[int, int]) -> None:
    assert image_size(image) == size
    assert inline_image_tokens(data_url(image, "gif")) == tokens_for_size(*size)


@pytest.mark.parametrize(
    "image",
    [
        gif((1, 1), [(0, 0, 4000, 3000)])[:-1],  # no trailer
        gif((1, 1), [(0, 0, 4000, 3000)])[:-4],  # cut inside the image data
        gif((1, 1), [(0, 0, 4000, 3000)])[:-1] + b"\x99\x3b",  # a block that is no GIF block
        gif((1, 1), [(0, 0, 4000, 3000)])[:40],  # cut inside the image descriptor
        b"GIF89a" + struct.pack("<HH", 1, 1),  # a screen descriptor and nothing else
    ],
    ids=["no-trailer", "cut-data", "bad-block", "cut-descriptor", "screen-only"],
)
def test_a_gif_that_cannot_be_walked_gets_the_largest_value(image: bytes) -> None:
    assert image_size(image) is None
    assert inline_image_tokens(data_url(image, "gif")) == UNREADABLE_IMAGE_TOKENS


def test_a_gif_longer_than_what_is_read_gets_the_largest_value() -> None:
    frames = [(0, 0, 1, 1)] * (SCAN_BYTES // 20)  # 23 bytes a frame: past the bytes read
    assert inline_image_tokens(data_url(gif((2, 2), frames), "gif")) == UNREADABLE_IMAGE_TOKENS
    assert inline_image_tokens(data_url(gif((2, 2), frames[:1000]), "gif")) == tokens_for_size(2, 2)


def test_the_ceiling_is_the_largest_published_formula() -> None:
    # Anthropic: ~w*h/750 (1,590 for 1092x1092); OpenAI gpt-4o-mini: 2,833 + 5,667 per 512 px
    # tile after scaling the shortest side to 768 (4 tiles here) - the larger of the two.
    assert tokens_for_size(1092, 1092) == 2833 + 5667 * 4 > 1092 * 1092 // 750
    assert tokens_for_size(1, 1) == 2833 + 5667  # one tile: no image costs less
    # No size passes the value used when the header cannot be read (8 tiles of 2048x768).
    sizes = [(w, h) for w in (1, 300, 767, 1568, 2048, 5000, 65535) for h in (1, 512, 768, 3072, 65535)]
    assert max(tokens_for_size(w, h) for w, h in sizes) == UNREADABLE_IMAGE_TOKENS == 2833 + 5667 * 8


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,iVBORw0KGgo=",  # a PNG cut before its header
        "data:image/svg+xml,%3Csvg%20width%3D%2210%22%2F%3E",  # not a raster format read here
        "data:image/png;base64,!!!not base64!!!",
        data_url(jpeg(10, 10, metadata=60_000) * 1, "jpeg")[:200],  # SOF beyond what was sent
    ],
    ids=["cut-png", "svg", "bad-base64", "jpeg-cut"],
)
def test_an_image_whose_size_cannot_be_read_gets_the_largest_value(url: str) -> None:
    assert inline_image_tokens(url) == UNREADABLE_IMAGE_TOKENS


def test_every_inline_image_part_counts() -> None:
    image = {"type": "image_url", "image_url": {"url": data_url(png(1092, 1092)), "detail": "high"}}
    body: dict[str, Any] = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, image, image]}]}
    assert image_part_tokens(body) == 2 * tokens_for_size(1092, 1092)
    assert image_part_tokens({"messages": [{"role": "user", "content": "no images"}]}) == 0


# -- over loopback: a server that bills images by their pixels ----------------------------------
@dataclass
class PixelBilling(Billing):
    """Bills each inline image as Anthropic counts it (w x h / 750 prompt tokens), on top of
    the body's bytes; reports the whole charge as usage.cost."""

    def chat(self, request: RawRequest) -> bytes:
        body = request.json()
        pixels = 0
        for message in body["messages"]:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part["type"] == "image_url":
                    size = image_size(base64.b64decode(part["image_url"]["url"].partition(",")[2]))
                    assert size is not None
                    pixels += size[0] * size[1] // 750
        prompt = len(request.body) + pixels
        bill = prompt * PROMPT + self.completion * COMPLETION
        self.usage = {"prompt_tokens": prompt, "total_tokens": prompt + self.completion, "cost": bill}
        answer = super().chat(request)  # bills the bytes and the completion
        self.total += pixels * PROMPT
        return answer


TINY = data_url(png(1092, 1092))  # 1,590 tokens each on Anthropic's count, a few hundred bytes


def _image_job(name: str, url: str, images: int, concurrency: int, margin: str = "") -> str:
    """A job of three rows, each with `images` copies of the inline image `url` (detail high)."""
    part = f'          - {{type: image_url, image_url: {{url: "{url}", detail: high}}}}\n'
    return f"""
name: {name}
defaults:
  params: {{max_tokens: 2}}
models: [acme/cheap]
prompts:
  - id: p
    messages:
      - role: user
        content:
          - {{type: text, text: "Describe {{{{n}}}}"}}
{part * images}    vars: [{{n: 1}}, {{n: 2}}, {{n: 3}}]
run: {{concurrency: {concurrency}, timeout_s: 10, max_attempts: 1{margin}}}
"""


JOB = _image_job("pixels", TINY, 3, 1)


def test_a_small_image_of_many_pixels_cannot_pass_the_budget(tmp_path: Path) -> None:
    # Before: reserved by its bytes (~$0.11 a row at $100/M tokens), the first row was billed
    # $0.48 against a $0.30 budget ("1 attempt(s) cost more than their worst case").
    billing = PixelBilling()
    code, _, err, rows = run(server(billing), tmp_path / "tight", JOB, "--budget", "0.3")
    assert code == ExitCode.BUDGET and billing.chats == 0 and billing.total == 0, err
    assert {r["reason"] for r in rows} == {"budget"}

    billing = PixelBilling()
    code, _, err, rows = run(server(billing), tmp_path / "room", JOB, "--budget", "100")
    assert code == ExitCode.OK and billing.chats == 3, err
    summary = json.loads((tmp_path / "room" / "out.summary.json").read_text())
    assert summary["reconciliation"]["above_worst_case_attempts"] == 0  # each charge within its bound
    assert sum(r["cost"] for r in rows) == pytest.approx(billing.total) and billing.total > 1.4


# -- over loopback: a GIF whose frame is larger than its screen ---------------------------------
@dataclass
class FrameBilling(Billing):
    """Bills each image as gpt-4o-mini counts a 4000x3000 picture (25,501 tokens: the size a
    decoder shows for the GIF below), on top of the body's bytes; reports the charge."""

    def chat(self, request: RawRequest) -> bytes:
        images = sum(
            1
            for message in request.json()["messages"]
            for part in (message["content"] if isinstance(message["content"], list) else [])
            if part["type"] == "image_url"
        )
        pixels = images * tokens_for_size(4000, 3000)
        prompt = len(request.body) + pixels
        bill = prompt * PROMPT + self.completion * COMPLETION
        self.usage = {"prompt_tokens": prompt, "total_tokens": prompt + self.completion, "cost": bill}
        answer = super().chat(request)
        self.total += pixels * PROMPT
        return answer


FRAME = data_url(gif((1, 1), [(0, 0, 4000, 3000)]), "gif")
GIF_JOB = _image_job("frames", FRAME, 1, 2, ", cost_margin: 0")


def test_a_gif_frame_beyond_its_screen_cannot_pass_the_budget(tmp_path: Path) -> None:
    # Before: costed at its 1x1 screen (8,500 tokens) and billed at 25,501: all 3 rows sent on
    # a $6 budget, $7.8 billed (break14e E7: $2.55 billed for $2.45).
    billing = FrameBilling()
    code, _, err, _ = run(server(billing), tmp_path, GIF_JOB, "--budget", "6")
    assert billing.chats == 2 and billing.total <= 6, (billing.total, err)
    assert code == ExitCode.BUDGET
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["reconciliation"]["above_worst_case_attempts"] == 0
