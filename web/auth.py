"""Signing in: argon2 passwords, server-side sessions, CSRF on every form, login throttling.

The session cookie holds 32 random bytes; the store keeps only their SHA-256
(``web_sessions``), so a leaked table opens nothing.  The cookie is HttpOnly
and SameSite=Lax (and Secure when ``[web] secure_cookies``).  A session ends
at logout, after ``IDLE`` without a request, at ``LIFETIME``, or when its
user changes the password (every other session of that user ends too).

Every state-changing request of a signed-in browser carries the session's
CSRF token (``_csrf`` form field or ``X-CSRF-Token`` header); the login form,
before any session, uses a double-submit cookie.  Failed logins are counted
per user name and per address, in the store so every daemon counts alike
(``store.login_throttle``): after 5 failures within 15 minutes the next try
must wait, doubling up to 15 minutes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from store import login_throttle
from store.access import Access, access_for
from store.base import utcnow
from store.db import Store
from store.models import User, WebSession
from store.users import hash_password, needs_rehash, verify_password
from web.i18n import Translator, best_locale

SESSION_COOKIE = "rapport_session"
LOGIN_CSRF_COOKIE = "rapport_login_csrf"
IDLE = dt.timedelta(hours=8)
LIFETIME = dt.timedelta(days=7)
SEEN_EVERY = dt.timedelta(minutes=1)
# What pages fetch by themselves on a timer (web/static/app.js).
BACKGROUND_PATHS = frozenset({"/activities/reminders.json"})
MIN_PASSWORD = 10
# Paths served without a session (each checks its own credentials, or needs none).
PUBLIC_PREFIXES = ("/login", "/static/", "/healthz", "/metrics", "/api/v1/", "/ws/phone",
                   "/recordings/", "/forms/")  # fmt: skip
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

AUTH_STORE_KEY = web.AppKey("auth_store", Store)
SECURE_KEY = web.AppKey("secure_cookies", bool)
# The site's public address (``[web] public_url``), when a reverse proxy puts it in front,
# and the (scheme, host[:port]) a browser's Origin has there.
PUBLIC_URL_KEY = web.AppKey("public_url", str)
PUBLIC_ORIGIN_KEY = web.AppKey("public_origin", tuple[str, str])


@dataclass(frozen=True)
class Viewer:
    """The signed-in user as every page sees them."""

    user_id: int
    username: str
    display_name: str
    locale: str
    timezone: str
    csrf: str
    access: Access
    t: Translator


VIEWER = web.RequestKey("viewer", Viewer)


def permitted(request: web.Request, *needs: tuple[str, str]) -> Viewer:
    """The signed-in viewer, if their role may do every (module, action) asked; 403 otherwise."""
    viewer = request[VIEWER]
    if not all(viewer.access.can(module, action) for module, action in needs):
        raise web.HTTPForbidden(text=viewer.t.gettext("You may not do this here."))
    return viewer


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _public(path: str) -> bool:
    return path == "/login" or path.startswith(PUBLIC_PREFIXES)


def safe_next(target: str | None) -> str:
    """Only a path on this site: no scheme, no host, no ``//`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _viewer(request: web.Request) -> Viewer | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    now = utcnow()
    async with request.app[AUTH_STORE_KEY].session() as session, session.begin():
        found = await session.get(WebSession, digest(raw))
        if found is None:
            return None
        if found.expires_at <= now or found.last_seen_at + IDLE <= now:
            await session.delete(found)
            return None
        user = await session.get(User, found.user_id)
        if user is None or not user.is_active:
            await session.delete(found)
            return None
        # A page's own polling (reminders) is no sign of a person: it does not keep the
        # session from its idle timeout, or an open tab would never sign out.
        if now - found.last_seen_at > SEEN_EVERY and request.path not in BACKGROUND_PATHS:
            found.last_seen_at = now
        access = await access_for(session, user)
        return Viewer(
            user_id=user.id,
            username=user.username,
            display_name=user.display_name or user.username,
            locale=user.locale,
            timezone=user.timezone,
            csrf=found.csrf_token,
            access=access,
            t=Translator(user.locale, user.timezone),
        )


def same_site(request: web.Request, origin: str) -> bool:
    """``origin`` is this site: the host the request came to, or the public address.

    Behind a reverse proxy the Host may be the proxy's upstream name while the
    browser's Origin is the public one, so ``[web] public_url`` counts too.
    """
    try:
        seen = URL(origin)
    except ValueError:
        return False
    if seen.authority == request.host:
        return True
    return (seen.scheme, seen.authority) == request.app.get(PUBLIC_ORIGIN_KEY)


async def browser_user(request: web.Request) -> int | None:
    """The signed-in user of a same-origin browser request (a websocket handshake), else None.

    A cookie alone is not enough for a websocket: browsers send it on
    cross-site handshakes too, so the Origin must be this site.
    """
    origin = request.headers.get("Origin")
    if origin is None or not same_site(request, origin):
        return None
    viewer = await _viewer(request)
    return viewer.user_id if viewer is not None else None


def _csrf_sent(request: web.Request, form: object) -> str:
    header = request.headers.get("X-CSRF-Token", "")
    if header:
        return header
    if hasattr(form, "get"):
        value = form.get("_csrf", "")
        return value if isinstance(value, str) else ""
    return ""


