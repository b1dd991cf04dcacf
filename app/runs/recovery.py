"""Runs whose process died: the lock's holder, its heartbeat, and how another process adopts its run.

A process that takes a thread's lock writes itself into it (host, pid and the pid's start
time, so that a reused pid is not mistaken for it) with a heartbeat time. A background
loop per process (`Heartbeat`) refreshes the heartbeat of every lock the process holds,
in one UPDATE every HEARTBEAT_SECONDS, and looks for locks whose holder is dead:

- on the same host, the holder's pid is gone, a zombie, or another process now;
- elsewhere, its heartbeat is older than STALE_AFTER_SECONDS (3 intervals).

A request that finds its thread locked asks the same question at once. The lock of a dead
holder is taken over (one process wins) and its run adopted: it is driven to its end in
the background by a `RunDriver` of this process, from a look at the upstream run, so
that its end is recorded as any run's is (snapshot, messages, usage) and the thread is
freed then. A holder that died before its run was recorded frees the thread at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref

from app.assistant_types import lookup
from app.contract import ACTIVE_STATUSES, StartedRun, UpstreamError, UpstreamNotFound
from app.environment import CANCEL_GRACE_SECONDS
from app.runs.driver import RunDriver, cancel_and_settle
from app.runs.plan import RunPlan, ended_as
from app.store.db import make_database
from app.store.records import ProcessId, RecordedRun, Records, ThreadLock
from app.tools import Tool

log = logging.getLogger("app.runs")

# A thread's lock outlives its run's wait by this much, for the cancel and the bookkeeping:
# the bound of a lock whose holder cannot be checked.
LOCK_MARGIN_SECONDS = CANCEL_GRACE_SECONDS + 10.0
HEARTBEAT_SECONDS = 5.0
# A holder on another host is dead when its heartbeat is this old: the longest a dead
# process on another host can block a thread (on the same host: until the next look).
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
# How long a request that found a dead holder waits for the adopted run to settle.
ADOPTION_GRACE_SECONDS = 2.0
STARTING_PREFIX = "starting-"

_me: ProcessId | None = None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first); None when there is
    no such process, [] when /proc cannot tell (not Linux)."""
    if not os.path.exists("/proc/self/stat"):
        return []
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return []


def this_process() -> ProcessId:
    """This process's identity (computed again after a fork)."""
    global _me
    if _me is None or _me.pid != os.getpid():
        fields = _stat_fields(os.getpid()) or []
        started = int(fields[19]) if len(fields) > 19 else 0  # field 22, starttime in clock ticks
        _me = ProcessId(socket.gethostname(), os.getpid(), started)
    return _me


def _pid_alive(pid: int, started: int) -> bool:
    """Whether `pid` is still the process that started at `started` (and not a zombie)."""
    fields = _stat_fields(pid)
    if fields is None:
        return False
    if not fields:  # no /proc to read: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return not started or len(fields) <= 19 or int(fields[19]) == started


def holder_is_dead(lock: ThreadLock, now: float) -> bool:
    """Whether the process holding `lock` is provably gone."""
    holder = lock.process
    if holder is None:
        return False  # held by the record (a run waiting for tool outputs), not a process
    me = this_process()
    if holder.host == me.host:
        return holder != me and not _pid_alive(holder.pid, holder.started)
    return lock.beat is None or lock.beat < now - STALE_AFTER_SECONDS


class _Settled:
    """What `recover` returns when nothing is left to wait for: joining it returns at once."""

    def join(self, timeout: float | None = None) -> None:
        """Nothing to wait for."""


_SETTLED = _Settled()


def recover(services, thread_id: str, lock: ThreadLock | None = None) -> threading.Thread | _Settled | None:
    """Take over the thread's lock if its holder is dead, and settle what it held: a starting
    request's lock is freed, a recorded run adopted in the background. The adoption's thread,
    or None when there was nothing to recover."""
    records = services.records
    lock = lock or records.thread_lock(thread_id)
    if lock is None or not holder_is_dead(lock, records.clock()):
        return None
    seconds = services.settings.run_timeout_seconds + LOCK_MARGIN_SECONDS
    if not records.take_over(thread_id, lock, this_process(), seconds):
        return None  # another process was first
    gone = lock.process
    recorded = None if lock.run.startswith(STARTING_PREFIX) else records.run(lock.run)
    if recorded is None or recorded.final or recorded.pending is not None:
        log.warning(
            "thread %s: its lock's holder (pid %d on %s) is dead; the thread is free again",
            thread_id,
            gone.pid,
            gone.host,
        )
        records.unlock_thread(thread_id, lock.run)
        return _SETTLED
    log.warning(
        "run %s on %s: its process (pid %d on %s) is dead; this process adopts the run",
        lock.run,
        thread_id,
        gone.pid,
        gone.host,
    )
    adoption = threading.Thread(target=_adopt, args=(services, recorded), name=f"adopt-{lock.run}", daemon=True)
    adoption.start()
    return adoption


