"""``POST /forms/lead``: a company site's form files a lead (other CRMs' XML-RPC insert, as REST).

The site posts its form (``application/x-www-form-urlencoded``, multipart, or
JSON from a script) with the form's key in the ``X-Form-Key`` header or a
hidden ``_form_key`` field, never in the URL, where logs and referrers keep
it.  Keys are made, revoked and rotated with ``rapport webform`` or on
/admin/webforms and kept as SHA-256 (``store/web_forms.py``, which also files
the lead and finds duplicates); a revoked or rotated-away key is refused (401).
The operation is declared (``LEAD_FORM_OPERATION``) and documented in
/api/v1/openapi.json with the form key as its security scheme.

Defences, cheapest first: a per-address limit (``FormRateLimit``, 429), a body
size limit (413), the key (401), the page's origin (403 unless the form lists
it; a browser script gets CORS headers for listed origins only), and a
honeypot field that people never see and bots fill in: such a post is
answered as if filed and nothing is stored.  A filed post answers 201 JSON,
or 303 to the form's thank-you page when a browser posted the form itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import BaseModel, ConfigDict, create_model
from pydantic import Field as Spec
from pydantic import ValidationError as PydanticError

from store.db import Store
from store.web_forms import allowed_origins, capture_lead, form_for_key
from web.api_models import Error, Problems, _value_type, problems_of
from web.api_spec import Operation
from web.modules import LEADS

log = logging.getLogger(__name__)

FORM_KEY_HEADER = "X-Form-Key"
FORM_KEY_FIELD = "_form_key"
# Hidden by the site's stylesheet (not type=hidden, which bots skip); people leave it empty.
HONEYPOT = "homepage"
MAX_FORM_BYTES = 16 * 1024
MAX_EXTRA_FIELDS = 20
MAX_EXTRA_CHARS = 500
POSTS_PER_WINDOW = 5
WINDOW_S = 10 * 60
PREFLIGHT_MAX_AGE_S = 600
LEAD_FIELDS = ("last_name", "first_name", "title", "company", "email", "phone", "mobile",
               "website")  # fmt: skip


class FormRateLimit:
    """Posts per address in a sliding window; how long an address must wait, if it must."""

    def __init__(self, most: int = POSTS_PER_WINDOW, window_s: float = WINDOW_S) -> None:
        self.most, self.window_s = most, window_s
        self._posts: dict[str, deque[float]] = {}

    def wait_s(self, address: str, now: float | None = None) -> float:
        """Count a post from ``address``; 0 if it may go on, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        posts = self._posts.setdefault(address, deque())
        while posts and now - posts[0] >= self.window_s:
            posts.popleft()
        if len(posts) >= self.most:
            return posts[0] + self.window_s - now
        posts.append(now)
        if len(self._posts) > 10_000:  # forget quiet addresses, so the table stays small
            for quiet in [a for a, p in self._posts.items() if not p or now - p[-1] >= WINDOW_S]:
                del self._posts[quiet]
        return 0.0


WEBFORM_STORE_KEY = web.AppKey("webform_store", Store)
FORM_LIMIT_KEY = web.AppKey("webform_limit", FormRateLimit)


def _submission_model() -> type[BaseModel]:
    """The lead's fields as a site may send them: the lead form's rules, all text."""
    fields: dict[str, Any] = {
        name: (_value_type(LEADS.field(name), False) | None, None) for name in LEAD_FIELDS
    }
    fields["name"] = (Annotated[str, Spec(max_length=120)] | None, None)
    fields["message"] = (Annotated[str, Spec(max_length=5000)], "")
    config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    return create_model("WebFormSubmission", __config__=config, **fields)


WebFormSubmission = _submission_model()


# For the document only: posts are read by ``_fields`` and ``_checked``.
class LeadFormPost(WebFormSubmission):  # type: ignore[misc,valid-type]
    """A site's form: the lead's fields, its key, the honeypot; other fields go into the note."""

    model_config = ConfigDict(extra="allow", title="LeadFormPost")
    form_key: str | None = Spec(
        None, alias=FORM_KEY_FIELD, description=f"The form's key, if not in {FORM_KEY_HEADER}."
    )
    homepage: str | None = Spec(
        None, description="The honeypot: hidden from people, left empty; a post with it "
        "filled in is answered as filed and nothing is stored.",
    )  # fmt: skip


class Received(BaseModel):
    """A post filed (or dropped by the honeypot: the answer is the same)."""

    status: Literal["received"]


def _checked(fields: Mapping[str, str]) -> tuple[dict[str, Any], str, dict[str, str]]:
    """The lead's values and the message from a post, and every problem of it."""
    given = {k: v for k, v in fields.items() if v.strip()}  # a field left blank is no value
    try:
        said: Any = WebFormSubmission.model_validate(given)
    except PydanticError as err:
        errors = problems_of(err)
        said = WebFormSubmission.model_construct()
    else:
        errors = {}
    values = {k: v for k, v in said.model_dump(include=set(LEAD_FIELDS)).items() if v}
    if not (given.get("last_name") or given.get("name")):
        errors.setdefault("last_name", "A name is needed (last_name or name).")
    if not any(given.get(k) for k in ("email", "phone", "mobile")):
        errors.setdefault("email", "An email address or a phone number is needed.")
    values.setdefault("last_name", said.name)
    return values, said.message, errors


