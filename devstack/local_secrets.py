"""Secrets for the local stack: generated on first run, kept outside git, served by moto.

`.local/` (gitignored; `WEBIM_LOCAL_DIR` moves it) holds
    signing-secret      the HS256 key for visitor and development tokens, made on first run
    host-auth.json      optional: host-site issuers and keys, as in the deployed secret
The files are loaded into moto's Secrets Manager under the names the infra template gives
the deployed secrets, so the app reads them through the same GetSecretValue calls as on AWS.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent


def local_dir() -> Path:
    return Path(os.environ.get("WEBIM_LOCAL_DIR") or ROOT / ".local")


def signing_secret(directory: Path) -> str:
    path = directory / "signing-secret"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def host_auth(directory: Path) -> str:
    path = directory / "host-auth.json"
    config = json.loads(path.read_text()) if path.exists() else {"issuers": []}
    return json.dumps(config)


def provision_secrets(stage: str, directory: Path | None = None) -> dict[str, str]:
    """Create the two secrets in (moto's) Secrets Manager; return their environment variables."""
    directory = directory or local_dir()
    client = boto3.client("secretsmanager")
    names = {"SIGNING_SECRET_ID": f"webim-{stage}-signing", "HOST_AUTH_SECRET_ID": f"webim-{stage}-host-auth"}
    client.create_secret(Name=names["SIGNING_SECRET_ID"], SecretString=signing_secret(directory))
    client.create_secret(Name=names["HOST_AUTH_SECRET_ID"], SecretString=host_auth(directory))
    return names
