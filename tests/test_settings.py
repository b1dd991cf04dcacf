"""Settings: parsed once, and a bad value stops the start with one line naming the variable."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dotenv import dotenv_values

from app import create_app
from app.assistant_types import lookup
from app.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = {"OPENAI_BASE_URL": "offline", "AUTH_MODE": "none", "ASSISTANT_CURATOR_MODEL": "gpt-4o"}


def test_defaults():
    settings = load_settings(MINIMAL)
    assert settings.engine == "responses" and settings.run_timeout_seconds == 60
    assert settings.run_cancel_on_timeout is True and settings.offline
    assert settings.cors_origins == ("http://localhost:8080",)
    assert [t.name for t in settings.assistant_types] == ["curator"]


def test_assistant_types_are_the_groups_of_variables(tmp_path):
    instructions = tmp_path / "tutor.md"
    instructions.write_text("Teach kindly.", encoding="utf-8")
    settings = load_settings(
        {
            **MINIMAL,
            "ASSISTANT_TUTOR_MODEL": "gpt-4o-mini",
            "ASSISTANT_TUTOR_INSTRUCTIONS_FILE": str(instructions),
            "ASSISTANT_TUTOR_TOP_P": "0.9",
            "ASSISTANT_ART_CRITIC_MODEL": "gpt-4o",
        }
    )
    assert [t.name for t in settings.assistant_types] == ["art_critic", "curator", "tutor"]
    tutor = lookup(settings.assistant_types, "tutor")
    assert tutor.instructions == "Teach kindly." and tutor.top_p == 0.9


@pytest.mark.parametrize(
    "env,variable",
    [
        ({"OPENAI_BASE_URL": ""}, "OPENAI_API_KEY"),
        ({"OPENAI_BASE_URL": "https://api.example.com/v1"}, "OPENAI_API_KEY"),
        ({"OPENAI_BASE_URL": "ftp://x"}, "OPENAI_BASE_URL"),
        ({"OPENAI_ENGINE": "chat"}, "OPENAI_ENGINE"),
        ({"OPENAI_ENGINE": "assistants"}, "ASSISTANT_CURATOR_ID"),
        ({"ASSISTANT_CURATOR_MODEL": ""}, r"ASSISTANT_<TYPE>_\*"),
        ({"ASSISTANT_CURATOR_TEMPERATURE": "3"}, "ASSISTANT_CURATOR_TEMPERATURE"),
        ({"ASSISTANT_CURATOR_TOP_P": "high"}, "ASSISTANT_CURATOR_TOP_P"),
        ({"ASSISTANT_CURATOR_INSTRUCTIONS_FILE": "/nonexistent/file.md"}, "ASSISTANT_CURATOR_INSTRUCTIONS_FILE"),
        ({"RUN_TIMEOUT_SECONDS": "0"}, "RUN_TIMEOUT_SECONDS"),
        ({"RUN_TIMEOUT_SECONDS": "soon"}, "RUN_TIMEOUT_SECONDS"),
        ({"RUN_CANCEL_ON_TIMEOUT": "maybe"}, "RUN_CANCEL_ON_TIMEOUT"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ],
)
def test_bad_values_name_their_variable(env, variable):
    with pytest.raises(ConfigError, match=f"^{variable}:"):
        load_settings({**MINIMAL, **env})


def test_a_local_upstream_needs_no_key():
    settings = load_settings({**MINIMAL, "OPENAI_BASE_URL": "http://127.0.0.1:9000/v1"})
    assert settings.openai_api_key is None and not settings.offline


def test_a_server_without_key_refuses_to_start_with_one_line():
    # Empty values, so that a developer's .env cannot fill them in.
    env = {
        "PATH": "/usr/bin:/bin",
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": "",
        "ASSISTANT_CURATOR_MODEL": "gpt-4o",
        "AUTH_MODE": "none",
    }
    started = subprocess.run([sys.executable, "-c", "import wsgi"], env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 3
    assert started.stderr.strip().splitlines() == [
        "configuration error: OPENAI_API_KEY: required (or set OPENAI_BASE_URL=offline for the offline upstream)"
    ]


JWT_SECRET = "jwt-secret-for-tests-0123456789abcdef"
PUBLIC_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.fixture
def jwt_env():
    return {**MINIMAL, "AUTH_MODE": "jwt"}


def test_a_public_key_with_its_algorithm_is_accepted(jwt_env):
    settings = load_settings({**jwt_env, "JWT_PUBLIC_KEY": PUBLIC_PEM, "JWT_ALGORITHMS": "RS256,PS256"})
    assert settings.jwt_key == PUBLIC_PEM.strip() and settings.jwt_algorithms == ("RS256", "PS256")


@pytest.mark.parametrize(
    "algorithms,variable",
    [
        ("HS256", "JWT_PUBLIC_KEY"),
        ("RS256,HS512", "JWT_PUBLIC_KEY"),
        ("ES256", "JWT_PUBLIC_KEY"),
        ("rs256", "JWT_ALGORITHMS"),
    ],
)
def test_a_public_key_with_algorithms_it_cannot_verify_stops_the_start(jwt_env, algorithms, variable):
    env = {**jwt_env, "JWT_PUBLIC_KEY": PUBLIC_PEM}
    if algorithms != "HS256":
        env["JWT_ALGORITHMS"] = algorithms  # HS256 is the default
    with pytest.raises(ConfigError, match=f"^{variable}:"):
        load_settings(env)


@pytest.mark.parametrize("algorithms", ["RS256", "ES256", "PS256", "EdDSA", "HS256,RS256"])
def test_a_secret_with_public_key_algorithms_stops_the_start(jwt_env, algorithms):
    env = {**jwt_env, "JWT_SECRET": JWT_SECRET, "JWT_ALGORITHMS": algorithms}
    with pytest.raises(ConfigError, match="^JWT_SECRET:.*JWT_PUBLIC_KEY"):
        load_settings(env)


def _dev_environment():
    """scripts/dev_env.py's dev_environment: what `make run` adds to .env and the environment."""
    spec = importlib.util.spec_from_file_location("dev_env", ROOT / "scripts" / "dev_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dev_environment


@pytest.mark.parametrize("environ", [{}, {"RUN_TIMEOUT_SECONDS": "5"}])
def test_env_example_copied_to_env_gives_a_server_that_starts(environ, migrated_db, tmp_path):
    dotenv = {k: v for k, v in dotenv_values(ROOT / ".env.example").items() if v is not None}
    exports, said = _dev_environment()(dotenv, environ)
    assert exports["OPENAI_BASE_URL"] == "offline" and any("OFFLINE" in line for line in said)
    database = tmp_path / "backend.db"
    shutil.copy(migrated_db, database)
    env = {**dotenv, **environ, **exports, "DATABASE_URL": f"sqlite:///{database}"}
    settings = load_settings(env)
    assert settings.offline and settings.run_timeout_seconds == float(environ.get("RUN_TIMEOUT_SECONDS", 60))
    app = create_app(settings)
    assert app.test_client().get("/healthz").status_code == 200


def test_make_run_takes_host_and_port_from_env_file_or_environment():
    dev_environment = _dev_environment()
    exports = dev_environment({}, {})[0]
    assert (exports["HOST"], exports["PORT"]) == ("127.0.0.1", "3000")
    exports = dev_environment({"HOST": "0.0.0.0", "PORT": "4000"}, {})[0]
    assert (exports["HOST"], exports["PORT"]) == ("0.0.0.0", "4000")
    assert dev_environment({"PORT": "4000"}, {"PORT": "5000"})[0]["PORT"] == "5000"  # the environment wins


def test_the_inflight_limit_follows_the_workers_width_and_the_poll_budget_is_a_setting(base_env):
    assert load_settings(base_env).max_inflight_runs == 0  # not under gunicorn: no limit of its own
    assert load_settings({**base_env, "WORKER_CONNECTIONS": "3000"}).max_inflight_runs == 2625
    assert load_settings({**base_env, "WORKER_THREADS": "32"}).max_inflight_runs == 28
    assert load_settings({**base_env, "WORKER_CONNECTIONS": "3000", "MAX_INFLIGHT_RUNS": "10"}).max_inflight_runs == 10
    assert load_settings(base_env).poll_budget == 1200
    assert load_settings({**base_env, "POLL_BUDGET": "0"}).poll_budget == 0
    with pytest.raises(ConfigError, match="POLL_BUDGET"):
        load_settings({**base_env, "POLL_BUDGET": "-1"})
