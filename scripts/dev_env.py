"""The development server's environment: what `make run` (scripts/run.sh) adds to `.env` and the environment.

`python scripts/dev_env.py` prints it as `export` lines for the shell; the tests
call `dev_environment()` on `.env.example`. The environment wins over `.env`, as
in the app. With no OpenAI key configured, the server runs against the offline
upstream, with AUTH_MODE=none unless AUTH_MODE is set, a `curator` type
unless an assistant type is configured, the example tools on `curator`
unless some type has tools, and the example knowledge (the offline upstream's
store of examples/knowledge/) on `curator` unless some type has vector stores.
The chat page is on unless CHAT_PAGE is set.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from dotenv import dotenv_values

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = "3000"
OFFLINE_TYPE = {
    "ASSISTANT_CURATOR_MODEL": "gpt-4o",
    "ASSISTANT_CURATOR_ID": "asst_offline_curator",
    "ASSISTANT_CURATOR_INSTRUCTIONS": "You are the curator.",
}
EXAMPLE_TOOLS = "examples.tools:current_time,examples.tools:convert_temperature"
# The offline upstream's store of examples/knowledge/*.md (fake_openai/seed.py).
EXAMPLE_STORE = "vs_offline_examples"


def dev_environment(dotenv: dict, environ: dict) -> tuple[dict[str, str], list[str]]:
    """(variables to export, lines to tell the developer) for `.env` values `dotenv` under `environ`."""
    env = {**{k: v for k, v in dotenv.items() if v is not None}, **environ}

    def configured(*prefixes: str) -> bool:
        return any(v and k.startswith(prefixes) for k, v in env.items())

    exports: dict[str, str] = {}
    said: list[str] = []
    if not configured("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        said.append("No OPENAI_API_KEY: using the OFFLINE upstream (echo replies, not OpenAI).")
        exports["OPENAI_BASE_URL"] = "offline"
        if not configured("AUTH_MODE"):
            exports["AUTH_MODE"] = "none"
            said.append("AUTH_MODE=none: every caller is anonymous (set AUTH_MODE to change it).")
        if not configured("ASSISTANT_"):
            exports.update(OFFLINE_TYPE)
        if not any(k.endswith("_TOOLS") and v for k, v in env.items()) and (
            "ASSISTANT_CURATOR_MODEL" in exports or configured("ASSISTANT_CURATOR_")
        ):
            exports["ASSISTANT_CURATOR_TOOLS"] = EXAMPLE_TOOLS
            said.append("The curator type has the example tools of examples/tools.py.")
        if not any(k.endswith("_VECTOR_STORE_IDS") and v for k, v in env.items()) and (
            "ASSISTANT_CURATOR_MODEL" in exports or configured("ASSISTANT_CURATOR_")
        ):
            exports["ASSISTANT_CURATOR_VECTOR_STORE_IDS"] = EXAMPLE_STORE
            said.append("The curator type searches the example knowledge of examples/knowledge/.")
    exports["HOST"] = env.get("HOST") or DEFAULT_HOST
    exports["PORT"] = env.get("PORT") or DEFAULT_PORT
    if not configured("CHAT_PAGE"):
        exports["CHAT_PAGE"] = "true"
        said.append(f"Chat page: http://{exports['HOST']}:{exports['PORT']}/ (CHAT_PAGE=false turns it off).")
    return exports, said


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else ".env")
    dotenv = dotenv_values(path) if path.exists() else {}
    exports, said = dev_environment(dotenv, dict(os.environ))
    for line in said:
        print(line, file=sys.stderr)
    for key, value in exports.items():
        print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
