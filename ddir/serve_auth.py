"""Who may connect to ``ddir serve`` (SPEC E1): tokens, origins, TLS, and
the gate every WebSocket handshake passes before any command can run.

* **A token always.** Without ``--token-file`` the server makes one at start
  (192 random bits). Either way the token is kept, for a local server, in a
  user-only *runtime file* (``serve-<port>.token`` in :func:`runtime_dir`),
  where ``ddir connect ws://127.0.0.1:<port>`` finds it with no flags, the
  way Jupyter's clients find a local notebook server. ``--no-token`` is an
  explicit opt-out, accepted on a loopback address only.
* **Token files** must be the user's own and readable by nobody else (a 0644
  token is a token for every local user) and hold at least
  :data:`MIN_TOKEN` characters.
* **Origin.** A browser always sends ``Origin``; a page the user visits could
  otherwise drive the server (cross-site WebSocket hijacking). A connection
  with an ``Origin`` header is accepted only from the server's own address
  (its console) or an origin named with ``--allow-origin``. Clients that are
  not browsers send no ``Origin`` and are judged by their token alone.
* **Authorization.** ``Bearer`` is matched case-insensitively; a duplicated
  header, a malformed one or a wrong token is HTTP 401 (never 500). A
  browser cannot set headers on a WebSocket, so ``?token=`` in the request
  path is accepted too (the console's way in). Tokens are compared in
  constant time.
* **Refusals are counted, not flooded.** An address that failed
  :data:`FAILURES_PER_MINUTE` handshakes within a minute gets HTTP 429 for
  every further wrong token until the minute is over (the right token still
  passes: all local clients share one address); refusals are logged on stderr at most
  :data:`LOG_PER_MINUTE` lines a minute, and the rest are summed up in one line.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import os
import secrets
import stat
import sys
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from .options import UsageError

MIN_TOKEN = 16             # characters: a 1-character token is no lock
TOKEN_BYTES = 24           # a made token: 192 bits, base64url
FAILURES_PER_MINUTE = 20   # per client address, then 429 until the minute is over
LOG_PER_MINUTE = 10        # lines about refused handshakes on stderr


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ============================================================ token files


def private_file_problem(path: str, st: os.stat_result) -> str | None:
    """Why a file holding a secret is not private enough (None if it is)."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.getuid():
        return "belongs to another user"
    if st.st_mode & 0o077:
        return (f"can be read or written by others (mode {stat.S_IMODE(st.st_mode):04o}; "
                f"chmod 600 it)")
    return None


def read_secret(path: str, what: str = "token file") -> str:
    """The one blank-free secret in a user-only file (UsageError otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        reason = "is a symbolic link" if e.errno == errno.ELOOP else (e.strerror or str(e))
        raise UsageError(f'cannot read {what} "{path}": {reason}') from None
    try:
        problem = private_file_problem(path, os.fstat(fd))
        if problem:
            raise UsageError(f'{what} "{path}" {problem}')
        with os.fdopen(fd, encoding="utf-8", closefd=False) as f:
            token = f.read(1 << 16).strip()
    except UnicodeDecodeError:
        raise UsageError(f'{what} "{path}" is not text') from None
    finally:
        os.close(fd)
    if not token or any(c.isspace() for c in token):
        raise UsageError(f'{what} "{path}" must hold one token (no blanks), got '
                         f"{'nothing' if not token else 'blanks inside'}")
    if len(token) < MIN_TOKEN:
        raise UsageError(f'{what} "{path}" holds a token of {len(token)} characters: '
                         f"use at least {MIN_TOKEN} (e.g. `python -c 'import secrets; "
                         f"print(secrets.token_urlsafe(24))' > {path}`)")
    return token


def make_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def runtime_dir() -> str:
    """Where a running server keeps its token for local clients:
    ``$DDIR_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/ddir``, else
    ``~/.local/share/ddir/runtime``."""
    if os.environ.get("DDIR_RUNTIME_DIR"):
        return os.environ["DDIR_RUNTIME_DIR"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "ddir")
    return os.path.join(os.path.expanduser("~"), ".local", "share", "ddir", "runtime")


def runtime_file(port: int) -> str:
    return os.path.join(runtime_dir(), f"serve-{port}.token")


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{path} is not a directory of this user's that only they can open")


def write_runtime_file(port: int, token: str) -> str:
    """Keep ``token`` where local clients find it (0600, in a 0700 directory;
    written beside and renamed into place, so a reader never sees half)."""
    path = runtime_file(port)
    _private_dir(os.path.dirname(path))
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_runtime_file(path: str | None, token: str) -> None:
    """At exit: remove it, unless another server has taken the port since."""
    if path is None:
        return
    try:
        if read_secret(path) == token:
            os.unlink(path)
    except (OSError, UsageError):
        pass


def find_local_token(url: str) -> str | None:
    """The token a local server on ``url``'s port keeps (None if none)."""
    parts = urlsplit(url)
    if parts.hostname is None or not is_loopback(parts.hostname) or parts.port is None:
        return None
    path = runtime_file(parts.port)
    if not os.path.exists(path):
        return None
    return read_secret(path, "the local server's token file")


# ============================================================ origins


