"""Optional HTTP basic auth for shared deployments (``dash-auth``), and the health route.

Basic auth is on when ``NETWORK_ATLAS_AUTH`` (``user:password,user2:password2``) or
``NETWORK_ATLAS_AUTH_FILE`` (one ``user:password`` per line, ``#`` comments; a password may
be a werkzeug hash such as ``scrypt:...`` from ``werkzeug.security.generate_password_hash``)
is set; without them the app is open, as locally. A malformed setting stops the start-up
(:class:`ConfigError`): a deployment meant to be private never runs open by mistake.

Every route needs credentials except :data:`PUBLIC_PATHS` (the health check, which shows
only atlas names and format versions). Basic auth keeps the URL as typed, so a shared link
reproduces its view after the browser's login prompt.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Mapping
from pathlib import Path

import dash_auth
import flask
from dash import Dash
from werkzeug.security import check_password_hash

from dashboard.config import ConfigError, Settings

log = logging.getLogger(__name__)

#: The health check (reachable without credentials, for the platform's probe).
HEALTH_PATH = "/healthz"
#: Routes answered without credentials.
PUBLIC_PATHS: tuple[str, ...] = (HEALTH_PATH,)
#: Prefixes of password hashes that :func:`werkzeug.security.check_password_hash` reads.
_HASH_PREFIXES = ("scrypt:", "pbkdf2:")


def parse_users(
    text: str, *, separator: str = ",", source: str = "NETWORK_ATLAS_AUTH"
) -> dict[str, str]:
    """``{user: password}`` from ``user:password`` entries split by ``separator``.

    Blank entries and (in files) ``#`` comment lines are skipped; a password may contain
    ``:``. Raises :class:`ConfigError` naming the entry's position for anything else.

    Examples:
        >>> parse_users("ann:pw1, bob:p:w")
        {'ann': 'pw1', 'bob': 'p:w'}
    """
    users: dict[str, str] = {}
    for number, raw in enumerate(text.split(separator), start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        user, colon, password = entry.partition(":")
        user = user.strip()
        if not colon or not user or not password:
            raise ConfigError(
                f"{source}: entry {number} is not 'user:password' (user and password non-empty)"
            )
        users[user] = password
    return users


def load_users(settings: Settings) -> dict[str, str]:
    """The users of ``settings`` (env entries and the users file, merged); empty: no auth."""
    users: dict[str, str] = {}
    if settings.auth_file is not None:
        path: Path = settings.auth_file
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"NETWORK_ATLAS_AUTH_FILE: cannot read {path}: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"NETWORK_ATLAS_AUTH_FILE: {path} is not UTF-8 text") from None
        users.update(parse_users(text, separator="\n", source=f"users file {path}"))
        if not users:
            raise ConfigError(f"NETWORK_ATLAS_AUTH_FILE: {path} lists no 'user:password' line")
    if settings.auth is not None:
        users.update(parse_users(settings.auth))
        if not users:
            raise ConfigError("NETWORK_ATLAS_AUTH is set but lists no 'user:password' entry")
    for user in malformed_hashes(users):
        log.warning(
            "auth: the password hash of user %r is malformed: that user can never log in "
            "(make one with werkzeug.security.generate_password_hash)",
            user,
        )
    return users


def malformed_hashes(users: Mapping[str, str]) -> list[str]:
    """Users whose stored password looks like a werkzeug hash but cannot be checked."""
    bad = []
    for user, stored in users.items():
        if stored.startswith(_HASH_PREFIXES):
            parts = stored.split("$")
            try:
                check_password_hash(stored, "")
            except (ValueError, TypeError):
                bad.append(user)
                continue
            if len(parts) != 3 or not parts[1] or not parts[2]:
                bad.append(user)
    return bad


def password_matches(stored: str, given: str) -> bool:
    """Whether ``given`` matches ``stored`` (a werkzeug hash or plain text, compared in
    constant time)."""
    if stored.startswith(_HASH_PREFIXES):
        try:
            return check_password_hash(stored, given)
        except (ValueError, TypeError):
            return False
    return hmac.compare_digest(stored.encode("utf-8"), given.encode("utf-8"))


def credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` of a ``Basic`` ``Authorization`` header, ``None`` if malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class AtlasBasicAuth(dash_auth.BasicAuth):
    """``dash_auth.BasicAuth`` hardened for hostile input.

    dash-auth's own request hook indexes the callback body and the header without checks,
    so a malformed request would answer 500; this one only asks: is the path public, are
    the credentials right? Anything else gets the 401 login challenge.

    Args:
        app: the Dash app to protect.
        users: ``{user: password or werkzeug hash}``.
    """

    def __init__(self, app: Dash, users: Mapping[str, str]) -> None:
        self._known = dict(users)
        super().__init__(app, auth_func=self._check, public_routes=list(PUBLIC_PATHS))

    def _check(self, user: str, password: str) -> bool:
        stored = self._known.get(user)
        # Compare against something even for unknown users (no timing hint of who exists).
        return password_matches(stored if stored is not None else "\0", password) and (
            stored is not None
        )

    def _protect(self) -> None:
        server = self.app.server
        prefix = self.app.config.routes_pathname_prefix.rstrip("/")
        public = {prefix + path for path in PUBLIC_PATHS}

        @server.before_request
        def require_basic_auth() -> flask.Response | None:
            if flask.request.path in public or self.is_authorized():
                return None
            return self.login_request()

    def is_authorized(self) -> bool:
        found = credentials(flask.request.headers.get("Authorization"))
        return found is not None and self._check(*found)

    def login_request(self) -> flask.Response:
        return flask.Response(
            "Login required",
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="Network Atlas", charset="UTF-8"'},
            mimetype="text/plain",
        )


def protect(app: Dash, settings: Settings) -> AtlasBasicAuth | None:
    """Turn on basic auth when the settings name users (raises :class:`ConfigError`)."""
    users = load_users(settings)
    if not users:
        return None
    log.info("basic auth on for %d user(s)", len(users))
    return AtlasBasicAuth(app, users)
