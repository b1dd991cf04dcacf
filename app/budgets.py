"""What usage budgets and prices are configured: read once from the environment (no I/O at run time).

Token budgets count total tokens per user; a type's `ASSISTANT_<TYPE>_BUDGET_TOKENS_PER_DAY`
replaces the daily budget for runs of that type, counted over that type's tokens only.
Cost budgets need a price table: USD per million input, cached input and output tokens.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app import environment as var
from app.environment import ConfigError

_TYPE_BUDGET = re.compile(r"^ASSISTANT_([A-Z0-9_]+)_BUDGET_TOKENS_PER_DAY$")
PRICE_KINDS = ("input", "cached", "output")


@dataclass(frozen=True)
class Price:
    """USD per million tokens of one model."""

    input: float
    cached: float
    output: float

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """USD of these tokens; cached tokens are part of the input tokens, at their own price."""
        uncached = max(0, input_tokens - cached_tokens)
        return (uncached * self.input + cached_tokens * self.cached + output_tokens * self.output) / 1_000_000


@dataclass(frozen=True)
class Budgets:
    """Per-user budgets (0: none) and the price table."""

    tokens_per_day: int = 0
    tokens_per_month: int = 0
    usd_per_day: float = 0.0
    usd_per_month: float = 0.0
    type_tokens_per_day: dict[str, int] = field(default_factory=dict)  # assistant type -> daily tokens
    timezone: str = "UTC"
    prices: dict[str, Price] = field(default_factory=dict)  # model (or model prefix) -> price

    @property
    def any(self) -> bool:
        """Whether any budget is set."""
        return bool(self.tokens_per_day or self.tokens_per_month or self.usd_per_day or self.usd_per_month) or any(
            self.type_tokens_per_day.values()
        )

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def price(self, model: str | None) -> Price | None:
        """The model's price: its own entry, or the longest configured prefix of its name
        ("gpt-4o" prices "gpt-4o-2024-08-06"); None when the table has none."""
        if not model:
            return None
        if model in self.prices:
            return self.prices[model]
        prefixes = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(prefixes, key=len)] if prefixes else None


def _prices(env) -> dict[str, Price]:
    raw, name = var.PRICES.read(env), var.PRICES.name
    path = var.PRICES_FILE.read(env)
    if raw and path:
        raise ConfigError("PRICES_FILE: set either it or PRICES, not both")
    if path:
        name = var.PRICES_FILE.name
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"PRICES_FILE: cannot read {path}: {exc.strerror}") from None
    if not raw:
        return {}
    example = '{"gpt-4o": {"input": 2.5, "cached": 1.25, "output": 10}}'
    try:
        table = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{name}: not JSON; expected e.g. {example}") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected an object of models, e.g. {example}")
    prices = {}
    for model, entry in table.items():
        if not isinstance(entry, dict) or set(entry) - set(PRICE_KINDS) or not {"input", "output"} <= set(entry):
            raise ConfigError(f"{name}: {model!r} needs 'input' and 'output' (and optionally 'cached'), e.g. {example}")
        values = {kind: entry.get(kind, entry["input"]) for kind in PRICE_KINDS}
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in values.values()):
            raise ConfigError(f"{name}: {model!r}: prices must be numbers of at least 0 (USD per million tokens)")
        prices[model] = Price(**{k: float(v) for k, v in values.items()})
    return prices


def load_budgets(env, type_names: tuple[str, ...]) -> Budgets:
    """The budgets of the environment; `type_names` are the configured assistant types."""
    overrides = {}
    for key in env:
        match = _TYPE_BUDGET.match(key)
        if not match or not (env.get(key) or "").strip():
            continue
        name = match.group(1).lower()
        if name not in type_names:
            raise ConfigError(f"{key}: no assistant type {name!r} is configured")
        overrides[name] = var.Number(key, 0, int, low=0).read(env)
    timezone = var.BUDGET_TIMEZONE.read(env)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"BUDGET_TIMEZONE: unknown time zone {timezone!r} (e.g. UTC or Europe/Paris)") from None
    budgets = Budgets(
        tokens_per_day=var.BUDGET_TOKENS_PER_DAY.read(env),
        tokens_per_month=var.BUDGET_TOKENS_PER_MONTH.read(env),
        usd_per_day=var.BUDGET_USD_PER_DAY.read(env),
        usd_per_month=var.BUDGET_USD_PER_MONTH.read(env),
        type_tokens_per_day=overrides,
        timezone=timezone,
        prices=_prices(env),
    )
    if (budgets.usd_per_day or budgets.usd_per_month) and not budgets.prices:
        raise ConfigError("BUDGET_USD_PER_DAY/BUDGET_USD_PER_MONTH: a cost budget needs a price table (PRICES)")
    return budgets
