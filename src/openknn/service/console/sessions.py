"""Who may use the console, and proof that a form came from it.

With ``--auth FILE`` a person signs in with one of FILE's key pairs (the access key id and its
secret, as the API's callers sign with them): the console then sets a session cookie, a random
token that only this process knows (kept in memory, so a restart signs everyone out), HttpOnly
(no script reads it) and SameSite=Strict (no other site's page sends it). Without ``--auth`` the
console is open, as the API is, to whoever reaches the port.

Either way every POST carries the session's CSRF token (a form field, or a header for the
page's fetches), and one whose ``Origin`` names another site is refused: a page elsewhere that
makes the browser post to ``127.0.0.1`` (which needs no cookie when the console is open) can
neither read the token nor pass the check."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from openknn.service.auth import Keys
from openknn.service.routing import DEFAULT_ACCOUNT, account_for

COOKIE = "openknn_console"
IDLE_S = 12 * 3600.0  # a session unused this long is signed out
MAX_SESSIONS = 1024  # the oldest go first past this many (each sign-in makes one)
CSRF_HEADER = "x-openknn-csrf"


@dataclass
class Session:
    """One signed-in browser (or the open console's one session, ``access_key`` None)."""

    token: str
    access_key: str | None
    csrf: str
    seen: float

    @property
    def account(self) -> str:
        """The account of the API calls made for this person: the key's, as the API's rule
        gives it (a 12-digit key id is its own account)."""
        return DEFAULT_ACCOUNT if self.access_key is None else account_for(self.access_key)


class Sessions:
    """The console's sessions: one open one without keys, signed-in ones with them."""

    def __init__(self, keys: Keys | None, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.clock = clock
        self._open = Session("", None, secrets.token_urlsafe(32), clock())
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        """Whether people must sign in (the service runs with ``--auth``)."""
        return self.keys is not None

    def sign_in(self, access_key: str, secret: str) -> Session | None:
        """A new session for a key pair of the file, or None. The secret is compared in
        constant time, against a dummy one for an unknown key, so timing tells nothing."""
        if self.keys is None:
            return self._open
        expected = self.keys.secret(access_key)
        matches = hmac.compare_digest((expected or secrets.token_hex(16)).encode(),
                                      secret.encode())
        if expected is None or not matches:
            return None
        session = Session(secrets.token_urlsafe(32), access_key, secrets.token_urlsafe(32),
                          self.clock())
        with self._lock:
            self._by_token[session.token] = session
            while len(self._by_token) > MAX_SESSIONS:
                self._by_token.pop(next(iter(self._by_token)))
        return session

    def find(self, cookie_header: str | None) -> Session | None:
        """The session a request belongs to: the open one without keys; with them, the one its
        cookie names if it has not been idle too long, else None."""
        if self.keys is None:
            return self._open
        token = cookie_token(cookie_header or "")
        now = self.clock()
        with self._lock:
            session = self._by_token.get(token or "")
            if session is None:
                return None
            if now - session.seen > IDLE_S:
                del self._by_token[session.token]
                return None
            session.seen = now
        return session

    def sign_out(self, session: Session) -> None:
        with self._lock:
            self._by_token.pop(session.token, None)


def cookie_token(cookie_header: str) -> str | None:
    """The console's token in a ``Cookie`` header, if there is one."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return None if morsel is None else morsel.value


def set_cookie(session: Session) -> str:
    """The ``Set-Cookie`` value that signs a browser in (a session cookie: gone when the
    browser closes, or after IDLE_S unused here)."""
    return f"{COOKIE}={session.token}; Path=/; HttpOnly; SameSite=Strict"


def clear_cookie() -> str:
    return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"


def csrf_ok(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode())


def same_origin(headers: Mapping[str, str]) -> bool:
    """Whether a POST comes from a page of this service: its ``Origin`` (when the browser
    sends one) names the host it was sent to. ``headers`` have lower-case names."""
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


def safe_next(target: str | None, default: str) -> str:
    """Where to go after signing in: a path of this service only (never another site, which
    ``//host`` or a scheme would name)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