def own_origins(host: str, port: int, tls: bool) -> set:
    """The origins of pages served by this server itself (its console)."""
    scheme = "https" if tls else "http"
    names = {host if ":" not in host else f"[{host}]"}
    if is_loopback(host) or host in ("0.0.0.0", "::", ""):
        names |= {"localhost", "127.0.0.1", "[::1]"}
    return {f"{scheme}://{n}:{port}" for n in names}


def parse_origins(text: str | None) -> set:
    if not text:
        return set()
    out = set()
    for o in text.split(","):
        o = o.strip().rstrip("/")
        parts = urlsplit(o)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise UsageError(f"--allow-origin needs origins like https://host[:port], got `{o}`")
        out.add(o.lower())
    return out


# ============================================================ the handshake gate


class RefusalLog:
    """At most ``per_minute`` lines a minute on ``out``; the rest counted and
    summed up in one line once the minute is over."""

    def __init__(self, per_minute: int = LOG_PER_MINUTE, out=None, clock=time.monotonic):
        self.per_minute = per_minute
        self.out = out
        self.clock = clock
        self.window = clock()
        self.shown = 0
        self.hidden = 0

    def refused(self, address: str, why: str) -> None:
        now = self.clock()
        if now - self.window >= 60:
            if self.hidden:
                self._say(f"ddir: {self.hidden} more refused connections in the last minute "
                          f"(not shown)")
            self.window, self.shown, self.hidden = now, 0, 0
        if self.shown < self.per_minute:
            self.shown += 1
            self._say(f"ddir: refused a connection from {address}: {why}")
        else:
            self.hidden += 1

    def _say(self, line: str) -> None:
        try:
            print(line, file=self.out or sys.stderr, flush=True)
        except (OSError, ValueError):
            pass


class Gate:
    """``process_request`` for websockets: token, origin, rate limit and the
    connection cap, before the WebSocket opens."""

    def __init__(self, token: str | None, allowed_origins: set, log: RefusalLog | None = None,
                 full=lambda: False, clock=time.monotonic):
        self.expected = token.encode() if token is not None else None
        self.allowed = {o.lower() for o in allowed_origins}
        self.log = log or RefusalLog()
        self.full = full          # () -> True when no connection may be added
        self.clock = clock
        self.failures: dict = {}  # address -> (window start, failures in it)

    def __call__(self, connection, request):
        address = _address(connection)
        try:
            refusal = self.check(address, request.headers, request.path)
        except Exception:  # whatever a header holds, never a 500
            refusal = (HTTPStatus.BAD_REQUEST, "malformed request")
        if refusal is None:
            return None
        status, why = refusal
        if status == HTTPStatus.UNAUTHORIZED:
            self._failed(address)
        if status != HTTPStatus.TOO_MANY_REQUESTS:
            self.log.refused(address, why)
        return connection.respond(status, f"{status.value} {status.phrase}: {why}\n")

    def check(self, address: str, headers, path: str):
        """None, or (HTTP status, why)."""
        origins = headers.get_all("Origin")
        if origins and (len(origins) > 1 or origins[0].strip().rstrip("/").lower()
                        not in self.allowed):
            return (HTTPStatus.FORBIDDEN, f"origin {origins[0][:100]!r} is not allowed "
                    f"(the server's own console and --allow-origin are)")
        if self.expected is not None:
            why = self._token_problem(headers.get_all("Authorization"), path)
            if why is not None and self._limited(address):
                # (the right token still passes: loopback clients share one
                # address, and a neighbour's failures must not lock them out)
                return HTTPStatus.TOO_MANY_REQUESTS, "too many failed handshakes; wait a minute"
            if why is not None:
                return HTTPStatus.UNAUTHORIZED, why
        if self.full():
            return HTTPStatus.SERVICE_UNAVAILABLE, "too many connections; try again later"
        return None

    def _token_problem(self, values: list, path: str) -> str | None:
        if len(values) > 1:
            return "more than one Authorization header"
        if values:
            scheme, _, token = values[0].strip().partition(" ")
            if scheme.lower() != "bearer":
                return "send `Authorization: Bearer <token>`"
            return None if self._matches(token.strip()) else "wrong token"
        query = parse_qs(urlsplit(path).query).get("token")
        if query:
            return None if len(query) == 1 and self._matches(query[0]) else "wrong token"
        return "no token (send `Authorization: Bearer <token>`)"

    def _matches(self, token: str) -> bool:
        return hmac.compare_digest(token.encode("utf-8", "replace"), self.expected)

    def _limited(self, address: str) -> bool:
        entry = self.failures.get(address)
        if entry is None:
            return False
        start, n = entry
        if self.clock() - start >= 60:
            del self.failures[address]
            return False
        return n >= FAILURES_PER_MINUTE

    def _failed(self, address: str) -> None:
        now = self.clock()
        start, n = self.failures.get(address, (now, 0))
        if now - start >= 60:
            start, n = now, 0
        self.failures[address] = (start, n + 1)
        if len(self.failures) > 10_000:  # many addresses: keep the table bounded
            for a in [a for a, (s, _) in self.failures.items() if now - s >= 60]:
                del self.failures[a]


def _address(connection) -> str:
    try:
        return str(connection.remote_address[0])
    except Exception:
        return "?"


def tls_context(certfile: str, keyfile: str):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"cannot use --certfile/--keyfile: {getattr(e, 'strerror', None) or e}")
    return ctx
