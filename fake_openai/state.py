"""The simulator's in-memory state: knobs, counters, ids, and the wall-clock life of a run."""

import random
import secrets
import string
import threading
import time

from .errors import bad_request, not_found

_ALNUM = string.ascii_letters + string.digits

# Statuses after which a run/response never changes again.
TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled", "expired"})


def alnum_id(prefix, length=24):
    """An Assistants-style id: prefix + random letters and digits."""
    return prefix + "".join(random.choices(_ALNUM, k=length))


def hex_id(prefix, nbytes=24):
    """A Responses/Conversations-style id: prefix + random hex."""
    return prefix + secrets.token_hex(nbytes)


def epoch(t):
    """Float epoch seconds -> the int seconds OpenAI shows (None stays None)."""
    return None if t is None else int(t)


class Config:
    """The knobs tests and the benchmark may change at any time (plain attributes)."""

    FAIL_KINDS = ("500", "503", "429")

    def __init__(self, default_duration):
        self._initial_duration = float(default_duration)
        self.restore_defaults()

    def restore_defaults(self):
        """Put every knob back to its value at app creation."""
        self.default_duration = self._initial_duration
        self.poll_after_ms = None
        self.fail_every_nth_poll = 0
        self.fail_kind = "500"
        self.cancel_delay = 0.05
        self.unknown_assistants = set()
        self.stream_mode = "ok"  # "refuse": streams answer 400; "drop": they close after one event
        self.stream_resume_seconds = 300.0  # GET ?stream=true works this long after creation
        self.keepalive_seconds = 30.0  # a `keepalive` event after this much stream silence (None: never)
        self.run_expiry_seconds = 600.0  # an Assistants run waiting for tool outputs expires then
        self.retry_after = "0"  # the Retry-After header of a 429
        self.stuck_if_aborted = False  # a creation stream closed before the start leaves it queued
        self.file_processing_seconds = 0.3  # a file added to a vector store is in_progress this long
        # The next create of a run (or response) fails: "<how>-<when>", how in 500, reset, stall
        # (no answer for stall_seconds), when before or after the run is made; None: no fault.
        self.fail_next_create = None
        self.stall_seconds = 5.0
        self.garbage = False  # every /v1 answer is an HTML page with status 200

    CREATE_FAULTS = tuple(f"{how}-{when}" for how in ("500", "reset", "stall") for when in ("before", "after"))

    def _create_fault(self, value):
        if value is not None and value not in self.CREATE_FAULTS:
            raise ValueError(f"expected null or one of {', '.join(self.CREATE_FAULTS)}")
        return value

    def update(self, values):
        """Set knobs from a JSON object, validating each; unknown names are an error."""
        converters = {
            "default_duration": _non_negative_float,
            "poll_after_ms": lambda v: None if v is None else _non_negative_int(v),
            "fail_every_nth_poll": lambda v: 0 if v is None else _non_negative_int(v),
            "fail_kind": self._fail_kind,
            "cancel_delay": _non_negative_float,
            "unknown_assistants": lambda v: set(v or ()),
            "stream_mode": self._stream_mode,
            "stream_resume_seconds": _non_negative_float,
            "keepalive_seconds": lambda v: None if v is None else _positive_float(v),
            "run_expiry_seconds": _non_negative_float,
            "stuck_if_aborted": _boolean,
            "file_processing_seconds": _non_negative_float,
            "fail_next_create": self._create_fault,
            "stall_seconds": _non_negative_float,
            "garbage": _boolean,
            "retry_after": lambda v: str(_non_negative_float(v)).removesuffix(".0"),
        }
        parsed = {}
        for name, value in values.items():
            if name not in converters:
                raise bad_request(f"unknown fake config knob '{name}'", param=name)
            try:
                parsed[name] = converters[name](value)
            except (TypeError, ValueError) as exc:
                raise bad_request(f"invalid value for fake config knob '{name}': {exc}", param=name) from None
        for name, value in parsed.items():
            setattr(self, name, value)

    def as_dict(self):
        """The knobs as JSON-friendly values."""
        return {
            "default_duration": self.default_duration,
            "poll_after_ms": self.poll_after_ms,
            "fail_every_nth_poll": self.fail_every_nth_poll,
            "fail_kind": self.fail_kind,
            "cancel_delay": self.cancel_delay,
            "unknown_assistants": sorted(self.unknown_assistants),
            "stream_mode": self.stream_mode,
            "stream_resume_seconds": self.stream_resume_seconds,
            "keepalive_seconds": self.keepalive_seconds,
            "run_expiry_seconds": self.run_expiry_seconds,
            "retry_after": self.retry_after,
            "stuck_if_aborted": self.stuck_if_aborted,
            "file_processing_seconds": self.file_processing_seconds,
            "fail_next_create": self.fail_next_create,
            "stall_seconds": self.stall_seconds,
            "garbage": self.garbage,
        }

    @staticmethod
    def _stream_mode(value):
        if value not in ("ok", "refuse", "drop"):
            raise ValueError("expected ok, refuse or drop")
        return value

    def _fail_kind(self, value):
        value = str(value)
        if value not in self.FAIL_KINDS:
            raise ValueError(f"expected one of {', '.join(self.FAIL_KINDS)}")
        return value


def _non_negative_float(value):
    if isinstance(value, bool) or float(value) < 0:
        raise ValueError("expected a number >= 0")
    return float(value)


def _boolean(value):
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _positive_float(value):
    if isinstance(value, bool) or float(value) <= 0:
        raise ValueError("expected a number > 0")
    return float(value)


def _non_negative_int(value):
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError("expected an integer >= 0")
    return int(value)


FAILURE_MESSAGE = "The fake upstream failed this run on purpose."


