"""What a Ray cluster needs of this process: its address checked, its private temp dir and token, its environment."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from ..errors import ConfigError

LOOPBACK = "127.0.0.1"
_HOST_PORT = re.compile(r"^(ray://)?[A-Za-z0-9.\-_\[\]:]+:\d{1,5}$")
_TEMP_PREFIX = "tvr-"
#: The package directory: what ``runtime_env`` ships to the workers of an external cluster.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Parent of private clusters' temp dirs: short, as Ray's unix sockets live 75 characters below.
_TEMP_ROOT = Path("/tmp")

# Ray loads the auth token once per process and keeps it: every private cluster this
# process starts shares one secret, each written to that run's own 0600 file.
_process_token: str | None = None


def validate_address(address: str) -> str:
    """``address`` if it names a Ray cluster explicitly (``host:port`` or ``ray://host:port``), else ConfigError."""
    value = str(address).strip()
    if value.lower() in {"", "auto", "local"} or not _HOST_PORT.match(value):
        raise ConfigError(f"ray_address={address!r} is not an explicit Ray address: give 'host:port' (the "
                          "GCS port, 6379 by default) or 'ray://host:port' ('auto' and 'local' are not "
                          "allowed), or leave it unset for a private loopback cluster")  # fmt: skip
    return value


def private_temp_dir() -> Path:
    """A new temp dir of a private cluster (token, Ray's files), after sweeping those of killed drivers."""
    for path in _TEMP_ROOT.glob(f"{_TEMP_PREFIX}*-*"):
        pid = path.name[len(_TEMP_PREFIX) :].split("-", 1)[0]
        with contextlib.suppress(OSError):
            if pid.isdigit() and path.stat().st_uid == os.getuid() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(path, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", dir=_TEMP_ROOT))


def write_token(temp_dir: Path) -> Path:
    """Write the process's auth token to ``temp_dir/token`` (0600, created new); return its path."""
    global _process_token
    _process_token = _process_token or secrets.token_hex(32)
    token_path = temp_dir / "token"
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_process_token)
    return token_path


def no_sigterm_note(record: logging.LogRecord) -> bool:
    """Drop Ray's note that it set no SIGTERM handler (a head started off the main thread)."""
    return not str(record.msg).startswith("SIGTERM handler is not set")


def put_env(values: dict[str, str | None]) -> None:
    """Set each of ``values`` in this process's environment (None: unset it)."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
