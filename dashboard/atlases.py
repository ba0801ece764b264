"""The atlases of a deployment and the one the current request shows (no Dash).

``NETWORK_ATLAS_DIR`` names one atlas directory (as locally) or a folder whose
subdirectories are atlases. Each atlas is named by its directory and its format version,
``NAME@VERSION`` (e.g. ``digits@1``): the key a URL's ``?atlas=`` carries, so a link keeps
working when atlases are added to the folder, and a link to an atlas that was rebuilt in
another format is recognised as stale instead of showing different data.

At start every manifest is read and checked (a corrupt one stops the start, naming the
file); the arrays of an atlas are opened lazily, once per worker, memory-mapped
(:func:`dashboard.data.open_atlas`), the first time a request asks for it.

A folder of atlases is re-scanned while the app runs (:meth:`AtlasRegistry.refresh`), so
an atlas added to it appears without a restart and a removed one disappears: a request
looks at the folder at most every :data:`RESCAN_SECONDS` per worker (one ``stat``: a
directory's modification time changes when an entry is added, removed or renamed in it;
other requests only compare the clock), and a request naming an atlas this worker does
not know looks at once. Manifests are
re-read only when the folder changed, or every :data:`FULL_RESCAN_SECONDS` (atlases
updated in place; file systems whose folder times are unreliable). Directories whose
names start with ``.`` are never atlases: :class:`compute.atlas.AtlasWriter` builds an atlas
in ``.NAME.tmp-*`` and renames it into place when complete, so a half-written atlas is
never shown.

Which atlas a request shows is a :class:`~contextvars.ContextVar` (:func:`current_key`,
:func:`use`), set by the factory's request hook from the page's URL; pure helpers such as
:mod:`dashboard.links` read it to keep links on the same atlas. A callback of a page whose
atlas was removed since it was opened keeps the removed atlas's key: reaching its data
raises :class:`AtlasGone` (the app shows a page-wide alert) instead of quietly serving
another atlas under the page's name.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from pathlib import Path

from compute.atlas import MANIFEST, AtlasError, read_manifest
from dashboard import data as atlas_data
from dashboard.state import ATLAS_KEY_RE as KEY_RE

log = logging.getLogger(__name__)

#: Seconds between two looks (a ``stat``) at a folder of atlases, per worker.
RESCAN_SECONDS = 2.0
#: Every manifest is re-read at least this often (seconds), even if the folder's
#: modification time did not change.
FULL_RESCAN_SECONDS = 30.0

#: An atlas name (its directory's name) usable in a URL unquoted.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

_CURRENT: ContextVar[str | None] = ContextVar("network_atlas_current_atlas", default=None)


class AtlasGone(LookupError):
    """The request names an atlas this deployment no longer serves (removed, renamed or
    rebuilt in another format while a page showing it stayed open).

    Raised where a view reaches the request's atlas, so no view shows another atlas's data
    under the page's name; the app answers with a page-wide alert
    (:func:`dashboard.factory.atlas_gone_alert`).

    Attributes:
        key: what the request named (a string; cut to 80 characters).
    """

    def __init__(self, key: str) -> None:
        self.key = key[:80]
        super().__init__(f"the atlas {self.key!r} is no longer served here")


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
        stamp: identifies the manifest file read (device, inode, modification time, size):
            an atlas rebuilt or updated under the same name is another entry, so a worker
            opens it afresh instead of serving the old arrays.
    """

    name: str
    path: Path
    version: int
    title: str
    stamp: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        """``NAME@VERSION``, as URLs name the atlas."""
        return f"{self.name}@{self.version}"


