"""Usage and budgets (no HTTP): record what each upstream run used, add it up per user, type,
model, day and month, and refuse a run for a user at or over a budget before it is created.

Days and months are those of BUDGET_TIMEZONE (UTC by default), read from `clock`, which
tests replace. The totals live in the shared database, so every process and instance
checks against the same numbers; a run in flight is never cut, so concurrent runs can
overshoot a budget by at most what the runs already in flight use (docs/deploying.md).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as day_start

import sqlalchemy as sa

from app import metrics
from app.budgets import Budgets
from app.contract import ACTIVE_STATUSES
from app.errors import NO_RETRY, ApiError
from app.services import Services
from app.store.usage import KINDS, UsageRow, UsageStore

log = logging.getLogger("app.usage")

# Seconds since the epoch, now; tests replace it to move across a day's or a month's turn.
clock = time.time


@dataclass(frozen=True)
class Periods:
    """The current day and month, and when each ends (seconds since the epoch)."""

    day: str
    month: str
    day_resets_at: int
    month_resets_at: int


# The last day worked out, by time zone: (its first second, its Periods). Every run's end asks.
_known_days: dict[str, tuple[int, Periods]] = {}


def periods(budgets: Budgets) -> Periods:
    """The day and month of now in the budgets' time zone."""
    now = clock()
    known = _known_days.get(budgets.timezone)
    if known is not None and known[0] <= now < known[1].day_resets_at:
        return known[1]
    zone = budgets.zone()
    today = datetime.fromtimestamp(now, zone).date()
    next_month = date(today.year + today.month // 12, today.month % 12 + 1, 1)

    def start(of: date) -> int:
        return int(datetime.combine(of, day_start(0), zone).timestamp())

    found = Periods(today.isoformat(), today.isoformat()[:7], start(today + timedelta(days=1)), start(next_month))
    _known_days[budgets.timezone] = (start(today), found)
    return found


def tokens_of(usage: dict | None) -> dict[str, int]:
    """Input, cached, output, reasoning and total tokens of an upstream usage, in either API's
    shape (Responses `input_tokens`..., Assistants `prompt_tokens`...); zeros for none."""
    usage = usage or {}
    input_details = usage.get("input_tokens_details") or usage.get("prompt_token_details") or {}
    input_details = input_details or usage.get("prompt_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or usage.get("completion_tokens_details") or {}
    input_tokens = int(usage.get("input_tokens", usage.get("prompt_tokens")) or 0)
    output_tokens = int(usage.get("output_tokens", usage.get("completion_tokens")) or 0)
    return {
        "input_tokens": input_tokens,
        "cached_tokens": int(input_details.get("cached_tokens") or 0),
        "output_tokens": output_tokens,
        "reasoning_tokens": int(output_details.get("reasoning_tokens") or 0),
        "total_tokens": int(usage.get("total_tokens") or input_tokens + output_tokens),
    }


def _store(services: Services) -> UsageStore:
    return UsageStore(services.records.db)


def record_run(
    services: Services, owner: str | None, assistant_type: str | None, run: dict, run_id: str | None = None
) -> bool:
    """Record the usage of an upstream run (or of one tool round's response) that has ended upstream,
    once per upstream ID; whether this call recorded it. `run` is as the engine returned it (its own
    ID); `run_id` is the run its client knows. What is not given (None, or the type "unknown") is
    read from the run's record."""
    status = run.get("status")
    if status in ACTIVE_STATUSES:
        return False
    if status == "requires_action" and services.engine.name != "responses":
        return False  # an Assistants run goes on after the outputs: its usage comes at its end
    store = _store(services)
    try:
        if owner is None or assistant_type in (None, "unknown"):
            known = store.run_of(run["id"])
            if known is None and owner is None:
                log.warning("run %s: no record says whose it is; its usage is not recorded", run["id"])
                return False
            run_id, owner, assistant_type = known if known else (run_id, owner, "unknown")
        now = periods(services.settings.budgets)
        tokens = tokens_of(run.get("usage"))
        model = run.get("model") or "unknown"
        inserted = store.add(
            dict(
                upstream_id=run["id"],
                run_id=run_id or run["id"],
                owner=owner,
                assistant_type=assistant_type,
                model=model,
                status=status,
                day=now.day,
                month=now.month,
                recorded_at=clock(),
                **tokens,
            )
        )
    except sa.exc.SQLAlchemyError:
        log.exception("run %s: its usage could not be recorded", run_id or run["id"])
        return False
    if inserted:
        metrics.tokens_used(assistant_type, model, tokens)
    return inserted


def _zero() -> dict:
    return dict.fromkeys(KINDS, 0)


def _add(total: dict, row: UsageRow) -> None:
    for kind in KINDS:
        total[kind] += getattr(row, kind)


class _Sums:
    """One user's tokens (and cost) today and this month, in total and per type."""

    def __init__(self, rows: list[UsageRow], budgets: Budgets, today: str):
        self.today, self.month, self.by_type = _zero(), _zero(), {}
        self.usd_today = self.usd_month = 0.0
        for row in rows:
            of_type = self.by_type.setdefault(row.assistant_type, {"today": _zero(), "month": _zero()})
            price = budgets.price(row.model)
            cost = price.cost(row.input_tokens, row.cached_tokens, row.output_tokens) if price else 0.0
            _add(self.month, row)
            _add(of_type["month"], row)
            self.usd_month += cost
            if row.day == today:
                _add(self.today, row)
                _add(of_type["today"], row)
                self.usd_today += cost

    def type_today(self, assistant_type: str) -> int:
        return self.by_type.get(assistant_type, {"today": _zero()})["today"]["total_tokens"]


def _limits(
    budgets: Budgets, sums: _Sums, now: Periods, assistant_type: str | None
) -> list[tuple[str, float, float, int]]:
    """(name, limit, used, resets at) of each budget set for a run of `assistant_type` (None: the
    user's own budgets, without the per-type ones)."""
    limits = []
    day_limit, day_used = budgets.tokens_per_day, sums.today["total_tokens"]
    if assistant_type is not None and budgets.type_tokens_per_day.get(assistant_type):
        day_limit, day_used = budgets.type_tokens_per_day[assistant_type], sums.type_today(assistant_type)
    if day_limit:
        limits.append(("tokens_per_day", day_limit, day_used, now.day_resets_at))
    if budgets.tokens_per_month:
        limits.append(("tokens_per_month", budgets.tokens_per_month, sums.month["total_tokens"], now.month_resets_at))
    if budgets.usd_per_day:
        limits.append(("usd_per_day", budgets.usd_per_day, sums.usd_today, now.day_resets_at))
    if budgets.usd_per_month:
        limits.append(("usd_per_month", budgets.usd_per_month, sums.usd_month, now.month_resets_at))
    return limits


def _sums(services: Services, owner: str) -> tuple[_Sums, Periods]:
    budgets = services.settings.budgets
    now = periods(budgets)
    return _Sums(_store(services).month_rows(now.month, owner), budgets, now.day), now


def check_budget(services: Services, owner: str, assistant_type: str) -> None:
    """Refuse (429, `budget_exceeded`) a run of `assistant_type` for a user at or over a budget,
    before anything is created upstream."""
    budgets = services.settings.budgets
    if not budgets.any:
        return
    sums, now = _sums(services, owner)
    spent = [limit for limit in _limits(budgets, sums, now, assistant_type) if limit[2] >= limit[1]]
    if not spent:
        return
    # Refused until the last of the spent budgets turns over.
    name, limit, _, resets_at = max(spent, key=lambda item: item[3])
    metrics.budget_refused(assistant_type, name)
    seconds = max(1, math.ceil(resets_at - clock()))
    what = f"{limit:g} USD" if name.startswith("usd") else f"{int(limit)} tokens"
    period = "day" if name.endswith("day") else "month"
    scope = (
        f" for '{assistant_type}'" if name == "tokens_per_day" and assistant_type in budgets.type_tokens_per_day else ""
    )
    stamp = datetime.fromtimestamp(resets_at, budgets.zone()).isoformat()
    raise ApiError(
        429,
        f"Usage budget exceeded: {what} per {period}{scope} are used up; it resets at {stamp}.",
        headers={**NO_RETRY, "Retry-After": str(seconds)},
        code="budget_exceeded",
        budget=name,
        reset_at=resets_at,
    )


def _budget_view(budgets: Budgets, sums: _Sums, now: Periods) -> dict:
    """Each budget set: its limit, what is used, what remains and when it resets."""

    def view(limit, used, resets_at) -> dict:
        return {"limit": limit, "used": used, "remaining": max(0, limit - used), "reset_at": resets_at}

    shown = {name: view(limit, used, at) for name, limit, used, at in _limits(budgets, sums, now, None)}
    by_type = {
        name: {"tokens_per_day": view(limit, sums.type_today(name), now.day_resets_at)}
        for name, limit in budgets.type_tokens_per_day.items()
        if limit
    }
    if by_type:
        shown["by_type"] = by_type
    return shown


def report(services: Services, owner: str) -> dict:
    """A user's usage today and this month (in total and per type) and their budgets."""
    budgets = services.settings.budgets
    sums, now = _sums(services, owner)
    answer = {
        "user": owner,
        "period": {"day": now.day, "month": now.month, "timezone": budgets.timezone},
        "today": sums.today,
        "month": sums.month,
        "by_type": sums.by_type,
        "budget": _budget_view(budgets, sums, now),
    }
    if budgets.prices:
        answer["cost_usd"] = {"today": round(sums.usd_today, 6), "month": round(sums.usd_month, 6)}
    return answer


def report_all(services: Services) -> dict:
    """Every user's usage today and this month."""
    budgets = services.settings.budgets
    now = periods(budgets)
    rows: dict[str, list[UsageRow]] = {}
    for row in _store(services).month_rows(now.month):
        rows.setdefault(row.owner, []).append(row)
    users = {}
    for owner, owned in sorted(rows.items()):
        sums = _Sums(owned, budgets, now.day)
        users[owner] = {"today": sums.today, "month": sums.month, "by_type": sums.by_type}
    return {"period": {"day": now.day, "month": now.month, "timezone": budgets.timezone}, "users": users}
