"""Small commands: keygen, selftest, and the pool tools (status, q, rm)."""

from __future__ import annotations

import sys

from .. import __version__
from ..config import find_config_dir, load
from ..config import keygen as write_secret
from . import unavailable


def keygen(args: dict) -> int:
    target = write_secret(find_config_dir(args["--config"]), force=args["--force"])
    print(f"wrote {target} (mode 0600); copy it to every machine of the cluster")
    return 0


def selftest(args: dict) -> int:
    """Prove the bundled crypto loads and works under this interpreter."""
    from ..wire.selftest import run

    details = run()
    print(f"jrs {__version__} ok on Python {sys.version.split()[0]}: {details}")
    return 0


def status(args: dict) -> int:
    load(find_config_dir(args["--config"]))
    raise unavailable("`jrs status`")


def queue(args: dict) -> int:
    load(find_config_dir(args["--config"]))
    raise unavailable("`jrs q`")


def remove(args: dict) -> int:
    load(find_config_dir(args["--config"]))
    raise unavailable("`jrs rm`")
