"""What a worker or client proves itself with: a secret and a CA to trust.

Read from files named on the command line or in the environment
(`SOCKPOOL_SECRET_FILE`, `SOCKPOOL_TLS_CA`). The secret is only ever used
as an HMAC key (protocol/auth.py); it never goes on the wire.
"""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass
from typing import Any, Callable

import click

from sockpool.protocol.defaults import MIN_SECRET_BYTES, SECRET_ENV, TLS_CA_ENV

from .tls import client_context


def read_secret_file(path: str) -> bytes:
    """The secret in `path`, without surrounding whitespace.

    Raises:
        ValueError: the file cannot be read, other users may read or write
            it, or the secret is too short to resist guessing.
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            secret = f.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the secret file {path!r}: {exc.strerror or exc}") from exc
    if mode & 0o077:
        # As ssh does with a private key: a secret others can read is no
        # secret, and a group-writable one can be swapped.
        raise ValueError(
            f"the secret file {path!r} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"make it private with: chmod 600 {path}"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the secret in {path!r} is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are needed. "
            "Make one with: python -c 'import secrets; print(secrets.token_hex(32))' > FILE"
        )
    return secret


@dataclass(frozen=True)
class Credentials:
    """A peer's secret (None: none) and TLS context (None: plaintext)."""

    secret: bytes | None = None
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_files(cls, secret_file: str | None = None, tls_ca: str | None = None) -> Credentials:
        """Load the named files.

        Raises:
            ValueError: a file cannot be read or is not what it should be.
        """
        return cls(
            secret=read_secret_file(secret_file) if secret_file else None,
            tls=client_context(tls_ca) if tls_ca else None,
        )


def peer_options(
    secret_help: str = "File holding the secret the broker requires.",
    secret_envvar: str | list[str] = SECRET_ENV,
) -> Callable[[Any], Any]:
    """`--secret-file` and `--tls-ca`, for every command that connects to a broker."""

    def apply(command: Any) -> Any:
        command = click.option(
            "--tls-ca", envvar=TLS_CA_ENV, metavar="PATH",
            help="Connect with TLS, trusting the broker's certificate if this CA signed it.",
        )(command)
        return click.option("--secret-file", envvar=secret_envvar, metavar="PATH", help=secret_help)(command)

    return apply
