"""Basic auth settings and checks (``dashboard/auth.py``) on the real app's test client."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from werkzeug.security import generate_password_hash

from dashboard.auth import credentials, load_users, parse_users, password_matches
from dashboard.config import ConfigError, Settings
from dashboard.factory import create_app


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_parse_users() -> None:
    assert parse_users("ann:a, bob:b:c,,") == {"ann": "a", "bob": "b:c"}
    assert parse_users("# team\nann:a\n\n", separator="\n") == {"ann": "a"}
    for bad in ("ann", "ann:", ":pw", "ann:a,bob"):
        with pytest.raises(ConfigError, match="is not 'user:password'"):
            parse_users(bad)


def test_settings_from_env_name_the_auth(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("ann:a\n")
    env = {"NETWORK_ATLAS_AUTH": "bob:b", "NETWORK_ATLAS_AUTH_FILE": str(users)}
    settings = Settings.from_env(env)
    assert load_users(settings) == {"ann": "a", "bob": "b"}
    assert load_users(Settings.from_env({})) == {}
    users.write_text("# nobody\n")
    with pytest.raises(ConfigError, match="lists no 'user:password' line"):
        load_users(settings)


def test_password_matches_plain_and_hashed() -> None:
    assert password_matches("s3cret", "s3cret") and not password_matches("s3cret", "s3cre")
    hashed = generate_password_hash("s3cret")
    assert password_matches(hashed, "s3cret") and not password_matches(hashed, "other")
    assert not password_matches("scrypt:junk", "x")


@pytest.mark.parametrize(
    "header", [None, "", "Basic", "Basic !!!", "Bearer abc", "Basic w4k=", "Basic YW5u"]
)
def test_credentials_of_malformed_headers(header: str | None) -> None:
    assert credentials(header) is None


def test_credentials() -> None:
    assert credentials(basic("ann", "p:w")["Authorization"]) == ("ann", "p:w")


def test_users_file_with_hashes_protects_everything_but_health(
    small_atlas: Path, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    users.write_text(f"# colleagues\nann:{generate_password_hash('s3cret')}\nbob:plain\n")
    settings = Settings(atlas_dir=small_atlas, cache_dir=tmp_path / "cache", auth_file=users)
    client = create_app(settings).server.test_client()
    for path in ("/", "/?v=1&class=2", "/_dash-layout", "/atlas-file/images/00/0-0.png"):
        refused = client.get(path)
        assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
        assert client.get(path, headers=basic("ann", "s3cret")).status_code == 200
        assert client.get(path, headers=basic("bob", "plain")).status_code == 200
        assert client.get(path, headers=basic("ann", "plain")).status_code == 401
    # A hostile callback POST without credentials is refused, not crashed.
    for body in (b"{}", b"not json", b'{"output": 1}'):
        response = client.post(
            "/_dash-update-component", data=body, content_type="application/json"
        )
        assert response.status_code == 401
    assert client.get("/healthz").status_code == 200


def test_open_without_auth_settings(small_atlas: Path, tmp_path: Path) -> None:
    client = create_app(Settings(atlas_dir=small_atlas, cache_dir=tmp_path / "c")).server
    assert client.test_client().get("/").status_code == 200
