"""Atomic file writes (a reader sees the old file or the whole new one, never a partial write)
and the one-writer lock of a workdir."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import tempfile

from jaxscale.errors import JaxscaleError

LOCK_NAME = ".jaxscale.lock"   # in a workdir: flock'ed by the process that writes it
_HELD: dict[str, int] = {}     # real path of a lock file this process holds -> its descriptor


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through a temp file in the same folder, fsync and `os.replace`.

  The file gets the permissions of any newly created file (0666 minus the umask, 0644 usually),
  not the 0600 of the temp file, so results read like the figures beside them.
  """
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str, data: bytes) -> None:
  """:func:`atomic_write_text` for bytes (e.g. a ``.npy`` file)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fchmod(f.fileno(), 0o666 & ~_umask())
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and e.filename is None:  # a write or sync refused: name the file
      raise OSError(e.errno, e.strerror or str(e), path) from e
    raise


def lock_workdir(workdir: str, command: str) -> None:
  """Takes `workdir`'s write lock (an exclusive ``flock`` on ``workdir/.jaxscale.lock``, creating
  the folder), so one process at a time writes a workdir; taking it again in the holder is a no-op.

  The lock is held until :func:`release_locks` (the CLI calls it when a command ends) or the
  process exits in any way (the OS drops a dead process's locks). A workdir another process holds
  is refused in one line naming that process.
  """
  path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    real = os.path.realpath(path)
    if real in _HELD:
      return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise JaxscaleError(f"cannot write to workdir {workdir!r} ({e.strerror}); pass a writable --workdir") from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = _holder(fd)
    os.close(fd)
    if isinstance(e, BlockingIOError):
      raise JaxscaleError(f"workdir {workdir!r} is in use by {holder}; one process writes a workdir at a "
                          "time: wait for it to end, or pass another --workdir") from None
    raise JaxscaleError(f"cannot lock workdir {workdir!r} ({e.strerror}); use a --workdir on a file "
                        "system with file locks") from None
  os.ftruncate(fd, 0)
  os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command}).encode())
  _HELD[real] = fd


def _holder(fd: int) -> str:
  """Who holds a lock, from what it wrote into the lock file."""
  try:
    info = json.loads(os.pread(fd, 4096, 0) or b"{}")
  except (OSError, ValueError):
    info = {}
  if "pid" not in info:
    return "another process (pid unknown)"
  host = f" on {info['host']}" if info.get("host") not in (None, socket.gethostname()) else ""
  return f"another process (pid {info['pid']}{host}: {info.get('command', 'jaxscale')})"


def release_locks() -> None:
  """Releases every workdir lock this process took (:func:`lock_workdir`)."""
  while _HELD:
    _, fd = _HELD.popitem()
    try:
      os.ftruncate(fd, 0)
    except OSError:
      pass
    os.close(fd)  # closing the descriptor drops its flock


def check_writable(path: str, what: str) -> None:
  """Refuses, before any work, an output file `path` that cannot be written: a folder, or a place
  where no file can be created (read-only, missing permissions, a file in the way). `what` names
  the option in the message (e.g. ``--out``). Creates the missing folders of `path`."""
  if os.path.isdir(path):
    raise JaxscaleError(f"{what} {path} is a folder; give a file path, e.g. {os.path.join(path, 'fits.json')}")
  check_folder(os.path.dirname(os.path.abspath(path)), what, shown=path)


def check_folder(folder: str, what: str, shown: str | None = None) -> None:
  """Refuses, before any work, a `folder` where no file can be created (read-only, missing
  permissions, a file in the way); creates it when missing. `what` names the option in the message."""
  shown = shown or folder
  above = os.path.abspath(folder)
  while not os.path.exists(above) and os.path.dirname(above) != above:
    above = os.path.dirname(above)
  if not os.path.isdir(above):
    raise JaxscaleError(f"cannot write {what} {shown}: {above} is a file, not a folder; choose another path")
  try:
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-test-", suffix=".probe", dir=folder)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise JaxscaleError(f"cannot write {what} {shown}: {e.strerror or e} ({errno_name(e)}); choose a path "
                        "in a folder you may write") from None


def errno_name(e: OSError) -> str:
  """The symbolic name of an OSError's errno (``ENOSPC``), or its number."""
  import errno
  return errno.errorcode.get(e.errno, str(e.errno))


# tensorstore (orbax's writer) reports a refused write as text: ... "PATH": ... [os_error_code='28']
_TENSORSTORE_ERRNO = re.compile(r"\[os_error_code='?(\d+)'?\]")
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')


def os_error_of(exc: BaseException | None) -> OSError | None:
  """The file-system refusal behind `exc`: an OSError with an errno in its cause/context chain, or
  one rebuilt from a tensorstore message's ``os_error_code`` and last quoted path; else None."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno:
      return exc
    text = str(exc)
    m = _TENSORSTORE_ERRNO.search(text)
    if m:
      code, paths = int(m.group(1)), _QUOTED_PATH.findall(text[: m.start()])
      return OSError(code, os.strerror(code), paths[-1] if paths else None)
    exc = exc.__cause__ or exc.__context__
  return None


def describe_os_error(e: OSError) -> str:
  """``'PATH': words (ENAME)`` of a refused file operation (both paths of a rename)."""
  where = " -> ".join(repr(os.fspath(p)) for p in (e.filename, e.filename2) if p is not None)
  name = errno_name(e) if e.errno else ""
  words = e.strerror or str(e) or type(e).__name__
  return (f"{where}: " if where else "") + words + (f" ({name})" if name else "")