def _plan_of(services, recorded: RecordedRun) -> RunPlan | None:
    """The plan of a recorded run, as far as the record tells it; None when its type is gone."""
    run = recorded.run
    assistant = lookup(services.settings.assistant_types, recorded.assistant_type)
    if assistant is None:
        return None
    server_tools = {tool.name for tool in assistant.tools}
    declared = [t["function"] for t in run.get("tools") or [] if t.get("type") == "function"]
    client_tools = tuple(
        Tool(d["name"], d.get("description") or "", d.get("parameters"), bool(d.get("strict")))
        for d in declared
        if d["name"] not in server_tools
    )
    plan = RunPlan(run["thread_id"], recorded.owner, assistant, run.get("temperature"), run.get("top_p"), client_tools)
    plan.run_id, plan.created_at, plan.rounds = run["id"], run["created_at"], 1
    if recorded.upstream_id and recorded.upstream_id != run["id"]:
        plan.usage = run.get("usage")  # of the rounds recorded before the current one
    return plan


def _adopt(services, recorded: RecordedRun) -> None:
    """Drive a dead process's run to its end, as its own process would have."""
    run = recorded.run
    thread_id = run["thread_id"]
    try:
        plan = _plan_of(services, recorded)
        if plan is None:
            log.warning(
                "run %s: its assistant type %r is gone; the run is cancelled", run["id"], recorded.assistant_type
            )
            cancel_and_settle(services, thread_id, recorded.upstream_id or run["id"])
            services.records.run_ended(ended_as(run, "cancelled"), [], recorded.owner, recorded.assistant_type)
            return
        upstream = dict(run, id=recorded.upstream_id or run["id"])
        if upstream["status"] not in ACTIVE_STATUSES:
            upstream["status"] = "in_progress"
        deadline = time.monotonic() + services.settings.run_timeout_seconds
        driver = RunDriver(services, plan, deadline)
        result = driver.drive(StartedRun(upstream))
        log.info("run %s: adopted, ended %s", run["id"], result.run["status"])
    except UpstreamNotFound:
        pass  # recorded as failed by the driver: the upstream no longer knows the run
    except UpstreamError as exc:
        log.warning("run %s: adopted, but the upstream cannot tell its end (%s); recorded as failed", run["id"], exc)
        failed = ended_as(run, "failed", last_error=LOST)
        services.records.run_ended(failed, [], recorded.owner, recorded.assistant_type)
    except Exception:
        log.exception("run %s: its adoption failed; the thread is freed", run["id"])
        services.records.unlock_thread(thread_id, run["id"])


LOST = {
    "code": "server_error",
    "message": "The server that waited for this run stopped, and the upstream could not tell how the run ended.",
}


class Heartbeat:
    """Per process: beats for the locks it holds, and recovers those of dead processes."""

    def __init__(self, services, interval: float = HEARTBEAT_SECONDS):
        self._services = weakref.ref(services)
        self.interval = interval
        # Its own connections, each closed after use: the loop holds none between beats.
        self._records = Records(make_database(services.settings.database_url, pooled=False))
        self._thread = threading.Thread(target=self._loop, name="lock-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval)
            services = self._services()
            if services is None:
                return  # its app is gone
            try:
                self.once(services, self._records)
            except Exception as exc:  # the database may be away for a while; the loop goes on
                log.warning("lock heartbeat failed: %s: %s", exc.__class__.__name__, exc)
            del services

    @staticmethod
    def once(services, records: Records | None = None) -> None:
        """One beat, and one look for locks of dead processes (through `records`, else the services')."""
        records = records or services.records
        me = this_process()
        records.beat(me)
        for thread_id, lock in records.locks_held_by_others(me, records.clock() - STALE_AFTER_SECONDS):
            recover(services, thread_id, lock)
