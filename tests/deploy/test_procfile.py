"""The Procfile's gunicorn command serves the dashboard, as a PaaS would run it: the demo
atlas, the health check, basic auth, and one-line refusals of bad atlases and settings."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.serve import Server, get, gunicorn, run_to_exit


@pytest.fixture()
def procfile_server(tmp_path: Path) -> Iterator[str]:
    env = {"HOST": "127.0.0.1", "NETWORK_ATLAS_CACHE_DIR": str(tmp_path / "cache")}
    with gunicorn(env) as server:
        yield server.url


def test_procfile_serves_the_demo_atlas(procfile_server: str) -> None:
    status, body, _ = get(procfile_server + "/")
    assert status == 200 and b"_dash-config" in body
    assert b"handwritten digits" in body, "the demo atlas's title is the page title"
    status, layout, _ = get(procfile_server + "/_dash-layout")
    assert status == 200 and b"_pages_content" in layout
    # Several requests spread over both workers all succeed.
    for _ in range(6):
        assert get(procfile_server + "/_dash-layout")[0] == 200


def test_health_names_the_atlases_and_their_format(procfile_server: str) -> None:
    """Both shipped demos are served; the digits open without ``?atlas=``."""
    status, body, headers = get(procfile_server + "/healthz")
    assert status == 200 and headers["Content-Type"] == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok" and health["default"] == "digits@1"
    assert health["atlases"] == [
        {"name": "digits", "key": "digits@1", "format_version": 1},
        {"name": "wordnet", "key": "wordnet@1", "format_version": 1},
    ]


AUTH = "ann:s3cret, bob:pa:ss"


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cache = tmp_path_factory.mktemp("cache")
    env = {"HOST": "127.0.0.1", "NETWORK_ATLAS_CACHE_DIR": str(cache), "NETWORK_ATLAS_AUTH": AUTH}
    with gunicorn(env) as server:
        yield server


@pytest.mark.parametrize(
    "path", ["/", "/?v=1&class=3&node=1-5", "/_dash-layout", "/neuron/0/1", "/assets/style.css"]
)
def test_basic_auth_refuses_without_credentials(private_server: Server, path: str) -> None:
    status, body, headers = get(private_server.url + path)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
    assert b"handwritten" not in body
    assert get(private_server.url + path, user="ann", password="wrong")[0] == 401
    assert get(private_server.url + path, user="eve", password="s3cret")[0] == 401


def test_basic_auth_serves_the_linked_view_with_credentials(private_server: Server) -> None:
    link = private_server.url + "/?v=1&class=3&node=1-5"
    for user, password in (("ann", "s3cret"), ("bob", "pa:ss")):
        status, body, _ = get(link, user=user, password=password)
        assert status == 200 and b"handwritten digits" in body
        assert get(private_server.url + "/_dash-layout", user=user, password=password)[0] == 200


def test_health_stays_open_with_basic_auth(private_server: Server) -> None:
    status, body, _ = get(private_server.url + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"


@pytest.mark.parametrize(
    "header", ["Basic", "Basic !!!", "Basic " + "YW5uOnMzY3JldA"[:-2], "Bearer abc", "Basic w4k="]
)
def test_malformed_credentials_are_refused_not_crashed(private_server: Server, header: str) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(private_server.url + "/", headers={"Authorization": header})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=20)
    assert refused.value.code == 401


def test_a_corrupt_atlas_refuses_to_start_naming_it(small_atlas: Path, tmp_path: Path) -> None:
    atlas = Path(shutil.copytree(small_atlas, tmp_path / "atlas"))
    (atlas / "layers" / "01" / "activation_counts.npy").unlink()
    code, output = run_to_exit({"HOST": "127.0.0.1", "NETWORK_ATLAS_DIR": str(atlas)})
    assert code != 0
    assert "cannot open the atlas: missing file layers/01/activation_counts.npy" in output
    assert "Traceback" not in output


def test_a_missing_atlas_refuses_to_start(tmp_path: Path) -> None:
    code, output = run_to_exit({"HOST": "127.0.0.1", "NETWORK_ATLAS_DIR": str(tmp_path / "nope")})
    assert code != 0 and f"atlas directory not found: {tmp_path / 'nope'}" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NETWORK_ATLAS_AUTH": "nocolon"}, "NETWORK_ATLAS_AUTH: entry 1 is not 'user:password'"),
        ({"NETWORK_ATLAS_AUTH": " , "}, "NETWORK_ATLAS_AUTH is set but lists no"),
        (
            {"NETWORK_ATLAS_AUTH_FILE": "/nonexistent/users"},
            "NETWORK_ATLAS_AUTH_FILE: cannot read /nonexistent/users",
        ),
    ],
)
def test_a_bad_auth_setting_refuses_to_start(env: dict[str, str], message: str) -> None:
    code, output = run_to_exit({"HOST": "127.0.0.1", **env})
    assert code != 0 and f"network-atlas: bad setting: {message}" in output
    assert "Traceback" not in output


def _output_lines(output: str) -> list[str]:
    """What gunicorn printed besides its own start/stop lines."""
    return [
        line
        for line in output.splitlines()
        if line.strip() and "[INFO]" not in line and "[ERROR] Reason" not in line
    ]


@pytest.mark.parametrize("damage", ["manifest-not-utf8", "size-not-a-number"])
def test_a_malformed_manifest_refuses_to_start_in_one_line(
    small_atlas: Path, tmp_path: Path, damage: str
) -> None:
    """Each printed a 50-60 line traceback."""
    atlas = Path(shutil.copytree(small_atlas, tmp_path / "atlas"))
    manifest = atlas / "manifest.json"
    if damage == "manifest-not-utf8":
        manifest.write_bytes(b"\xff\xfe" + manifest.read_bytes())
        expected = "manifest.json in atlas"
    else:
        data = json.loads(manifest.read_text())
        first = next(iter(data["files"]))
        data["files"][first]["size"] = "abc"
        manifest.write_text(json.dumps(data))
        expected = "needs an integer 'size'"
    code, output = run_to_exit({"HOST": "127.0.0.1", "NETWORK_ATLAS_DIR": str(atlas)})
    assert code != 0 and expected in output and "Traceback" not in output
    ours = [line for line in _output_lines(output) if "network-atlas" in line]
    assert len(ours) == 1, output[-2000:]


def test_an_auth_file_that_is_not_utf8_refuses_to_start(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_bytes(b"\xff\xfeann:pw\n")
    code, output = run_to_exit({"HOST": "127.0.0.1", "NETWORK_ATLAS_AUTH_FILE": str(users)})
    assert code != 0 and "is not UTF-8 text" in output and "Traceback" not in output


def test_a_malformed_password_hash_is_warned_at_start(tmp_path: Path) -> None:
    """The server starts (other users may log in) but says that user never can."""
    from dashboard.auth import load_users
    from dashboard.config import Settings

    users = tmp_path / "users"
    users.write_text("ann:scrypt:notnum$a$b\nbob:plain\n")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("dashboard.auth").addHandler(handler)
    try:
        loaded = load_users(Settings(atlas_dir=tmp_path, cache_dir=tmp_path, auth_file=users))
    finally:
        logging.getLogger("dashboard.auth").removeHandler(handler)
    assert set(loaded) == {"ann", "bob"}
    assert any("'ann'" in r and "never log in" in r for r in records)
    assert not any("'bob'" in r for r in records)


def test_the_deploy_guide_shows_the_procfile_as_it_is() -> None:
    root = Path(__file__).resolve().parents[2]
    procfile = (root / "Procfile").read_text().strip()
    shown = [
        line.strip()
        for line in (root / "docs" / "deploy.md").read_text().splitlines()
        if line.startswith("web: ")
    ]
    assert shown == [procfile]