class Holder:
    """A thread or a conversation: created with metadata, held by at most one active job at a time."""

    def __init__(self, holder_id, now, metadata):
        self.id = holder_id
        self.created_at = int(now)
        self.metadata = metadata
        self.active = None

    def advance(self, now):
        """Bring the active job up to date; let go of it once it has ended."""
        if self.active is not None:
            self.active.advance(now)
            if not self.active.active:
                self.active = None


class Job:
    """The timing shared by runs and responses; status is derived lazily from the clock.

    `queued` for min(0.1 s, duration/4), then `in_progress`, then the scripted outcome at
    exactly created + duration. `final_at` is the instant the current settled status
    (terminal, or requires_action) began, or None while the job is still working.
    """

    def __init__(self, job_id, script, now):
        self.id = job_id
        self.script = script
        self.outcome = script.outcome
        self.created = now
        self.started_at = None
        self.restart(now)

    def restart(self, now):
        """Queue the job again from `now` for one more turn of its script's duration."""
        self.start_at = now + min(0.1, self.script.duration / 4)
        self.end_at = now + self.script.duration
        self.status = "queued"
        self.final_at = None
        self.cancel_at = None  # when a requested cancel takes effect
        self.stuck = False  # never leaves `queued` (the stuck_if_aborted knob)
        self.polls = 0

    @property
    def active(self):
        """True while the job still holds its thread/conversation."""
        return self.status not in TERMINAL

    def advance(self, now):
        """Bring the status up to date with `now`, applying any transition that is due."""
        if not self.active:
            return
        if self.cancel_at is not None:
            if now >= self.cancel_at:
                self.settle("cancelled", self.cancel_at)
            return
        if self.status == "requires_action" or now < self.start_at or self.stuck:
            return
        if self.status == "queued":
            self.status = "in_progress"
            self.started_at = self.started_at or self.start_at
            self.on_start()
        if self.outcome != "never" and now >= self.end_at:
            self.settle(self.outcome, self.end_at)

    def on_start(self):
        """Called when the job moves from queued to in_progress; subclasses may record it."""

    def settle(self, outcome, at):
        """End (or park, for requires_action) the job with `outcome` at instant `at`."""
        self.final_at = at
        self.finish(outcome, at)

    def finish(self, outcome, at):
        """Apply `outcome` at instant `at` (sets `status`); subclasses add their side effects."""
        raise NotImplementedError

    def info(self):
        """The control API's view of this job."""
        return {
            "id": self.id,
            "status": self.status,
            "final_at": self.final_at,
            "created_at": self.created,
            "polls": self.polls,
            "usage": getattr(self, "usage", None),
        }


class FakeState:
    """Everything the simulator holds, guarded by one lock (`lock`) that callers take."""

    def __init__(self, default_duration=0.3, label=None, clock=time.time):
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # notified when a job moves on early (cancel, submit)
        self.label = label
        self.clock = clock
        self.config = Config(default_duration)
        self._clear()

    def _clear(self):
        self.threads = {}
        self.runs = {}
        self.conversations = {}
        self.responses = {}
        self.files = {}
        self.vector_stores = {}
        self.assistants = {}  # assistant id -> {"tools", "tool_resources"}, set through /_fake/assistants
        self.jobs = {}  # every run and response ever created, even forgotten ones
        self.request_counts = {}
        self.bodies = {}  # "METHOD /route/{template}" -> the last JSON body it received
        self.polls = 0
        self.runs_created = 0

    def now(self):
        """The current time in float epoch seconds."""
        return self.clock()

    def reset(self):
        """Forget all state and counters; knobs back to their defaults."""
        with self.lock:
            self._clear()
            self.config.restore_defaults()

    def add_job(self, job):
        """Register a new run/response (lock held)."""
        self.jobs[job.id] = job
        self.runs_created += 1

    def count_request(self, key):
        """Count one API request under its "METHOD /route/{template}" key."""
        with self.lock:
            self.request_counts[key] = self.request_counts.get(key, 0) + 1

    def record_body(self, key, body):
        """Keep the JSON body of the latest request on a "METHOD /route/{template}" key."""
        with self.lock:
            self.bodies[key] = body

    def last_body(self, key):
        """The JSON body the latest request on that key carried (None if none came)."""
        with self.lock:
            return self.bodies.get(key)

    def record_poll(self, job_id):
        """Count one GET of a run/response; True when this poll must fail (fail_every_nth_poll)."""
        with self.lock:
            self.polls += 1
            job = self.jobs.get(job_id)
            if job is not None:
                job.polls += 1
            nth = self.config.fail_every_nth_poll
            return bool(nth) and self.polls % nth == 0

    def stats(self):
        """Request counts per route, total polls, and how many runs/responses were created."""
        with self.lock:
            return {
                "requests": dict(self.request_counts),
                "polls": self.polls,
                "runs_created": self.runs_created,
            }

    def run_info(self, job_id):
        """`{id, status, final_at, created_at, polls}` for a run_ or resp_ id (404 if unknown)."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise not_found(f"No run or response found with id '{job_id}'.")
            job.advance(self.now())
            return job.info()

    def usage_report(self):
        """`{id: {status, model, usage}}` of every run and response created since the reset, as of now."""
        with self.lock:
            now = self.now()
            report = {}
            for job_id, job in self.jobs.items():
                job.advance(now)
                report[job_id] = {"status": job.status, "model": job.model, "usage": job.usage}
            return report

    def forget(self, response_id):
        """Drop a response from the API (later reads 404), as OpenAI's short retention would."""
        with self.lock:
            if self.responses.pop(response_id, None) is None:
                raise not_found(f"Response with id '{response_id}' not found.")
