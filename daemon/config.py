"""rapport.toml: a frozen, typed configuration tree, validated once with every problem listed.

Values come from the file, then from ``RAPPORT_<SECTION>__<KEY>`` environment
overrides; all of it is checked together, and a bad configuration raises
``ConfigError`` naming each problem as ``<source>: <dotted.key>: <why>``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from asterisk.plan import DEFAULT_PHONES, DEFAULT_TRUNKS, check_patterns
from daemon.units import Duration, SecretStr, Size
from store.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("rapport.toml")
ENV_PREFIX = "RAPPORT_"
Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raise_all(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))


class StoreConfig(_Section):
    url: str = "sqlite+aiosqlite:///var/rapport.db"
    blob_dir: Path = Path("var/blobs")

    @model_validator(mode="after")
    def _known_driver(self) -> Self:
        if not self.url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("url must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return self


class ListenerConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080


class WebConfig(ListenerConfig):
    port: Port = 8080
    secret_key: SecretStr | None = None
    public_url: str | None = None


class TrackingConfig(ListenerConfig):
    port: Port = 8081
    base_url: str = "http://127.0.0.1:8081"
    keys: list[SecretStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _strong_keys(self) -> Self:
        _raise_all([
            f"keys[{n}] is shorter than 16 characters: too easy to guess"
            for n, key in enumerate(self.keys) if len(key.reveal()) < 16
        ])  # fmt: skip
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return self


class SmtpIngressConfig(ListenerConfig):
    enabled: bool = True
    port: Port = 2525
    lmtp: bool = False
    domains: list[str] = Field(default_factory=list)
    max_message_size: Size = 25_000_000
    timeout: Duration = 300.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_tls: bool = False
    auth_username: str | None = None
    auth_password: SecretStr | None = None

    @model_validator(mode="after")
    def _tls_and_auth(self) -> Self:
        problems = []
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("tls_cert and tls_key go together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                problems.append(f"{path} is not a readable file")
        if self.require_tls and self.tls_cert is None:
            problems.append("require_tls needs tls_cert and tls_key")
        if self.auth_username and self.auth_password is None:
            problems.append("missing secret: auth_password (auth_username is set)")
        if self.auth_username and self.tls_cert is None:
            problems.append("AUTH is offered only over TLS: set tls_cert and tls_key")
        _raise_all(problems)
        return self


Security = Literal["tls", "starttls", "plain"]


class _Peer(_Section):
    """A server we connect to: plain text is allowed to loopback only."""

    host: str
    port: Port
    security: Security = "tls"

    def _problems(self) -> list[str]:
        if self.security == "plain" and not _is_loopback(self.host):
            return [f"security 'plain' would send passwords in clear to {self.host}"]
        return []


class SmtpRelayConfig(_Section):
    host: str | None = None
    port: Port = 587
    security: Security = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    from_address: str | None = None
    from_name: str = ""
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        problems = []
        if self.host and not self.from_address:
            problems.append("from_address is needed: the shared address all mail leaves under")
        if self.host and self.security == "plain" and not _is_loopback(self.host):
            problems.append(f"security 'plain' would send passwords in clear to {self.host}")
        if self.username and self.password is None:
            problems.append("missing secret: password (a username is set)")
        _raise_all(problems)
        return self


class MailboxConfig(_Peer):
    name: str
    port: Port = 993
    username: str
    auth: Literal["password", "xoauth2"] = "password"
    password: SecretStr | None = None
    oauth2_token_command: str | None = None
    oauth2_token_file: Path | None = None
    folders: list[str] = Field(default_factory=lambda: ["INBOX"])
    lead_mailbox: bool = True
    first_sync: str = "days:30"

    @model_validator(mode="after")
    def _complete(self) -> Self:
        problems = self._problems()
        if self.auth == "password" and self.password is None:
            problems.append(f"missing secret: password for mailbox {self.name!r}")
        if self.auth == "xoauth2" and not (self.oauth2_token_command or self.oauth2_token_file):
            problems.append("xoauth2 needs oauth2_token_command or oauth2_token_file")
        first = self.first_sync
        if first != "all" and not (first.startswith("days:") and first[5:].isdigit()):
            try:
                dt.date.fromisoformat(first)
            except ValueError:
                problems.append("first_sync must be 'all', 'days:N' or a date such as '2026-01-01'")
        _raise_all(problems)
        return self


class ImapConfig(_Section):
    mailboxes: list[MailboxConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [m.name for m in self.mailboxes]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"mailbox names must be unique: {', '.join(dupes)}")
        return self


class PbxConfig(_Peer):
    name: str
    port: Port = 5038
    security: Security = "plain"
    username: str
    secret: SecretStr | None = None
    # The trunks' numbering: country, local area code, the digit dialled for an outside line.
    region: str = "CN"
    area_code: str | None = None
    outside_prefix: str | None = None
    # Channel name patterns (regular expressions); a phone pattern names its (?P<ext>...).
    trunks: list[str] = Field(default_factory=lambda: list(DEFAULT_TRUNKS))
    phones: list[str] = Field(default_factory=lambda: list(DEFAULT_PHONES))
    dids: list[str] = Field(default_factory=list)
    # Extension -> Rapport user name: who a ringing phone belongs to.
    extensions: dict[str, str] = Field(default_factory=dict)
    # Click-to-dial rings the agent first through Local/<ext>@<dial_context>.
    dial_context: str = "from-internal"
    # Where MixMonitor writes; recordings are served from here only, by signed link.
    recordings_dir: Path | None = None
    # For security = "tls": the CA that signed the PBX's certificate, if not a public one.
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        problems = self._problems()
        if self.secret is None:
            problems.append(f"missing secret: secret for PBX {self.name!r}")
        if self.security == "starttls":
            problems.append("AMI has no STARTTLS: security must be 'tls' (port 5039) or 'plain'")
        problems += check_patterns(self.trunks, "trunks")
        problems += check_patterns(self.phones, "phones")
        problems += [
            f"phones pattern {p!r} has no (?P<ext>...) group naming the extension"
            for p in self.phones if "(?P<ext>" not in p
        ]  # fmt: skip
        if self.area_code is not None and not self.area_code.isdigit():
            problems.append(f"area_code {self.area_code!r} must be digits, such as '028'")
        _raise_all(problems)
        return self


class AsteriskConfig(_Section):
    pbx: list[PbxConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [p.name for p in self.pbx]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"PBX names must be unique: {', '.join(dupes)}")
        return self


class MailConfig(_Section):
    """How inbound mail is filed, whatever its source."""

    # Bulk and list mail: "history" (filed, never a lead), "lead" (like any mail), "skip".
    bulk: Literal["history", "lead", "skip"] = "history"
    # Whether unknown senders of mail delivered over SMTP/LMTP become leads.
    smtp_creates_leads: bool = True
    # Processes that parse inbound mail: "auto" (one per core) or a number; 0 parses
    # in a thread of the daemon's own process.
    parse_workers: Literal["auto"] | Annotated[int, Field(ge=0, le=64)] = "auto"


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(default=False, alias="json")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class DaemonConfig(_Section):
    shutdown_timeout: Duration = 4.0
    admin_username: str = "admin"
    var_dir: Path = Path("var")


class Config(_Section):
    store: StoreConfig = Field(default_factory=StoreConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    smtp_ingress: SmtpIngressConfig = Field(default_factory=SmtpIngressConfig)
    smtp_relay: SmtpRelayConfig = Field(default_factory=SmtpRelayConfig)
    imap: ImapConfig = Field(default_factory=ImapConfig)
    asterisk: AsteriskConfig = Field(default_factory=AsteriskConfig)
    mail: MailConfig = Field(default_factory=MailConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)

    def masked_dict(self) -> dict[str, Any]:
        """The effective configuration with every secret masked, for printing."""
        return self.model_dump(mode="json", by_alias=True)


def _parse_env_value(text: str) -> Any:
    """An override is a TOML value when it parses as one (42, true, [..]), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_env(
    data: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Merge RAPPORT_<SECTION>__<KEY> overrides; returns where each came from, and problems."""
    sources: dict[str, str] = {}
    problems: list[str] = []
    sections = Config.model_fields
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        dotted = f"{section}.{key}"
        if section not in sections:
            problems.append(f"env {name}: {dotted}: unknown section {section!r}")
            continue
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            problems.append(f"env {name}: {dotted}: {section} is not a table")
            continue
        target[key] = _parse_env_value(value)
        sources[dotted] = f"env {name}"
    return sources, problems


def _format_errors(err: PydanticValidationError, origin: str, sources: dict[str, str]) -> list[str]:
    problems = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            why = "unknown key"
        else:
            why = item["msg"].removeprefix("Value error, ")
        source = next(
            (src for key, src in sources.items() if loc == key or loc.startswith(key + ".")), origin
        )
        problems.append(f"{source}: {loc}: {why}")
    return problems


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate the configuration; ``ConfigError`` lists every problem."""
    environ = os.environ if environ is None else environ
    explicit = path is not None or "RAPPORT_CONFIG" in environ
    path = path or Path(environ.get("RAPPORT_CONFIG", DEFAULT_CONFIG_PATH))
    origin = str(path)
    problems: list[str] = []
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            problems.append(f"{origin}: syntax: {err}")
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"{origin}: cannot read: {err}")
    elif explicit:
        problems.append(f"{origin}: the file does not exist")
    sources, env_problems = _apply_env(data, environ)
    problems.extend(env_problems)
    try:
        config = Config.model_validate(data, context={"environ": environ})
    except PydanticValidationError as err:
        problems.extend(_format_errors(err, origin, sources))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config
