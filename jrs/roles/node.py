"""The node role. Not implemented yet: it checks the configuration, then refuses
to start rather than pretend to serve."""

from __future__ import annotations

from ..config import find_config_dir, load
from . import unavailable


def main(args: dict) -> int:
    load(find_config_dir(args["--config"]))
    raise unavailable("the node role")