@web.middleware
async def session_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Pages need a session; unsafe requests need its CSRF token as well."""
    if _public(request.path):
        return await handler(request)
    viewer = await _viewer(request)
    if viewer is None:
        if request.method == "GET" and "application/json" not in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")
        raise web.HTTPUnauthorized(text="sign in first")
    if request.method in UNSAFE:
        form = await request.post() if request.content_type in _FORM_TYPES else None
        if not hmac.compare_digest(_csrf_sent(request, form), viewer.csrf):
            raise web.HTTPForbidden(text="the form is out of date (CSRF check): reload the page")
    request[VIEWER] = viewer
    return await handler(request)


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _anonymous_translator(request: web.Request) -> Translator:
    """Before sign-in: the language asked for in the URL, else the browser's."""
    wanted = request.query.get("lang")
    return Translator(best_locale(wanted, request.headers.get("Accept-Language", "")))


def _login_page(
    request: web.Request, error: str = "", username: str = "", status: int = 200,
    next_: str | None = None,
) -> web.Response:  # fmt: skip
    t = Translator(
        best_locale(request.query.get("lang"), request.headers.get("Accept-Language", ""))
    )
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = aiohttp_jinja2.render_template(
        "login.html",
        request,
        {"request": request, "t": t, "_": t.gettext, "error": error, "username": username,
         "csrf": token, "next": safe_next(next_ or request.query.get("next"))},
        status=status,
    )  # fmt: skip
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict",
        secure=request.app[SECURE_KEY], path="/login",
    )  # fmt: skip
    return response


async def login_form(request: web.Request) -> web.Response:
    if await _viewer(request) is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next")))
    return _login_page(request)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    t = Translator(
        best_locale(request.query.get("lang"), request.headers.get("Accept-Language", ""))
    )
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    sent = str(form.get("_csrf", ""))
    if not cookie or not hmac.compare_digest(cookie, sent):
        return _login_page(request, t.gettext("The form was out of date; please try again."),
                           status=403, next_=str(form.get("next", "")))  # fmt: skip
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    keys = (f"user:{username.lower()}", f"ip:{request.remote}")
    store = request.app[AUTH_STORE_KEY]
    async with store.session() as session:
        wait = await login_throttle.wait_s(session, keys)
    if wait > 0:
        minutes = max(1, round(wait / 60))
        return _login_page(
            request,
            t.gettext("Too many failed sign-ins. Try again in {minutes} min.", minutes=minutes),
            username, status=429, next_=str(form.get("next", "")),
        )  # fmt: skip
    async with store.session() as session, session.begin():
        user = await session.scalar(select(User).where(User.username == username))
        # The hash is checked even for an unknown name, so timing does not tell names apart.
        good = verify_password(user.password_hash if user else None, password)
        if user is None or not good or not user.is_active:
            await login_throttle.failed(session, keys)
            return _login_page(request, t.gettext("Wrong user name or password."), username,
                               status=401, next_=str(form.get("next", "")))  # fmt: skip
        await login_throttle.succeeded(session, keys)
        if user.password_hash and needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        user.last_login_at = utcnow()
        raw = await start_session(session, user, request)
    response = web.HTTPSeeOther(safe_next(str(form.get("next", "/"))))
    set_session_cookie(request, response, raw)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


async def start_session(
    session: AsyncSession, user: User, request: web.Request | None = None
) -> str:
    """A new session for ``user``; returns the cookie's value (the only copy of it)."""
    raw = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        WebSession(
            id_sha256=digest(raw), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
            created_at=now, last_seen_at=now, expires_at=now + LIFETIME,
            user_agent=(request.headers.get("User-Agent", "")[:255] if request else None),
            ip=request.remote if request else None,
        )
    )  # fmt: skip
    await session.flush()
    return raw


def set_session_cookie(request: web.Request, response: web.StreamResponse, raw: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, raw, httponly=True, samesite="Lax", secure=request.app[SECURE_KEY],
        path="/", max_age=int(LIFETIME.total_seconds()),
    )  # fmt: skip


async def logout(request: web.Request) -> web.Response:
    raw = request.cookies.get(SESSION_COOKIE, "")
    async with request.app[AUTH_STORE_KEY].session() as session, session.begin():
        await session.execute(delete(WebSession).where(WebSession.id_sha256 == digest(raw)))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def password_form(request: web.Request) -> web.Response:
    from web.render import render

    return render(request, "password.html", {"errors": {}, "done": False})


async def change_password(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    t = viewer.t
    form = await request.post()
    current = str(form.get("current", ""))
    new = str(form.get("new", ""))
    errors: dict[str, str] = {}
    if len(new) < MIN_PASSWORD:
        errors["new"] = t.gettext("At least {n} characters.", n=MIN_PASSWORD)
    if new != str(form.get("confirm", "")):
        errors["confirm"] = t.gettext("The two new passwords differ.")
    raw = request.cookies.get(SESSION_COOKIE, "")
    async with request.app[AUTH_STORE_KEY].session() as session, session.begin():
        user = await session.get(User, viewer.user_id)
        assert user is not None
        if not verify_password(user.password_hash, current):
            errors["current"] = t.gettext("This is not your current password.")
        if not errors:
            user.password_hash = hash_password(new)
            # Every other browser signed in as this user is signed out.
            await session.execute(
                delete(WebSession).where(
                    WebSession.user_id == user.id, WebSession.id_sha256 != digest(raw)
                )
            )
    from web.render import render

    return render(request, "password.html", {"errors": errors, "done": not errors},
                  status=422 if errors else 200)  # fmt: skip


def add_auth_routes(
    app: web.Application, store: Store, secure_cookies: bool = False, public_url: str = ""
) -> None:
    app[AUTH_STORE_KEY] = store
    app[SECURE_KEY] = secure_cookies
    app[PUBLIC_URL_KEY] = public_url.rstrip("/")
    if public_url:
        public = URL(public_url)
        app[PUBLIC_ORIGIN_KEY] = (public.scheme, public.authority)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/password", password_form)
    app.router.add_post("/password", change_password)
