"""Where a store may be written: format markers, one writer per store, safe replacement.

mam_xr replaces a path only if it wrote it (a run store, structure store or
sweep directory, recognised by its format marker) and only if no live process
is writing it.  The writer of a run store holds ``<store>.lock`` (host, pid,
start time as JSON) for the whole run; a lock left by a dead process is
detected and reported.  A new store is written beside the path and renamed in
(:func:`swap_in`), so a half-made store never sits at the path.  See
docs/run-store.md ("One writer", "Overwrite").
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

from .errors import StoreError, invalid

#: Format identifiers written into (and required from) the group attrs.
RUN_FORMAT = "mam_xr.run/1"
STRUCTURE_FORMAT = "mam_xr.structure/1"
SWEEP_FORMAT = "mam_xr.sweep/1"
#: Root attr of a store written by ``mam-xr theory --out`` (groups theory, fixed_point, atlas).
THEORY_FORMAT = "mam_xr.theory/1"


#: Bytes the writer's lock file reserves (padding after the holder JSON): freed
#: on a failure so that the status can still be recorded on a full disk.
LOCK_RESERVE = 256 * 2**10

_HELD: dict[str, "StoreLock"] = {}  # store path -> lock held by this process


def lock_path(path) -> Path:
    """The lock file of the store at ``path``: ``<store>.lock`` beside it."""
    p = Path(os.fspath(path))
    return p.with_name(p.name + ".lock")


def held_lock(path) -> "StoreLock | None":
    """The writer lock this process holds on the store at ``path``, if any."""
    return _HELD.get(_key(path))


def _key(path) -> str:
    return str(Path(os.fspath(path)).resolve())


def _read_holder(lp: Path) -> dict | None:
    try:
        text = lp.read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return {"raw": text[:200]}
    return info if isinstance(info, dict) else None


def describe_holder(info: dict | None) -> str:
    """``pid 123 on host h since 2026-01-01T10:00:00Z`` for a lock holder's JSON."""
    import time

    if not info:
        return "an unknown process"
    if "raw" in info:
        return f"an unknown process (lock file says {info['raw']!r})"
    when = info.get("started")
    since = (f" since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(float(when)))}"
             if isinstance(when, (int, float)) else "")
    return f"pid {info.get('pid')} on host {info.get('host')}{since}"


def lock_holder(path) -> dict | None:
    """Who holds the writer lock of the store at ``path``, without taking it.

    Returns None when no lock file exists or it is empty (no writer, or one
    that ended cleanly); else the holder's JSON (``host``, ``pid``,
    ``started``, ``store``) with ``alive``: True if the lock is held now,
    False if the holder died without releasing it (a stale lock).
    """
    import filelock

    lp = lock_path(path)
    if not lp.exists():
        return None
    info = _read_holder(lp)
    key = _key(path)
    if key in _HELD:
        return {**(info or {}), "alive": True}
    probe = filelock.FileLock(str(lp), timeout=0)
    try:
        probe.acquire()
    except filelock.Timeout:
        return {**(info or {}), "alive": True}
    except OSError:
        return None if info is None else {**info, "alive": None}
    probe.release()
    return None if info is None else {**info, "alive": False}


class StoreLock:
    """The writer lock of one store: ``<store>.lock`` (an OS file lock via
    ``filelock``) holding the writer's host, pid and start time as JSON.

    Acquired with :meth:`acquire` (never waits); a store locked by another
    live process raises :class:`StoreError` naming it.  A lock file left by a
    writer that died (the OS released its lock) is reported as stale with a
    warning and taken over.  The file also reserves :data:`LOCK_RESERVE` bytes
    that :meth:`free_reserve` gives back when a failure has to be recorded on
    a full disk.  Released (and its file removed) by :meth:`release`.
    """

    def __init__(self, path):
        self.path = Path(os.fspath(path))
        self.file = lock_path(self.path)
        self.stale: dict | None = None
        self._lock = None

    def acquire(self) -> "StoreLock":
        import filelock
        import socket
        import time

        key = _key(self.path)
        if key in _HELD:
            raise StoreError(invalid("store", str(self.path), "a store no other writer is using (this process "
                                     f"is already writing it; lock {self.file})"))
        previous = _read_holder(self.file)
        lock = filelock.FileLock(str(self.file), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise StoreError(invalid("store", str(self.path), "a store no other writer is using: it is being "
                                     f"written by {describe_holder(previous)} (lock {self.file}); wait for "
                                     "that run to end or stop it")) from None
        except OSError as exc:
            raise StoreError(invalid("store", str(self.path), f"a path whose lock file {self.file} can be "
                                     f"created ({exc.strerror or exc})")) from exc
        self._lock = lock
        if previous:
            self.stale = previous
            warnings.warn(f"stale lock {self.file} of {describe_holder(previous)} found: that writer ended "
                          "without releasing it (killed or crashed); taking it over", stacklevel=3)
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                "store": str(self.path)}
        try:
            with open(self.file, "r+") as f:
                f.seek(0)
                f.truncate()
                text = json.dumps(info)
                f.write(text + "\n" + " " * max(0, LOCK_RESERVE - len(text) - 1))
                f.flush()
        except OSError as exc:
            self.release()
            raise StoreError(invalid("store", str(self.path), f"a file system with room for the lock file "
                                     f"{self.file} ({exc.strerror or exc})")) from exc
        self.info = info
        _HELD[key] = self
        return self

    def free_reserve(self) -> None:
        """Give back the reserved bytes (keep the holder JSON)."""
        try:
            with open(self.file, "r+") as f:
                f.truncate(len(json.dumps(self.info)) + 1)
        except (OSError, AttributeError):
            pass

    def release(self) -> None:
        """Release the lock and remove its file (a no-op if not held)."""
        _HELD.pop(_key(self.path), None)
        if self._lock is None:
            return
        try:
            self.file.unlink(missing_ok=True)  # while still held: no one else owns this file
        except OSError:
            try:  # cannot remove (permissions): leave an empty file = no holder
                with open(self.file, "r+") as f:
                    f.truncate(0)
            except OSError:
                pass
        self._lock.release()
        self._lock = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def release_lock(path) -> None:
    """Release the writer lock this process holds on the store at ``path`` (if any)."""
    lock = _HELD.get(_key(path))
    if lock is not None:
        lock.release()


