"""What the app adjusts when it runs in a gevent worker (gunicorn.conf.py ships them).

httpcore2's connection pool asks of every idle keep-alive connection, before and
after each request, whether its socket is readable: a `select.poll()` with a zero
timeout. gevent's patched `select.poll` makes each of those a trip through the
event loop (watchers started, a switch to the hub and back); py-spy found a quarter
of a polling worker's CPU there, with 500 runs waiting. A zero-timeout poll never
blocks, so the pool gets the operating system's own.
"""

from __future__ import annotations

import types


def adjust_for_gevent() -> bool:
    """Give httpcore2's readability probe the unpatched `select.poll`; False when not under gevent."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    if not monkey.is_module_patched("select"):
        return False
    import select

    from httpcore2 import _utils

    original = monkey.get_original("select", ["poll", "select"])
    _utils.select = types.SimpleNamespace(poll=original[0], select=original[1], POLLIN=select.POLLIN)
    return True
