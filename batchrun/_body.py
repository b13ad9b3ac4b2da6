"""Reading a response body under a size cap, counted after decompression, while reading.

httpx's own decoders have no bound on what one compressed chunk may expand to (a 16 KiB
chunk of a gzip bomb is 16 MiB), and `aread()` holds the whole body: a 3 MB gzip reply
that unpacked to 3 GB took a run to 18.9 GB of memory (issue 11). Here the raw bytes
are decompressed with zlib's `max_length`, so no step yields more than the room left,
and the read stops at the first byte past the cap. `iter_capped` is the reusable part
(a streaming reader can count its events through it); `read_capped` joins a whole body.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import httpx

from ._exceptions import ResponseTooLarge, Undecodable

# What the client accepts: what it can decode under a cap (no br/zstd decoders here).
ACCEPT_ENCODING = "gzip, deflate"
_STEP = 1 << 16  # most decompressed bytes produced per zlib call


class _Inflater:
    """gzip or deflate (zlib-wrapped, or raw as some servers send it), fed piece by piece."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding == "gzip"
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS)
        self._started = False

    def feed(self, data: bytes, room: int) -> tuple[bytes, bytes]:
        """Decompress at most `room` bytes of output; returns (output, input not yet used)."""
        try:
            out = self._zlib.decompress(data, room)
        except zlib.error:
            if self._gzip or self._started:
                raise
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate: no zlib header
            out = self._zlib.decompress(data, room)
        self._started = True
        return out, self._zlib.unconsumed_tail


def _encoding(response: httpx.Response) -> str:
    header: str = response.headers.get("content-encoding", "")
    values = [v.strip().lower() for v in header.split(",") if v.strip()]
    values = [v for v in values if v != "identity"]
    if not values:
        return "identity"
    if len(values) > 1 or values[0] not in ("gzip", "deflate"):
        raise Undecodable(
            # Whole: the client scrubs it of the key before it is cut (_generation.abandoned).
            "bad_response",
            f"unsupported content-encoding {', '.join(values)!r}",
            response.status_code,
        )
    return values[0]


async def _raw(response: httpx.Response, loaded: bytes | None) -> AsyncIterator[bytes]:
    if loaded is not None:
        yield loaded
    else:
        async for raw in response.aiter_raw():
            yield raw


def _opening(response: httpx.Response, cap: int) -> tuple[bytes | None, str]:
    """(the body if it is in memory already, its encoding); a declared length past the cap raises."""
    try:
        # A response built in memory (a test's mock) is read and decoded already.
        loaded: bytes | None = response.content
    except httpx.ResponseNotRead:
        loaded = None
    encoding = "identity" if loaded is not None else _encoding(response)
    declared = response.headers.get("content-length", "")
    if encoding == "identity" and declared.isdigit() and int(declared) > cap:
        raise ResponseTooLarge(cap, response.status_code, declared=int(declared))
    return loaded, encoding


async def iter_capped(response: httpx.Response, cap: int) -> AsyncIterator[bytes]:
    """The decoded body in pieces, raising ResponseTooLarge at the first byte past `cap`.

    The caller closes the response (which drops a connection whose body was not read to
    its end, so the rest of an oversized body is never received)."""
    loaded, encoding = _opening(response, cap)
    inflater = None if encoding == "identity" else _Inflater(encoding)
    total = 0
    try:
        async for raw in _raw(response, loaded):
            pending = raw
            while pending:
                if inflater is None:
                    piece, pending = pending, b""
                else:
                    # One byte of room past the cap is enough to know it was passed.
                    piece, pending = inflater.feed(pending, min(_STEP, cap - total + 1))
                    if not piece and pending:
                        raise Undecodable("bad_response", "the compressed body does not decode", response.status_code)
                total += len(piece)
                if total > cap:
                    raise ResponseTooLarge(cap, response.status_code)
                if piece:
                    yield piece
    except zlib.error:
        raise Undecodable("bad_response", "the compressed body does not decode", response.status_code) from None


async def read_capped(response: httpx.Response, cap: int) -> bytes:
    loaded, encoding = _opening(response, cap)
    if encoding != "identity" or loaded is not None:
        return b"".join([piece async for piece in iter_capped(response, cap)])
    # The common case (a plain body off the wire) without iter_capped's two generator layers,
    # which cost about 2% of a loopback run's CPU per request (bench/README.md, issue 15).
    pieces: list[bytes] = []
    total = 0
    async for raw in response.aiter_raw():
        total += len(raw)
        if total > cap:
            raise ResponseTooLarge(cap, response.status_code)
        pieces.append(raw)
    return b"".join(pieces)