def _refuse(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _cors(origin: str | None, allowed: bool) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin and allowed else {}


async def _fields(request: web.Request) -> dict[str, str] | None:
    """The posted fields as text (first value of each), or None for a body that is neither."""
    if request.content_type == "multipart/form-data":  # read as it streams, to client_max_size
        posted: MultiDictProxy[Any] = await request.post()
        return {k: v for k, v in posted.items() if isinstance(v, str)}
    raw = await request.read()
    if len(raw) > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM_BYTES, actual_size=len(raw))
    if request.content_type == "application/x-www-form-urlencoded":
        return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    if request.content_type == "application/json":
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        return {str(k): v if isinstance(v, str) else "" if v is None else json.dumps(v)
                for k, v in body.items()}  # fmt: skip
    return None


def _note(fields: Mapping[str, str], message: str) -> str:
    """The note's text: the message, then what else the site sent (a product, a budget...)."""
    known = {*LEAD_FIELDS, "name", "message", HONEYPOT, FORM_KEY_FIELD}
    extra = [(k, v) for k, v in fields.items() if k not in known and not k.startswith("_") and v]
    lines = [f"{k[:60]}: {v[:MAX_EXTRA_CHARS]}" for k, v in extra[:MAX_EXTRA_FIELDS]]
    return "\n\n".join(part for part in (message, "\n".join(lines)) if part)


async def post_lead(request: web.Request) -> web.StreamResponse:
    address = request.remote or "unknown"
    wait = request.app[FORM_LIMIT_KEY].wait_s(address)
    if wait > 0:
        return _refuse(429, "too many submissions; try again later",
                       {"Retry-After": str(max(1, round(wait)))})  # fmt: skip
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        return _refuse(413, "a form of at most 16 KB")
    try:
        fields = await _fields(request)
    except web.HTTPRequestEntityTooLarge:
        return _refuse(413, "a form of at most 16 KB")
    if fields is None:
        return _refuse(415, "post the form as a form, or as a JSON object")
    key = request.headers.get(FORM_KEY_HEADER) or fields.get(FORM_KEY_FIELD, "")
    origin = request.headers.get("Origin")
    async with request.app[WEBFORM_STORE_KEY].session() as session, session.begin():
        form = await form_for_key(session, key.strip())
        if form is None:
            return _refuse(401, "unknown form key")
        name, thank_you = form.name, form.thank_you_url
        allowed = origin is None or origin in form.allowed_origins
        cors = _cors(origin, allowed)
        if not allowed:
            return _refuse(403, "this form does not take posts from that site")
        if fields.get(HONEYPOT, "").strip():
            log.info("web form %s: a post with the honeypot filled in, dropped", name)
            return _received(request, thank_you, cors)
        values, message, errors = _checked(fields)
        if errors:
            return web.json_response({"errors": errors}, status=422, headers=cors)
        captured = await capture_lead(session, form, values, _note(fields, message))
    log.info("web form %s: %s %s %s", name, "new" if captured.new else "known",
             captured.record_type, captured.record_id)  # fmt: skip
    return _received(request, thank_you, cors)


def _received(request: web.Request, thank_you: str | None, cors: dict[str, str]) -> web.Response:
    """The same answer whether filed or dropped, so a bot cannot tell the honeypot."""
    if thank_you and request.content_type != "application/json":
        raise web.HTTPSeeOther(thank_you, headers=cors, text="")  # no body, as documented
    return web.json_response({"status": "received"}, status=201, headers=cors)


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight for a site's script: it carries no key, so any live form's origins count."""
    origin = request.headers.get("Origin")
    async with request.app[WEBFORM_STORE_KEY].session() as session:
        allowed = origin is not None and origin in await allowed_origins(session)
    if not allowed:
        return web.Response(status=403)
    return web.Response(status=204, headers={
        **_cors(origin, True),
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": f"Content-Type, {FORM_KEY_HEADER}",
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
    })  # fmt: skip


LEAD_FORM_OPERATION = Operation(
    "POST", "/forms/lead", post_lead, "post_lead_form", "A company site's form files a lead",
    "Web forms",
    {201: (Received, "filed (a script's JSON post)"),
     303: (None, "filed: a browser's form post is sent on to the form's thank-you page"),
     401: (Error, "no form key, an unknown one, or a revoked or rotated-away one"),
     403: (Error, "the post's Origin is not one of the form's sites"),
     413: (Error, f"a body over {MAX_FORM_BYTES // 1024} KB"),
     415: (Error, "a body that is neither a form nor a JSON object"),
     422: (Problems, "a name and an email address or phone number are needed; bad values"),
     429: (Error, f"more than {POSTS_PER_WINDOW} posts from one address in "
                 f"{WINDOW_S // 60} minutes")},
    body=LeadFormPost, security="formKey",
    body_types=("application/x-www-form-urlencoded", "multipart/form-data", "application/json"),
    headers={303: {"Location": "the form's thank-you page"},
             429: {"Retry-After": "seconds until this address may post again"}},
    description="A site's form posts here as a browser form or as JSON from a script. Fields "
    "not listed go into the lead's note. Someone already known by email or phone gets a "
    "note on their contact or open lead rather than a new lead. A browser's page may post "
    "only from the sites the form lists (CORS, `Origin`); a server's post has no Origin.",
)  # fmt: skip


def add_webform_routes(app: web.Application, store: Store) -> None:
    app[WEBFORM_STORE_KEY] = store
    app[FORM_LIMIT_KEY] = FormRateLimit()
    app.router.add_route(LEAD_FORM_OPERATION.method, LEAD_FORM_OPERATION.route, post_lead)
    app.router.add_route("OPTIONS", "/forms/lead", preflight)