def _entry(path: Path, name: str) -> AtlasEntry:
    # Stat before reading: a manifest replaced in between gives a stamp that a later scan
    # sees changed (never an old stamp on new content).
    try:
        info = (path / MANIFEST).stat()
    except OSError:
        info = None
    manifest = read_manifest(path)  # raises AtlasError naming the file
    stamp = () if info is None else (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
    return AtlasEntry(
        name=name,
        path=path,
        version=int(manifest["version"]),
        title=str(manifest.get("title") or name),
        stamp=stamp,
    )


def discover(root: Path, *, strict: bool = True) -> tuple[tuple[AtlasEntry, ...], bool]:
    """The atlases under ``root`` and whether it is a folder of several.

    ``root`` is one atlas if it holds a ``manifest.json``; otherwise each subdirectory with
    one is an atlas (names that cannot go in a URL unquoted are skipped with a warning;
    names starting with ``.``, such as a writer's ``.NAME.tmp-*``, are not atlases).

    Args:
        root: an atlas directory or a folder of atlases.
        strict: raise for a corrupt manifest in the folder (at start); ``False`` skips it
            with a logged error (a re-scan while serving: the others stay served).

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
        try:
            entries.append(_entry(child, child.name))
        except AtlasError as exc:
            if strict:
                raise
            log.error("skipping atlas %s: %s", child.name, exc)
    if not entries:
        raise AtlasError(
            f"missing file {MANIFEST} in {root} (neither an atlas nor a folder of atlases)"
        )
    return tuple(entries), True


@dataclass(frozen=True)
class _Scan:
    """One consistent view of the folder: its atlases, by name, and the default."""

    entries: tuple[AtlasEntry, ...]
    by_name: dict[str, AtlasEntry]
    default: AtlasEntry


def _folder_stamp(root: Path) -> tuple[int, ...] | None:
    """What changes when an entry of ``root`` is added, removed or renamed (one ``stat``)."""
    try:
        info = root.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_mtime_ns)


class AtlasRegistry:
    """The deployment's atlases by key, each opened lazily and once per worker.

    A folder of atlases is re-scanned while serving (:meth:`refresh`); a single atlas
    directory is watched for an update in place or a replacement (its manifest's identity).

    Args:
        root: an atlas directory or a folder of atlases (see :func:`discover`).
        cache_dir: the derived-result cache directory (shared by all atlases: keys carry
            each atlas's path and manifest digest).
        default: with several atlases, the name of the one opened without ``?atlas=``
            (``None``: the first by name; the default stays the same while it exists, even
            when an atlas sorting before it is added).
        clock: seconds, monotonic (tests pass a fake one).

    Raises:
        AtlasError: see :func:`discover`; also for an unknown ``default``.
    """

    def __init__(
        self,
        root: Path,
        cache_dir: Path | None,
        default: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.cache_dir = cache_dir
        self._default_name = default
        self._clock = clock
        self._lock = threading.Lock()
        self._opened: dict[AtlasEntry, atlas_data.AtlasData] = {}
        stamp = _folder_stamp(root)
        entries, self.multi = discover(root)
        self._scan = self._snapshot(entries, None)
        if default is not None and self.multi and default not in self._scan.by_name:
            raise AtlasError(
                f"NETWORK_ATLAS_DEFAULT names {default!r}, not an atlas in {root} "
                f"(found: {', '.join(self._scan.by_name)})"
            )
        self._stamp = stamp
        self._checked = self._scanned = clock()

    def _snapshot(self, entries: tuple[AtlasEntry, ...], previous: AtlasEntry | None) -> _Scan:
        """The scan of ``entries``; the default: the configured name, else the previous
        default's name, else the first by name (whichever exists)."""
        by_name = {entry.name: entry for entry in entries}
        default = entries[0]
        if self.multi:
            for name in (self._default_name, previous.name if previous else None):
                if name is not None and name in by_name:
                    default = by_name[name]
                    break
        return _Scan(entries, by_name, default)

    @property
    def entries(self) -> tuple[AtlasEntry, ...]:
        """The atlases served, sorted by name (as of the last scan)."""
        return self._scan.entries

    @property
    def default(self) -> AtlasEntry:
        """The atlas a URL without ``?atlas=`` shows."""
        return self._scan.default

    def refresh(self, *, now: bool = False) -> bool:
        """Re-scan a folder of atlases if it may have changed; whether the atlases changed.

        Cheap: at most every :data:`RESCAN_SECONDS` (``now``: at once) the folder is
        ``stat``-ed; its manifests are read again only if it changed or the last full scan
        is :data:`FULL_RESCAN_SECONDS` old. A folder that became empty or unreadable keeps
        the last atlases (logged): a deployment always serves something.

        Args:
            now: look at the folder even if it was looked at recently (a request naming an
                atlas this worker does not know).
        """
        started = self._clock()
        if not now and started - self._checked < RESCAN_SECONDS:
            return False
        if not self.multi:
            return self._refresh_single(started)
        with self._lock:
            self._checked = started
            stamp = _folder_stamp(self.root)
            if stamp == self._stamp and started - self._scanned < FULL_RESCAN_SECONDS:
                return False
            try:
                entries, multi = discover(self.root, strict=False)
            except (AtlasError, OSError) as exc:
                log.warning("atlas folder %s not re-scanned: %s", self.root, exc)
                return False
            # Stamped before the scan: a change during it is seen by the next look.
            self._stamp, self._scanned = stamp, started
            if not multi:  # someone put a manifest.json into the folder itself
                log.warning("atlas folder %s now holds a manifest.json: ignored", self.root)
                return False
            if entries == self._scan.entries:
                return False
            self._scan = self._snapshot(entries, self._scan.default)
            self._opened = {e: d for e, d in self._opened.items() if e in entries}
        log.info("atlases now served: %s", ", ".join(e.key for e in entries))
        return True

    def _refresh_single(self, started: float) -> bool:
        """A single atlas updated in place (``featurevis`` added a part) or replaced whole
        (a rebuild renames a new directory into place) is served anew, arrays and files
        together: its manifest's identity (device, inode, time, size) changed."""
        with self._lock:
            self._checked = started
            current = self._scan.default
            try:
                info = (self.root / MANIFEST).stat()
            except OSError:
                return False  # mid-replacement, or removed: keep serving what we have
            if (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size) == current.stamp:
                return False
            try:
                entry = _entry(self.root, current.name)
            except (AtlasError, OSError) as exc:
                log.warning(
                    "atlas %s changed but cannot be read (%s): still serving the old",
                    self.root,
                    exc,
                )
                return False
            self._scan = self._snapshot((entry,), None)
            self._opened = {}
        log.info("atlas %s changed on disk: serving it anew", entry.name)
        return True

    def find(self, value: object) -> AtlasEntry | None:
        """The atlas a URL's ``atlas`` value names (``None``/empty: the default).

        ``NAME`` and ``NAME@VERSION`` are accepted; a version other than the atlas's format
        version, an unknown name or junk give ``None`` (the caller shows a friendly note).
        A well-formed name this worker does not know makes it look at the folder first
        (:meth:`refresh`): the page may come from a worker that saw a new atlas sooner.
        """
        if value is None or value == "" or value == []:
            return self.default
        parsed = parse_key(value)
        if parsed is None:
            return None
        entry = self._lookup(*parsed)
        if entry is None and self.refresh(now=True):
            entry = self._lookup(*parsed)
        return entry

    def _lookup(self, name: str, version: int | None) -> AtlasEntry | None:
        scan = self._scan
        entry = scan.by_name.get(name)
        if entry is None and not self.multi and name == scan.default.name:
            entry = scan.default
        if entry is None or (version is not None and version != entry.version):
            return None
        return entry

    def url_key(self, entry: AtlasEntry) -> str | None:
        """What the URL carries for ``entry``: its key with several atlases, else ``None``
        (a single atlas keeps today's links, with no parameter)."""
        return entry.key if self.multi else None

    def data(self, entry: AtlasEntry) -> atlas_data.AtlasData:
        """The opened atlas (memory-mapped; once per worker and manifest; raises
        :class:`AtlasError`)."""
        found = self._opened.get(entry)
        if found is None:
            cache = str(self.cache_dir) if self.cache_dir else None
            found = atlas_data.open_atlas(str(entry.path), cache)
            with self._lock:
                self._opened[entry] = found
        return found

    def health(self) -> dict[str, object]:
        """Cheap facts for the health check: names, keys and format versions (no paths)."""
        scan = self._scan
        return {
            "status": "ok",
            "default": scan.default.key,
            "atlases": [
                {"name": e.name, "key": e.key, "format_version": e.version} for e in scan.entries
            ],
        }
