"""``homeserver generate-config``: write a complete, working config for a new node.

Creates the data directory with a signing key and a registration shared secret
(mode 0600), optionally a self-signed TLS certificate, then writes a config that
``homeserver check-config`` accepts. Flags are a contract: add, never rename.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
import sys
from typing import Any

import yaml

from homeserver.config import ConfigError, parse_config, valid_server_name
from homeserver.signing_key import SigningKeyError, generate_signing_key_file

__all__ = ["add_parser", "build_config", "generate_config", "write_self_signed_certificate"]

HEADER = """\
# Concord homeserver configuration, written by `homeserver generate-config`.
# Every option, its default and an example: config.sample.yaml and
# docs/usage/configuration/config_documentation.md. Check edits with
# `homeserver check-config --config THIS_FILE`.
"""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {value}")
    return value


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate-config",
        help="Write a complete config for a new node (plus its signing key).",
        description="Write a working config to --output: SQLite under --data-dir unless "
        "--database-url names PostgreSQL, a new signing key under --data-dir, a client "
        "listener (default 127.0.0.1:8008) and a federation listener (default "
        "127.0.0.1:8448). Port 0 picks a free port at start-up. Never overwrites.",
    )
    p.add_argument(
        "--server-name",
        required=True,
        metavar="NAME",
        help="public server name (the domain of user IDs), e.g. example.org",
    )
    p.add_argument(
        "--data-dir",
        required=True,
        metavar="DIR",
        help="directory for the database, keys and other server files",
    )
    p.add_argument(
        "--output", "-o", required=True, metavar="FILE", help="where to write the YAML config"
    )
    p.add_argument(
        "--client-port",
        type=_port,
        default=8008,
        metavar="P",
        help="client listener port (default 8008)",
    )
    p.add_argument(
        "--federation-port",
        type=_port,
        default=8448,
        metavar="P",
        help="federation listener port (default 8448)",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="P",
        help="also serve Prometheus metrics on this port (default: no metrics listener)",
    )
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="IP address the listeners bind (default 127.0.0.1; 0.0.0.0 for all)",
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://USER@HOST:PORT/DB (default: SQLite in DIR)",
    )
    p.add_argument(
        "--self-signed-tls",
        action="store_true",
        help="write a self-signed certificate for NAME and serve federation over TLS",
    )
    p.add_argument(
        "--no-verify-federation-tls",
        action="store_true",
        help="outbound federation accepts any certificate (test setups only)",
    )
    p.set_defaults(func=generate_config)


def _host_of(server_name: str) -> str:
    if server_name.startswith("["):
        return server_name[1 : server_name.index("]")]
    return server_name.rsplit(":", 1)[0] if ":" in server_name else server_name


def write_self_signed_certificate(
    host: str, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> None:
    """A self-signed P-256 certificate for ``host`` (DNS name or IP), valid ten years.

    It is its own CA (basicConstraints CA:TRUE) so a test peer can trust it
    through ``federation.ca_file``, and a client (or a Synapse under test) can
    verify it by loading it as its CA file. The key is written with mode 0600.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))


def build_config(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    """The config generate-config writes, as plain data (paths absolute)."""
    federation_listener: dict[str, Any] = {
        "type": "federation",
        "port": args.federation_port,
        "bind_addresses": [args.bind],
    }
    if args.self_signed_tls:
        federation_listener.update(
            tls=True,
            tls_certificate_path=os.path.join(data_dir, "tls.crt"),
            tls_private_key_path=os.path.join(data_dir, "tls.key"),
        )
    listeners: list[dict[str, Any]] = [
        {"type": "client", "port": args.client_port, "bind_addresses": [args.bind]},
        federation_listener,
    ]
    if args.metrics_port is not None:
        listeners.append(
            {"type": "metrics", "port": args.metrics_port, "bind_addresses": [args.bind]}
        )
    return {
        "server_name": args.server_name,
        "data_dir": data_dir,
        "signing_key_path": os.path.join(data_dir, "signing.key"),
        "database": {
            "url": args.database_url or f"sqlite://{os.path.join(data_dir, 'homeserver.db')}",
        },
        "listeners": listeners,
        "federation": {"verify_certificates": not args.no_verify_federation_tls},
        "registration_shared_secret_path": os.path.join(data_dir, "registration_shared_secret"),
        "logging": {"level": "INFO"},
    }


def generate_config(args: argparse.Namespace) -> int:
    def fail(msg: str) -> int:
        print(f"generate-config: {msg}", file=sys.stderr)
        return 1

    if not valid_server_name(args.server_name):
        return fail(f"--server-name {args.server_name!r} is not a host name with optional port")
    try:
        ipaddress.ip_address(args.bind)
    except ValueError:
        return fail(f"--bind {args.bind!r} is not an IP address")
    if os.path.exists(args.output):
        return fail(f"{args.output} already exists; not overwriting it")
    data_dir = os.path.abspath(args.data_dir)
    config = build_config(args, data_dir)
    # Validate before touching the disk, so a bad flag writes nothing.
    try:
        parse_config(
            {k: v for k, v in config.items() if k != "registration_shared_secret_path"},
            base_dir=data_dir,
        )
    except ConfigError as e:
        return fail("\n  ".join(e.problems))

    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        if not os.path.exists(config["signing_key_path"]):
            generate_signing_key_file(config["signing_key_path"])
        secret_path = config["registration_shared_secret_path"]
        if not os.path.exists(secret_path):
            fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
        if args.self_signed_tls:
            fed = config["listeners"][1]
            write_self_signed_certificate(
                _host_of(args.server_name), fed["tls_certificate_path"], fed["tls_private_key_path"]
            )
        out_dir = os.path.dirname(os.path.abspath(args.output))
        os.makedirs(out_dir, exist_ok=True)
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(HEADER)
            yaml.safe_dump(config, fh, sort_keys=False, default_flow_style=False)
    except (OSError, SigningKeyError) as e:
        return fail(str(e))
    print(f"Wrote {args.output} for {args.server_name} (data in {data_dir})")
    if args.no_verify_federation_tls:
        print("WARNING: outbound federation will accept any TLS certificate (test setups only)")
    return 0
