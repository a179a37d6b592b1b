"""Embedded services for the sandbox: a fakeredis TCP server and a moto server, on loopback."""

from __future__ import annotations

import os
import socket
import threading
from types import TracebackType
from typing import Any

from toolkit.errors import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need(extra_module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(extra_module)
    except ImportError:
        raise ConfigError(
            f"the sandbox needs {extra_module.split('.')[0]}: "
            "pip install 'celery-ecs-toolkit[sandbox]'"
        ) from None


class EmbeddedRedis:
    """A Redis-compatible server (fakeredis, with Lua) on 127.0.0.1, in a background thread."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> EmbeddedRedis:
        fakeredis = _need("fakeredis")
        self._server = fakeredis.TcpFakeServer(("127.0.0.1", self.port), server_type="redis")
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class LocalAws:
    """A moto server on 127.0.0.1; inside the block, boto3 clients talk to it.

    Sets ``AWS_ENDPOINT_URL`` (and dummy credentials and region when none are set) for the
    duration of the block, and restores the environment afterwards.
    """

    _VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN")

    def __init__(self, port: int | None = None, region: str = "eu-west-1") -> None:
        self.port = port or free_port()
        self.region = region
        self._server: Any = None
        self._saved: dict[str, str | None] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalAws:
        server_mod = _need("moto.server")
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port,
                                                     verbose=False)
        self._server.start()
        self._saved = {k: os.environ.get(k) for k in self._VARS}
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint
        os.environ["AWS_ACCESS_KEY_ID"] = "sandbox"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "sandbox"
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ["AWS_DEFAULT_REGION"] = self.region
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._server is not None:
            self._server.stop()
