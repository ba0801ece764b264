"""The atlases of a deployment and the one the current request shows (no Dash).

``NETWORK_ATLAS_DIR`` names one atlas directory (as locally) or a folder whose
subdirectories are atlases. Each atlas is named by its directory and its format version,
``NAME@VERSION`` (e.g. ``digits@1``): the key a URL's ``?atlas=`` carries, so a link keeps
working when atlases are added to the folder, and a link to an atlas that was rebuilt in
another format is recognised as stale instead of showing different data.

At start every manifest is read and checked (a corrupt one stops the start, naming the
file); the arrays of an atlas are opened lazily, once per worker, memory-mapped
(:func:`dashboard.data.load`), the first time a request asks for it.

Which atlas a request shows is a :class:`~contextvars.ContextVar` (:func:`current_key`,
:func:`use`), set by the factory's request hook from the page's URL; pure helpers such as
:mod:`dashboard.links` read it to keep links on the same atlas.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from pathlib import Path

from compute.atlas import MANIFEST, AtlasError, read_manifest
from dashboard import data as atlas_data
from dashboard.state import ATLAS_KEY_RE as KEY_RE

log = logging.getLogger(__name__)

#: An atlas name (its directory's name) usable in a URL unquoted.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

_CURRENT: ContextVar[str | None] = ContextVar("network_atlas_current_atlas", default=None)


def current_key() -> str | None:
    """The key (``NAME@VERSION``) of the atlas the current request shows in a deployment of
    several atlases; ``None`` with a single atlas or outside a request."""
    return _CURRENT.get()


def set_current(key: str | None) -> Token[str | None]:
    """Set the current atlas key for the rest of this request (the request hook); returns
    the token that :func:`reset_current` takes at the request's end."""
    return _CURRENT.set(key)


def reset_current(token: Token[str | None]) -> None:
    """Undo :func:`set_current` (at the end of the request)."""
    try:
        _CURRENT.reset(token)
    except ValueError:  # set in another context: nothing of ours to undo here
        _CURRENT.set(None)


@contextlib.contextmanager
def use(key: str | None) -> Iterator[None]:
    """Make ``key`` the current atlas inside the ``with`` block (tests, page layouts)."""
    token = _CURRENT.set(key)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def parse_key(value: object) -> tuple[str, int | None] | None:
    """``(name, version or None)`` of ``NAME`` / ``NAME@VERSION``; ``None`` if malformed."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if not isinstance(value, str):
        return None
    match = KEY_RE.match(value.strip())
    if match is None:
        return None
    return match.group(1), None if match.group(2) is None else int(match.group(2))


@dataclass(frozen=True)
class AtlasEntry:
    """One atlas of the deployment.

    Attributes:
        name: the directory's name (the URL's atlas name).
        path: the atlas directory.
        version: the atlas format version of its manifest.
        title: the manifest's title (for the picker).
    """

    name: str
    path: Path
    version: int
    title: str

    @property
    def key(self) -> str:
        """``NAME@VERSION``, as URLs name the atlas."""
        return f"{self.name}@{self.version}"


def _entry(path: Path, name: str) -> AtlasEntry:
    manifest = read_manifest(path)  # raises AtlasError naming the file
    return AtlasEntry(
        name=name,
        path=path,
        version=int(manifest["version"]),
        title=str(manifest.get("title") or name),
    )


def discover(root: Path) -> tuple[tuple[AtlasEntry, ...], bool]:
    """The atlases under ``root`` and whether it is a folder of several.

    ``root`` is one atlas if it holds a ``manifest.json``; otherwise each subdirectory with
    one is an atlas (names that cannot go in a URL unquoted are skipped with a warning).

    Raises:
        AtlasError: the directory is missing, holds no atlas, or a manifest is corrupt.
    """
    if not root.is_dir():
        raise AtlasError(f"atlas directory not found: {root}")
    if (root / MANIFEST).exists():
        return (_entry(root, root.name if NAME_RE.match(root.name) else "atlas"),), False
    entries = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not (child / MANIFEST).is_file():
            continue
        if not NAME_RE.match(child.name):
            log.warning("skipping atlas %s: rename it to letters, digits, '.', '_', '-'", child)
            continue
        entries.append(_entry(child, child.name))
    if not entries:
        raise AtlasError(
            f"missing file {MANIFEST} in {root} (neither an atlas nor a folder of atlases)"
        )
    return tuple(entries), True


class AtlasRegistry:
    """The deployment's atlases by key, each opened lazily and once per worker.

    Args:
        root: an atlas directory or a folder of atlases (see :func:`discover`).
        cache_dir: the derived-result cache directory (shared by all atlases: keys carry
            each atlas's path and manifest digest).
        default: with several atlases, the name of the one opened without ``?atlas=``
            (``None``: the first by name).

    Raises:
        AtlasError: see :func:`discover`; also for an unknown ``default``.
    """

    def __init__(self, root: Path, cache_dir: Path | None, default: str | None = None) -> None:
        self.root = root
        self.cache_dir = cache_dir
        self.entries, self.multi = discover(root)
        self._by_name = {entry.name: entry for entry in self.entries}
        if default is not None and self.multi:
            if default not in self._by_name:
                raise AtlasError(
                    f"NETWORK_ATLAS_DEFAULT names {default!r}, not an atlas in {root} "
                    f"(found: {', '.join(self._by_name)})"
                )
            self.default = self._by_name[default]
        else:
            self.default = self.entries[0]

    def find(self, value: object) -> AtlasEntry | None:
        """The atlas a URL's ``atlas`` value names (``None``/empty: the default).

        ``NAME`` and ``NAME@VERSION`` are accepted; a version other than the atlas's format
        version, an unknown name or junk give ``None`` (the caller shows a friendly note).
        """
        if value is None or value == "" or value == []:
            return self.default
        parsed = parse_key(value)
        if parsed is None:
            return None
        name, version = parsed
        entry = self._by_name.get(name)
        if entry is None and not self.multi and name == self.default.name:
            entry = self.default
        if entry is None or (version is not None and version != entry.version):
            return None
        return entry

    def url_key(self, entry: AtlasEntry) -> str | None:
        """What the URL carries for ``entry``: its key with several atlases, else ``None``
        (a single atlas keeps today's links, with no parameter)."""
        return entry.key if self.multi else None

    def data(self, entry: AtlasEntry) -> atlas_data.AtlasData:
        """The opened atlas (memory-mapped; once per worker; raises :class:`AtlasError`)."""
        return atlas_data.load(str(entry.path), str(self.cache_dir) if self.cache_dir else None)

    def health(self) -> dict[str, object]:
        """Cheap facts for the health check: names, keys and format versions (no paths)."""
        return {
            "status": "ok",
            "default": self.default.key,
            "atlases": [
                {"name": e.name, "key": e.key, "format_version": e.version} for e in self.entries
            ],
        }
