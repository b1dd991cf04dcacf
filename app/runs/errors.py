"""How a run's start can fail before the upstream confirmed a run (the API answers 408 and 504)."""


class DeadlineBeforeStart(Exception):
    """The deadline passed before the upstream accepted the run."""


class CreateUnconfirmed(Exception):
    """The create may have reached the upstream, but no run came back."""


class CreateFailed(Exception):
    """The create failed upstream (a 5xx) and a look found no run: nothing was started."""