def store_kind(path) -> str | None:
    """What mam_xr wrote at ``path``: ``'run'``, ``'structure'``, ``'theory'``, ``'sweep'``, or None.

    Decided by the format marker only: ``zarr.json`` attributes ``format``
    (run, structure and theory stores) or ``sweep.json`` ``format`` (sweep directories).
    """
    p = Path(os.fspath(path))
    for marker, kinds in (("zarr.json", {RUN_FORMAT: "run", STRUCTURE_FORMAT: "structure",
                                           THEORY_FORMAT: "theory"}),
                          ("sweep.json", {SWEEP_FORMAT: "sweep"})):
        f = p / marker
        if not f.is_file():
            continue
        try:
            meta = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        fmt = meta.get("attributes", {}).get("format") if marker == "zarr.json" else meta.get("format")
        if fmt in kinds:
            return kinds[fmt]
    return None


def check_replaceable(path, *, name: str = "store", flag: str = "overwrite=True") -> Path:
    """Refuse to replace anything mam_xr did not write; return the path.

    ``path`` may be replaced if it does not exist, is an empty directory, or is
    a mam_xr run store, structure store or sweep directory (by its format
    marker) that no live writer holds.  Refused, with a :class:`StoreError`
    naming the path and why: a plain file, a symbolic link, the working
    directory or one of its parents, the home directory, any other directory,
    and a store locked by another writer.  ``name`` and ``flag`` are how the
    caller names the target and the overwrite option in messages.
    """
    p = Path(os.fspath(path))
    if not (p.exists() or p.is_symlink()):
        return p
    why = None
    resolved = p.resolve()
    cwd = Path.cwd().resolve()
    if p.is_symlink():
        why = "it is a symbolic link"
    elif resolved == cwd:
        why = "it is the working directory"
    elif resolved in cwd.parents:
        why = "it is a parent of the working directory"
    elif resolved == Path.home().resolve():
        why = "it is the home directory"
    elif not p.is_dir():
        why = "it is a file, not a mam_xr store"
    elif any(p.iterdir()) and store_kind(p) is None:
        why = ("it is not a mam_xr store or sweep directory (no mam_xr format marker in its "
               "zarr.json or sweep.json)")
    if why:
        raise StoreError(invalid(name, str(p), f"a new path or a mam_xr store to replace with {flag}; "
                                 f"{why}, and mam_xr only replaces what it wrote"))
    return check_unlocked(p, name=name)


def check_unlocked(path, *, name: str = "store") -> Path:
    """Raise :class:`StoreError` naming the holder if another live process
    holds the writer lock of the store at ``path`` (e.g. before a sweep
    clears a point directory); return the path."""
    p = Path(os.fspath(path))
    holder = None if _key(p) in _HELD else lock_holder(p)  # our own lock: we are that writer
    if holder and holder.get("alive"):
        raise StoreError(invalid(name, str(p), f"a store no other writer is using: it is being written by "
                                 f"{describe_holder(holder)} (lock {lock_path(p)})"))
    return p


def check_target(path, overwrite: bool, *, name: str = "store", flag: str = "overwrite=True") -> Path:
    """Check, before any work, that a new store may be written at ``path``:
    it must not exist unless ``overwrite`` (then :func:`check_replaceable`)."""
    p = Path(os.fspath(path))
    if (p.exists() or p.is_symlink()) and not overwrite:
        if p.is_dir() or p.is_symlink():
            raise StoreError(invalid(name, str(p), f"a path that does not exist yet (or {flag})"))
        raise StoreError(invalid(name, str(p), "a directory path for a Zarr store; it is a file"))
    return check_replaceable(p, name=name, flag=flag) if overwrite else p


def swap_in(new, path) -> Path:
    """Replace ``path`` (checked by :func:`check_replaceable`) by the store
    written beside it at ``new``: rename the old one aside, rename the new one
    in, then delete the old one.  Each rename is atomic; the old store is only
    deleted once the new one is in place."""
    new, path = Path(new), Path(path)
    if path.exists():
        check_replaceable(path)
        aside = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.rename(path, aside)
        try:
            os.rename(new, path)
        except OSError:
            os.rename(aside, path)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(new, path)
    return path


def remove_store(path) -> None:
    """Delete a store mam_xr wrote (checked by :func:`check_replaceable`)."""
    p = check_replaceable(path)
    if p.exists():
        shutil.rmtree(p)
