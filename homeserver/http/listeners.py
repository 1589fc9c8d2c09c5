"""HTTP listeners: one aiohttp application per configured listener.

Sockets are bound here (not by aiohttp) so that port 0 works: the bound port
is read back and reported, and tests start servers without port races.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from federation.clock import Clock
from homeserver.config import ListenerConfig
from homeserver.http.errors import error_middleware
from homeserver.http.middleware import (
    body_limit_middleware,
    cors_middleware,
    observe_middleware,
)
from homeserver.http.security_headers import security_headers_middleware
from homeserver.metrics import CONTENT_TYPE_LATEST, Metrics

__all__ = ["BoundAddress", "ListenerError", "RunningListener", "build_app", "start_listener"]


class ListenerError(Exception):
    """A listener could not start (port in use, bad TLS files); message safe to show."""


@dataclass(frozen=True)
class BoundAddress:
    type: str
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


@dataclass
class RunningListener:
    config: ListenerConfig
    runner: web.AppRunner
    addresses: list[BoundAddress]


def build_app(
    listener_type: str,
    *,
    register: Sequence[Callable[[web.Application], None]],
    metrics: Metrics,
    clock: Clock,
    max_request_size: int,
) -> web.Application:
    middlewares = [observe_middleware(listener=listener_type, metrics=metrics, clock=clock)]
    if listener_type == "client":
        middlewares += [security_headers_middleware(), cors_middleware()]
    middlewares += [error_middleware(), body_limit_middleware(max_request_size)]
    app = web.Application(middlewares=middlewares, client_max_size=max_request_size)
    if listener_type == "metrics":

        async def exposition(request: web.Request) -> web.Response:
            # CONTENT_TYPE_LATEST carries a charset, which aiohttp wants separately.
            return web.Response(
                body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        app.router.add_get("/metrics", exposition)
    for fn in register:
        fn(app)
    return app


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _tls_context(cfg: ListenerConfig) -> ssl.SSLContext:
    assert cfg.tls_certificate_path and cfg.tls_private_key_path
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.tls_certificate_path, cfg.tls_private_key_path)
    return ctx


async def start_listener(
    cfg: ListenerConfig, app: web.Application, *, shutdown_timeout: float
) -> RunningListener:
    """Bind every address of ``cfg`` and start serving ``app``; raises ListenerError."""
    ssl_context = None
    if cfg.tls:
        try:
            ssl_context = _tls_context(cfg)
        except (OSError, ssl.SSLError) as e:
            raise ListenerError(
                f"{cfg.type} listener: cannot load TLS certificate "
                f"{cfg.tls_certificate_path} / key {cfg.tls_private_key_path}: {e}"
            ) from None
    # access_log=None: the observe middleware writes the one line per request.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    addresses: list[BoundAddress] = []
    try:
        for host in cfg.bind_addresses:
            try:
                sock = _bind(host, cfg.port)
            except OSError as e:
                raise ListenerError(
                    f"{cfg.type} listener: cannot listen on {host}:{cfg.port}: {e.strerror or e}"
                ) from None
            site = web.SockSite(runner, sock, ssl_context=ssl_context)
            await site.start()
            addresses.append(BoundAddress(cfg.type, host, sock.getsockname()[1], cfg.tls))
    except BaseException:
        await runner.cleanup()
        raise
    return RunningListener(cfg, runner, addresses)
