"""Where `tenantry login` keeps its tokens: one 0600 JSON file, per user, per API URL.

`$XDG_CONFIG_HOME/tenantry/credentials.json` (else `~/.config/tenantry/credentials.json`), in a
0700 directory. A file or directory that others can read is refused rather than used (its
tokens may already be copied: sign in again after fixing it). Writes go to a new 0600 file in
the same directory, fsynced, then renamed over the old one, so a crash or two commands at once
never leave a torn file, and the API's refresh-token rotation (each refresh answers a new
refresh token, the old one stops working) is never lost halfway.

Sessions are keyed by the API's URL, so one user can be signed in to several installations.
Only tokens and their expiry are stored, never a password.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

FILE_NAME = "credentials.json"


class TokenFileError(Exception):
    """The token file cannot be used safely (permissions, or not ours to read)."""


def config_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tenantry"


@dataclasses.dataclass(frozen=True)
class Session:
    """A signed-in session at one API."""

    user: str
    access_token: str = dataclasses.field(repr=False)
    refresh_token: str = dataclasses.field(repr=False)
    expires_at: float
    """Unix time the access token expires (as the API's `expires_in` said at issue)."""

    def expired(self, now: float | None = None, margin: float = 30.0) -> bool:
        return (time.time() if now is None else now) >= self.expires_at - margin

    @classmethod
    def issued(cls, user: str, answer: dict[str, Any], now: float | None = None) -> Session:
        """A session from the API's token response (login or refresh)."""
        return cls(user=user, access_token=str(answer["access_token"]),
                   refresh_token=str(answer["refresh_token"]),
                   expires_at=(time.time() if now is None else now)
                   + float(answer.get("expires_in", 0)))


class TokenFile:
    """The sessions file at `path` (default: `config_dir() / credentials.json`)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / FILE_NAME

    def _check_private(self, path: Path, mode: int) -> None:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            raise TokenFileError(f"{path} is a symbolic link; refusing to use it")
        if info.st_uid != os.getuid():
            raise TokenFileError(f"{path} belongs to another user; refusing to use it")
        if stat.S_IMODE(info.st_mode) & ~mode:
            raise TokenFileError(
                f"{path} is accessible to others (mode {stat.S_IMODE(info.st_mode):o}); "
                f"run `chmod {mode:o} {path}` and sign in again, its tokens may be copied")

    def _read_all(self) -> dict[str, Any]:
        try:
            self._check_private(self.path, 0o600)
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            raise TokenFileError(f"{self.path} is not valid JSON; delete it and sign in again") \
                from None
        return data if isinstance(data, dict) else {}

    def load(self, api_url: str) -> Session | None:
        entry = (self._read_all().get("sessions") or {}).get(api_url)
        if not isinstance(entry, dict):
            return None
        try:
            return Session(user=str(entry["user"]), access_token=str(entry["accessToken"]),
                           refresh_token=str(entry["refreshToken"]),
                           expires_at=float(entry["expiresAt"]))
        except (KeyError, TypeError, ValueError):
            return None

    def save(self, api_url: str, session: Session | None) -> None:
        """Store (or, with None, forget) the session for `api_url`, atomically."""
        data = self._read_all()
        sessions = data.setdefault("sessions", {})
        if session is None:
            if api_url not in sessions:
                return
            del sessions[api_url]
        else:
            sessions[api_url] = {"user": session.user, "accessToken": session.access_token,
                                 "refreshToken": session.refresh_token,
                                 "expiresAt": session.expires_at}
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._check_private(directory, 0o700)
        temporary = directory / f".{self.path.name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise


@contextlib.contextmanager
def locked(token_file: TokenFile) -> Any:
    """Hold an exclusive lock on the token file's lock file: one refresh at a time per user,
    so two commands started together do not both spend the same refresh token."""
    import fcntl

    directory = token_file.path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / f".{token_file.path.name}.lock",
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
