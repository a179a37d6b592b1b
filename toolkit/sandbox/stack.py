"""Embedded services for the sandbox: a fakeredis TCP server and a moto server, on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
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


class RedisServer:
    """A ``redis-server`` binary on a free loopback port, nothing saved to disk."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        self._proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.__exit__()
        raise ConfigError(f"{self.binary} did not start on 127.0.0.1:{self.port}")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)


def local_broker(url: str | None) -> tuple[Any, str, str]:
    """(context manager, URL, label): ``url`` if given, else a ``redis-server`` binary if one is
    installed, else fakeredis's TCP server. The context manager starts and stops it."""
    import contextlib
    import shutil

    if url:
        return contextlib.nullcontext(), url, "--broker"
    binary = shutil.which("redis-server")
    if binary:
        server: Any = RedisServer(binary)
        return server, server.url, f"redis-server ({binary})"
    embedded = EmbeddedRedis()
    return embedded, embedded.url, "embedded fakeredis (no redis-server installed)"


class LocalAws:
    """A moto server on 127.0.0.1; inside the block, boto3 clients talk to it.

    Sets ``AWS_ENDPOINT_URL`` (and dummy credentials and region when none are set) for the
    duration of the block, and restores the environment afterwards.
    """

    # everything that could send a boto3 client elsewhere: service-specific endpoints, profiles
    # and config files that name endpoints or credentials, instance and container credentials
    _FORCED = {
        "AWS_ACCESS_KEY_ID": "sandbox",
        "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    _CLEARED = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")

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
        names = {*self._FORCED, *self._CLEARED, "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
                 *(k for k in os.environ if k.startswith("AWS_ENDPOINT_URL_"))}
        self._saved = {k: os.environ.get(k) for k in names}
        for key in names:
            os.environ.pop(key, None)
        os.environ.update(self._FORCED)
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint
        os.environ["AWS_DEFAULT_REGION"] = self.region
        return self

    def client(self, service: str) -> Any:
        """A boto3 client bound to this server explicitly, whatever the environment says."""
        import boto3

        make: Any = boto3.client  # the stubs' overloads want a literal service name
        return make(service, endpoint_url=self.endpoint, region_name=self.region,
                    aws_access_key_id="sandbox", aws_secret_access_key="sandbox")

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
