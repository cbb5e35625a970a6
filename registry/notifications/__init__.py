"""registry:2's notifications: events POSTed to endpoints, queued on disk on the way.

``events`` shapes them as registry:2 does, ``emit`` is what the handlers call,
``journal`` is the queue every worker appends to, ``sender`` delivers to one
endpoint, ``notifier`` ties one process's part together.
"""

from .emit import NotifyingApp
from .notifier import Notifier

__all__ = ["Notifier", "NotifyingApp"]
