"""Authentication modes, and each user seeing only their own threads on every route."""

from __future__ import annotations

import dataclasses
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app import create_app
from app.settings import ConfigError, load_settings
from tests.helpers import Api, upstream_calls

SECRET = "jwt-secret-for-tests-0123456789abcdef"


def _hs256(secret=SECRET, **claims):
    payload = {"sub": "carol", "exp": int(time.time()) + 60, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


@pytest.fixture
def jwt_app(make_app):
    return make_app(AUTH_MODE="jwt", JWT_SECRET=SECRET, JWT_AUDIENCE="chat-frontend", JWT_ISSUER="https://login.test")


def _create_thread(app, token):
    return app.test_client().post("/api/openai/threads", json={}, headers={"Authorization": f"Bearer {token}"})


def test_jwt_with_the_right_claims_is_accepted(jwt_app):
    answer = _create_thread(jwt_app, _hs256(aud="chat-frontend", iss="https://login.test"))
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "token_claims,reason",
    [
        (dict(aud="chat-frontend", iss="https://login.test", exp=int(time.time()) - 10), "expired"),
        (dict(aud="someone-else", iss="https://login.test"), "audience"),
        (dict(aud="chat-frontend", iss="https://evil.test"), "issuer"),
        (dict(aud="chat-frontend", iss="https://login.test", sub=None), "sub"),
        (dict(aud="chat-frontend", iss="https://login.test", secret="another-secret-0123456789abcdefgh"), "signature"),
    ],
)
def test_jwt_that_does_not_hold_is_401(jwt_app, token_claims, reason):
    claims = dict(token_claims)
    secret = claims.pop("secret", SECRET)
    answer = _create_thread(jwt_app, _hs256(secret, **claims))
    assert answer.status_code == 401 and answer.is_json
    assert reason in answer.json["error"].lower() or reason == "signature"


def test_unsigned_jwt_is_refused(jwt_app):
    unsigned = jwt.encode(
        {"sub": "carol", "exp": int(time.time()) + 60, "aud": "chat-frontend"}, None, algorithm="none"
    )
    assert _create_thread(jwt_app, unsigned).status_code == 401


def test_jwt_with_a_public_key(make_app):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    app = make_app(AUTH_MODE="jwt", JWT_PUBLIC_KEY=public_pem, JWT_ALGORITHMS="RS256")
    token = jwt.encode({"sub": "dave", "exp": int(time.time()) + 60}, private, algorithm="RS256")
    assert _create_thread(app, token).status_code == 200
    assert _create_thread(app, _hs256()).status_code == 401  # an HS256 token is not taken by an RS256 deployment


def _rsa_key_pair():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public_pem


def test_a_key_that_does_not_fit_the_token_is_401_not_500(base_env):
    # The start refuses this pairing; should one get through, a token is still 401 with a JSON body.
    private, public_pem = _rsa_key_pair()
    env = {**base_env, "AUTH_MODE": "jwt", "JWT_PUBLIC_KEY": public_pem, "JWT_ALGORITHMS": "RS256"}
    settings = dataclasses.replace(load_settings(env), jwt_algorithms=("HS256", "RS256"))
    app = create_app(settings)
    answer = _create_thread(app, _hs256())
    assert answer.status_code == 401 and answer.is_json
    assert answer.json["error"].startswith("Invalid token")
    assert answer.headers["x-should-retry"] == "false"
    token = jwt.encode({"sub": "dave", "exp": int(time.time()) + 60}, private, algorithm="RS256")
    assert _create_thread(app, token).status_code == 200


def test_auth_mode_none_makes_everyone_anonymous(make_app, capfd):
    app = make_app(AUTH_MODE="none")
    assert "AUTH_MODE=none" in capfd.readouterr().err
    assert app.test_client().post("/api/openai/threads", json={}).status_code == 200


def test_health_endpoints_need_no_credentials(app):
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ok"


@pytest.mark.parametrize(
    "env,variable",
    [
        ({"AUTH_MODE": "token", "API_TOKENS": ""}, "API_TOKENS"),
        ({"AUTH_MODE": "token", "API_TOKENS": "alice:short"}, "API_TOKENS"),
        ({"AUTH_MODE": "jwt", "JWT_SECRET": ""}, "JWT_SECRET"),
        ({"AUTH_MODE": "jwt", "JWT_SECRET": "short-secret"}, "JWT_SECRET"),
        ({"AUTH_MODE": "jwt", "JWT_SECRET": SECRET, "JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS"),
        ({"AUTH_MODE": "basic"}, "AUTH_MODE"),
    ],
)
def test_unsafe_auth_configuration_stops_the_start(base_env, env, variable):
    with pytest.raises(ConfigError, match=f"^{variable}:"):
        load_settings({**base_env, **env})


@pytest.fixture
def alice_thread(api):
    """A thread of alice's with one finished run."""
    thread = api.new_thread()
    api.say(thread, "mine [fake duration=0.05]")
    return thread, api.run(thread).json["id"]


def test_another_users_thread_is_404_on_every_route(api, alice_thread, fake):
    thread, run_id = alice_thread
    bob: Api = api.as_user("bob")
    calls = upstream_calls(fake)
    attempts = [
        bob.get(f"/threads/{thread}"),
        bob.delete(f"/threads/{thread}"),
        bob.get(f"/threads/{thread}/messages"),
        bob.post(f"/threads/{thread}/messages", json={"role": "user", "content": "hi"}),
        bob.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"}),
        bob.get(f"/threads/{thread}/runs/{run_id}"),
        bob.post(f"/threads/{thread}/runs/{run_id}/cancel"),
    ]
    missing = bob.get("/threads/thread_nosuchthing0000000")
    for answer in attempts:
        assert answer.status_code == 404
        assert answer.json == {"error": f"No thread found with id '{thread}'."}
    assert missing.json == {"error": "No thread found with id 'thread_nosuchthing0000000'."}
    assert upstream_calls(fake) == calls  # nothing reached the upstream
    assert api.get(f"/threads/{thread}").status_code == 200  # alice still has it
