"""The HTTP transport under the client: httpx's API over aiohttp's connection pool."""

from __future__ import annotations

import functools
import ssl

import aiohttp
import httpx


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the system's certificates costs about 50 ms of CPU; every client a process makes
    # (a run, pre-flight, a re-grading, each in-process test) verifies the same way.
    return httpx.create_ssl_context()


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    # httpx's own pool spends CPU per request that grows with concurrency (encode/httpx#3215);
    # the aiohttp transport keeps httpx's API at about five times the throughput here.
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(
        verify=_tls_context(),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )


async def send_unread(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """The response, its body not read yet: straight to the client's transport.

    AsyncClient.send wraps the transport in auth, redirect and cookie handling that
    batchrun never uses: the key is in the prepared headers, redirects are never followed
    (a 3xx is returned as it is, as with follow_redirects=False), and cookies a server sets
    must not ride along on later requests anyway. Those layers were about a tenth of the
    client's CPU per request at latency 0 (bench/throughput.py). `_transport_for_url` is
    httpx's own choice of transport (httpx is pinned to 0.28), and the seam respx mocks,
    so the client's unit tests still see every request.
    """
    transport = http._transport_for_url(request.url)
    response = await transport.handle_async_request(request)
    response.request = request
    return response


def not_a_timeout(exc: BaseException) -> bool:
    """A "timeout" whose cause is a refused or failed connection, not time running out.

    httpx-aiohttp maps every aiohttp ClientConnectorError to httpx.ConnectTimeout, so a
    refused connection arrives here as a timeout; its cause says what really happened.
    """
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def dropped_after_connecting(exc: BaseException) -> bool:
    """httpx-aiohttp's ConnectTimeout for aiohttp's ClientConnectionError once the connection
    was made (ServerDisconnectedError, a reset while writing or reading): not a failure to
    connect (ClientConnectorError), nor time running out (ServerTimeoutError)."""
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
        cause, aiohttp.ClientConnectorError | aiohttp.ServerTimeoutError
    )
