"""The run's Ray cluster: one object starts or joins it, runs the sleeves' tasks on it and stops it.

Everything here is Ray's public API (``ray.init``, ``ray.remote``, ``ray.wait``,
``ray.cancel``, ``runtime_env``); no other module of the package imports Ray.
"""

import os as _os

# Ray reads these once, when it is first imported: the auth mode of the process, and
# whether 127.0.0.1 stays 127.0.0.1 (all listeners on loopback) rather than being rewritten
# to the machine's external address. Set before anything here imports Ray; a user's own
# values win, and joining a cluster on real addresses sets the second one while it joins.
_os.environ.setdefault("RAY_AUTH_MODE", "token")
_os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from ._cluster import Cluster  # noqa: E402
from ._tasks import interrupt, interrupted, local_call, watch_interrupts  # noqa: E402

__all__ = ["Cluster", "interrupt", "interrupted", "local_call", "watch_interrupts"]
