"""rapport.toml: defaults, overrides, masking, and every problem reported at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.config import MailboxConfig, PbxConfig, load_config
from daemon.units import Secret, parse_duration, parse_size
from store.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_no_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(None, {})  # no ./rapport.toml where the tests run
    assert (
        config.web.port == 8080
        and config.tracking.port == 8081
        and config.smtp_ingress.port == 2525
    )
    assert config.store.url == "sqlite+aiosqlite:///var/rapport.db"
    assert config.imap.mailboxes == [] and config.smtp_relay.host is None


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.toml", {})
    assert err.value.problems == [f"{tmp_path / 'nope.toml'}: the file does not exist"]


def test_every_problem_is_listed_with_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "rapport.toml"
    path.write_text(
        "[web]\nport = 'eighty'\ncolour = 'blue'\n"
        "[smtp_ingress]\nmax_message_size = 'huge'\ntimeout = 'soon'\n"
        "[[imap.mailboxes]]\nname = 'sales'\nhost = 'imap.example.com'\nusername = 'sales'\n"
        "[[asterisk.pbx]]\nname = 'hq'\nhost = '10.0.0.5'\nusername = 'rapport'\n"
        "[smtp_relay]\nhost = 'smtp.example.com'\nusername = 'me'\n"
        "[bogus]\nx = 1\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    text = "\n".join(err.value.problems)
    for expected in (
        "web.port: Input should be a valid integer",
        "web.colour: unknown key",
        "smtp_ingress.max_message_size: not a size",
        "smtp_ingress.timeout: not a duration",
        "imap.mailboxes.0: missing secret: password for mailbox 'sales'",
        "asterisk.pbx.0:",
        "would send passwords in clear to 10.0.0.5",
        "missing secret: secret for PBX 'hq'",
        "smtp_relay: from_address is needed",
        "missing secret: password",
        "bogus: unknown key",
    ):
        assert expected in text, expected
    assert all(p.startswith(f"{path}: ") for p in err.value.problems)
    assert len(err.value.problems) == 8


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rapport.toml"
    path.write_text("[web]\nport = = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert "syntax" in err.value.problems[0] and "line 2" in err.value.problems[0]


def test_environment_overrides_and_their_errors(tmp_path: Path) -> None:
    path = tmp_path / "rapport.toml"
    path.write_text("[web]\nport = 9000\n")
    env = {
        "RAPPORT_WEB__PORT": "9100",
        "RAPPORT_SMTP_INGRESS__DOMAINS": '["example.cn", "example.com"]',
        "RAPPORT_SMTP_INGRESS__ENABLED": "false",
        "RAPPORT_STORE__URL": "postgresql+asyncpg://rapport@127.0.0.1/rapport",
    }
    config = load_config(path, env)
    assert config.web.port == 9100
    assert config.smtp_ingress.domains == ["example.cn", "example.com"]
    assert config.smtp_ingress.enabled is False
    assert config.store.url.startswith("postgresql+asyncpg://")
    with pytest.raises(ConfigError) as err:
        load_config(
            path, {"RAPPORT_WEB__PORT": "70000", "RAPPORT_NOPE__X": "1", "RAPPORT_WEB__NOPE": "1"}
        )
    assert sorted(err.value.problems) == sorted(
        [
            "env RAPPORT_NOPE__X: nope.x: unknown section 'nope'",
            "env RAPPORT_WEB__PORT: web.port: Input should be less than or equal to 65535",
            "env RAPPORT_WEB__NOPE: web.nope: unknown key",
        ]
    )


def test_secrets_come_from_env_or_file_and_are_masked(tmp_path: Path) -> None:
    secret_file = tmp_path / "relay.secret"
    secret_file.write_text("from-a-file\n")
    path = tmp_path / "rapport.toml"
    path.write_text(
        "[smtp_relay]\nhost = 'smtp.example.com'\nusername = 'me'\nfrom_address = 'crm@example.com'\n"
        f"password = 'file:{secret_file}'\n"
        "[[asterisk.pbx]]\nname = 'hq'\nhost = '127.0.0.1'\nusername = 'u'\n"
        "secret = 'env:AMI_SECRET'\n"
    )
    config = load_config(path, {"AMI_SECRET": "from-the-env"})
    assert config.smtp_relay.password is not None
    assert config.smtp_relay.password.reveal() == "from-a-file"
    assert config.asterisk.pbx[0].secret is not None
    assert config.asterisk.pbx[0].secret.reveal() == "from-the-env"
    dumped = str(config.masked_dict())
    assert "from-a-file" not in dumped and "from-the-env" not in dumped
    assert "********" in dumped and "env:AMI_SECRET" in dumped
    assert "from-the-env" not in repr(config)

    with pytest.raises(ConfigError) as err:
        load_config(path, {})  # AMI_SECRET no longer set
    assert "environment variable AMI_SECRET is not set" in err.value.problems[0]


def test_units() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("5m") == 300 and parse_duration(7) == 7.0 and parse_duration("1h") == 3600
    assert (
        parse_size("25MB") == 25_000_000
        and parse_size("512KiB") == 524_288
        and parse_size(10) == 10
    )
    for bad in ("soon", "-1s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for bad_size in ("huge", 0, "1.5XB"):
        with pytest.raises(ValueError):
            parse_size(bad_size)
    assert repr(Secret("x")) == "Secret(********)" and str(Secret("x")) == "Secret(********)"


def test_example_file_documents_a_valid_configuration(tmp_path: Path) -> None:
    example = ROOT / "rapport.example.toml"
    load_config(example, {})
    text = example.read_text()
    # With its commented-out sections switched on it is still valid.
    setting = re.compile(r"^# (?=[a-z_]+ = |\[)")
    enabled = "\n".join(setting.sub("", line) for line in text.splitlines())
    for name in ("smtp.crt", "smtp.key"):  # the example's files, made real here
        (tmp_path / name).write_text("PEM")
        enabled = enabled.replace(f"/etc/rapport/{name}", str(tmp_path / name))
    (tmp_path / "all.toml").write_text(enabled)
    config = load_config(
        tmp_path / "all.toml",
        {
            "RELAY_PASSWORD": "x",
            "SALES_IMAP_PASSWORD": "y",
            "AMI_SECRET": "z",
            "RAPPORT_WEB_SECRET": "w",
            "SMTP_INGRESS_PASSWORD": "v",
        },
    )
    assert config.imap.mailboxes and config.asterisk.pbx and config.smtp_relay.host
    # Every key of every section is documented.
    models = [type(m) for _, m in config] + [MailboxConfig, PbxConfig]
    for model in models:
        for name, field in model.model_fields.items():
            key = field.alias or name
            documented = f"{key} =" in text or f".{key}]]" in text
            assert documented, f"{model.__name__}.{key} undocumented"


def test_smtp_ingress_tls_and_auth_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "rapport.toml"
    path.write_text(
        "[smtp_ingress]\nrequire_tls = true\nauth_username = 'relay'\ntls_key = '/nonexistent.key'\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    (problem,) = err.value.problems
    for why in ("tls_cert and tls_key go together", "/nonexistent.key is not a readable file",
                "require_tls needs tls_cert", "missing secret: auth_password"):  # fmt: skip
        assert why in problem


def test_xoauth2_mailboxes_need_a_token_source_not_a_password(tmp_path: Path) -> None:
    path = tmp_path / "rapport.toml"
    base = "[[imap.mailboxes]]\nname = 'g'\nhost = 'imap.gmail.com'\nusername = 'sales@x.cn'\nauth = 'xoauth2'\n"
    path.write_text(base)
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert "xoauth2 needs oauth2_token_command or oauth2_token_file" in err.value.problems[0]
    path.write_text(base + "oauth2_token_command = 'fetch-token sales'\n")
    assert load_config(path, {}).imap.mailboxes[0].auth == "xoauth2"
