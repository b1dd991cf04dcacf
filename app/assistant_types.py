"""The assistant types this deployment offers, built from ASSISTANT_<TYPE>_* variables."""

from __future__ import annotations

from dataclasses import dataclass

from app.tools import Tool


class AssistantTypeError(ValueError):
    """A run request names no usable assistant type; the message says why."""


@dataclass(frozen=True)
class AssistantType:
    """One configured type: what each engine needs to run it."""

    name: str
    assistant_id: str | None = None  # assistants engine: asst_...
    model: str | None = None  # responses engine
    instructions: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: tuple[Tool, ...] = ()  # server tools, run by the backend
    description: str | None = None
    vector_store_ids: tuple[str, ...] = ()  # file_search stores of ASSISTANT_<TYPE>_VECTOR_STORE_IDS
    file_search_max_results: int | None = None  # 1-50; None: the upstream's default
    client_tools: tuple[Tool, ...] = ()  # declared on every run; the client runs them (requires_action)
    allow_overrides: frozenset[str] = frozenset()  # run body fields a client may set: instructions, model


def lookup(types: tuple[AssistantType, ...], name: str) -> AssistantType | None:
    """The configured type called `name` (as recorded or in a URL), or None: the one lookup by name."""
    return next((t for t in types if t.name == name), None)


def resolve(types: tuple[AssistantType, ...], fixed: str | None, type_name, assistant_id) -> AssistantType:
    """The type a run request names, by type name or configured ID.

    `fixed` is the type of the URL (`/api/assistants/<type>`); a body that names
    another one is refused. With one type configured, it is the default.
    """
    configured = ", ".join(t.name for t in types)
    for field, value in (("assistant_type", type_name), ("assistant_id", assistant_id)):
        if value is not None and not isinstance(value, str):
            raise AssistantTypeError(f"'{field}' must be a string.")
    chosen = None
    if type_name is not None:
        chosen = lookup(types, type_name.lower())
        if chosen is None:
            raise AssistantTypeError(f"Unknown assistant type '{type_name}'. Configured types: {configured}.")
    if assistant_id is not None:
        by_id = next((t for t in types if assistant_id in (t.name, t.assistant_id)), None)
        if by_id is None:
            raise AssistantTypeError(f"Unknown assistant '{assistant_id}'. Configured types: {configured}.")
        if chosen is not None and chosen is not by_id:
            raise AssistantTypeError(
                f"'assistant_id' names type '{by_id.name}' but 'assistant_type' is '{chosen.name}'."
            )
        chosen = by_id
    if fixed is not None:
        url_type = lookup(types, fixed)
        if chosen is not None and chosen is not url_type:
            raise AssistantTypeError(f"This route serves assistant type '{fixed}', but the body names '{chosen.name}'.")
        return url_type
    if chosen is None:
        if len(types) == 1:
            return types[0]
        raise AssistantTypeError(f"'assistant_type' is required. Configured types: {configured}.")
    return chosen
