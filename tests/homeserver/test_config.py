"""Config loading: path-precise errors, every problem collected, secrets, docs in sync."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from homeserver.config import (
    ConfigError,
    HomeserverConfig,
    load_config,
    option_paths,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]


def minimal(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"server_name": "example.org"}
    raw.update(extra)
    return raw


def problems_of(raw: Any, tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, base_dir=str(tmp_path), env=env or {})
    return info.value.problems


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    cfg = parse_config(minimal(), base_dir=str(tmp_path), env={})
    assert cfg.data_dir == str(tmp_path)
    assert cfg.signing_key_path == str(tmp_path / "signing.key")
    assert cfg.database.url == f"sqlite://{tmp_path / 'homeserver.db'}"
    assert cfg.database.connect_timeout == 10_000
    assert cfg.key_validity_period == 86_400_000
    assert [(li.type, li.port, li.bind_addresses) for li in cfg.listeners] == [
        ("client", 8008, ("127.0.0.1",)),
        ("federation", 8448, ("127.0.0.1",)),
    ]
    assert cfg.federation.verify_certificates is True
    assert cfg.max_request_size == 10 * 1024 * 1024
    assert cfg.registration_shared_secret is None


def test_values_are_parsed(tmp_path: Path) -> None:
    raw = minimal(
        data_dir="d",
        key_validity_period="7d",
        max_request_size="512K",
        shutdown_timeout=250,
        database={"url": "postgresql://u@db:5432/x", "connect_timeout": "1.5s"},
        listeners=[{"type": "metrics", "port": 0, "bind_addresses": ["::1"]}],
        old_signing_keys=[{"key_id": "ed25519:old", "public_key": "A" * 43, "expired_ts": 5}],
        federation={"trusted_key_servers": [{"server_name": "matrix.org"}]},
    )
    cfg = parse_config(raw, base_dir=str(tmp_path), env={})
    assert cfg.data_dir == str(tmp_path / "d")
    assert cfg.key_validity_period == 7 * 86_400_000
    assert cfg.max_request_size == 512 * 1024
    assert cfg.shutdown_timeout == 250
    assert cfg.database.connect_timeout == 1500
    assert cfg.listeners[0].bind_addresses == ("::1",)
    assert cfg.old_signing_keys[0].expired_ts == 5
    assert cfg.federation.trusted_key_servers[0].verify_keys == {}
    with pytest.raises(dataclasses_frozen_error()):
        cfg.server_name = "other"  # type: ignore[misc]


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            minimal(listeners=[{"type": "client", "port": "abc"}]),
            'listeners[0].port: expected an integer, got "abc"',
        ),
        (
            minimal(listeners=[{"type": "client", "port": True}]),
            "listeners[0].port: expected an integer, got true",
        ),
        (
            minimal(listeners=[{"type": "client", "port": 70000}]),
            "listeners[0].port: must be between 0 and 65535, got 70000",
        ),
        (
            minimal(listeners=[{"type": "web", "port": 1}]),
            'listeners[0].type: expected one of "client", "federation", "metrics", got "web"',
        ),
        (minimal(listeners={"type": "client"}), "listeners: expected a list, got"),
        (minimal(prot=1), "prot: unknown option"),
        (
            minimal(listeners=[{"type": "client", "prot": 1, "port": 1}]),
            'listeners[0].prot: unknown option (did you mean "port"?)',
        ),
        ({}, "server_name: required option is missing"),
        (minimal(listeners=[{"type": "client"}]), "listeners[0].port: required option is missing"),
        (minimal(key_validity_period="soon"), "key_validity_period: expected a duration"),
        (minimal(key_validity_period="1s"), "key_validity_period: must be at least 60000 ms"),
        (minimal(max_request_size="lots"), "max_request_size: expected a size"),
        (
            minimal(federation={"verify_certificates": "no"}),
            "federation.verify_certificates: expected true or false",
        ),
        (
            minimal(database={"url": "mysql://x"}),
            "database.url: expected a sqlite:/// or postgresql://",
        ),
        (
            minimal(database={"url": "sqlite://relative.db"}),
            "database.url: expected sqlite:///PATH",
        ),
        (minimal(server_name="bad name!"), "server_name: expected a host name"),
        (
            minimal(listeners=[{"type": "client", "port": 1, "bind_addresses": ["localhost"]}]),
            'listeners[0].bind_addresses[0]: expected an IP address, got "localhost"',
        ),
        (
            minimal(listeners=[{"type": "federation", "port": 1, "tls": True}]),
            "listeners[0].tls_certificate_path: required when tls is true",
        ),
        (
            minimal(listeners=[{"type": "client", "port": 5}, {"type": "metrics", "port": 5}]),
            "listeners[1].port: 127.0.0.1:5 is already used by listeners[0]",
        ),
        (
            minimal(old_signing_keys=[{"key_id": "rsa:1", "public_key": "x", "expired_ts": 1}]),
            'old_signing_keys[0].key_id: expected "ed25519:<version>", got "rsa:1"',
        ),
        (
            minimal(
                federation={
                    "trusted_key_servers": [
                        {"server_name": "m.org", "verify_keys": {"ed25519:a": 5}}
                    ]
                }
            ),
            "federation.trusted_key_servers[0].verify_keys.ed25519:a: expected a string, got 5",
        ),
        (minimal(logging={"level": "LOUD"}), 'logging.level: expected one of "DEBUG"'),
        (minimal(logging={"format": "%(nope)s"}), "logging.format: not a usable logging format"),
        ("just a string", "(top level): expected a mapping"),
    ],
)
def test_problem_messages_name_the_path(raw: Any, expected: str, tmp_path: Path) -> None:
    problems = problems_of(raw, tmp_path)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_collected(tmp_path: Path) -> None:
    raw = {
        "listeners": [{"type": "client", "port": "abc"}, {"type": "web", "port": -1}],
        "database": {"connect_timeout": "forever", "colour": "blue"},
        "max_request_size": [],
    }
    problems = problems_of(raw, tmp_path)
    assert sorted(problems) == sorted(
        [
            "server_name: required option is missing",
            'listeners[0].port: expected an integer, got "abc"',
            'listeners[1].type: expected one of "client", "federation", "metrics", got "web"',
            "listeners[1].port: must be between 0 and 65535, got -1",
            "database.colour: unknown option",
            'database.connect_timeout: expected a duration like "500ms", "10s", "5m", "1h" or '
            '"1d", got "forever"',
            'max_request_size: expected a size like "512K" or "10M", got []',
        ]
    )


def test_secret_from_environment(tmp_path: Path) -> None:
    raw = minimal(
        registration_shared_secret="${REG_SECRET}",
        database={"url": "postgresql://concord@db:5432/concord", "password": "${PGPASS}"},
    )
    cfg = parse_config(raw, base_dir=str(tmp_path), env={"REG_SECRET": "s3", "PGPASS": "p@ss/w"})
    assert cfg.registration_shared_secret == "s3"
    assert cfg.database.url == "postgresql://concord:p%40ss%2Fw@db:5432/concord"
    problems = problems_of(raw, tmp_path, env={"PGPASS": "x"})
    assert problems == ['registration_shared_secret: environment variable "REG_SECRET" is not set']


def test_dollar_escape_is_literal(tmp_path: Path) -> None:
    cfg = parse_config(minimal(registration_shared_secret="a$${B}"), base_dir=str(tmp_path), env={})
    assert cfg.registration_shared_secret == "a${B}"


def test_secret_from_file(tmp_path: Path) -> None:
    (tmp_path / "reg").write_text("from-file\n")
    (tmp_path / "pw").write_text("pgpw\n")
    raw = minimal(
        registration_shared_secret_path="reg",
        database={"url": "postgresql://concord@db/concord", "password_path": "pw"},
    )
    cfg = parse_config(raw, base_dir=str(tmp_path), env={})
    assert cfg.registration_shared_secret == "from-file"
    assert cfg.registration_shared_secret_path == str(tmp_path / "reg")
    assert cfg.database.url == "postgresql://concord:pgpw@db/concord"


def test_secret_file_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    raw = minimal(
        registration_shared_secret="x",
        registration_shared_secret_path="empty",
        database={"url": "postgresql://concord@db/concord", "password_path": "missing"},
    )
    problems = problems_of(raw, tmp_path)
    assert problems[0].startswith(f"database.password_path: cannot read {tmp_path / 'missing'}")
    assert problems[1] == (
        "registration_shared_secret_path: cannot be set together with registration_shared_secret"
    )
    problems = problems_of(minimal(registration_shared_secret_path="empty"), tmp_path)
    assert problems == [f"registration_shared_secret_path: {tmp_path / 'empty'} is empty"]


def test_load_config_reports_file_and_yaml_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("server_name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML: line 2, column 1"):
        load_config(str(bad))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="the config is empty"):
        load_config(str(empty))


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "h.yaml"
    path.write_text("server_name: a.test\nsigning_key_path: keys/s.key\n")
    assert load_config(str(path)).signing_key_path == str(tmp_path / "conf" / "keys" / "s.key")


# --------------------------------------------------------------------------
# The sample and the reference document every option the loader knows.


def expand_sample(text: str) -> str:
    """Uncomment the sample's commented-out examples (``#option: value`` blocks).

    A block starts at ``#`` directly followed by text; following lines with
    ``#`` in the same column followed by spaces continue it.
    """
    out = []
    block_col: int | None = None
    for line in text.splitlines():
        m = re.match(r"^(\s*)#(\S.*)$", line)
        if m and not line.lstrip().startswith("##"):
            out.append(m.group(1) + m.group(2))
            block_col = len(m.group(1))
            continue
        m = re.match(r"^(\s*)#(\s+.*)$", line)
        if m and block_col is not None and len(m.group(1)) == block_col:
            out.append(m.group(1) + m.group(2))
            continue
        block_col = None
        out.append(line)
    return "\n".join(out)


def documented_paths(value: Any, cls: Any = HomeserverConfig, prefix: str = "") -> set[str]:
    import dataclasses
    from typing import get_args, get_origin, get_type_hints

    found: set[str] = set()
    hints = get_type_hints(cls)
    assert isinstance(value, dict), prefix
    for key, sub in value.items():
        path = f"{prefix}{key}"
        found.add(path)
        assert key in hints, f"the sample documents an unknown option {path}"
        tp = hints[key]
        if get_origin(tp) is tuple and dataclasses.is_dataclass(get_args(tp)[0]):
            for item in sub:
                found |= documented_paths(item, get_args(tp)[0], f"{path}[].")
        elif dataclasses.is_dataclass(tp) and sub is not None:
            found |= documented_paths(sub, tp, f"{path}.")
    return found


def test_sample_config_loads(tmp_path: Path) -> None:
    cfg = load_config(str(ROOT / "config.sample.yaml"), env={})
    assert cfg.server_name == "example.org"
    assert [li.type for li in cfg.listeners] == ["client", "federation"]


def test_sample_config_documents_every_option() -> None:
    expanded = yaml.safe_load(expand_sample((ROOT / "config.sample.yaml").read_text()))
    assert documented_paths(expanded) == set(option_paths())


def test_reference_documents_every_option() -> None:
    doc = (ROOT / "docs/usage/configuration/config_documentation.md").read_text()
    headings = set(re.findall(r"^#{3,4} `([^`]+)`$", doc, flags=re.M))
    assert headings == set(option_paths())
