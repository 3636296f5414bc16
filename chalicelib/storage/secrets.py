"""Secrets Manager: the signing secret and the host-site key configuration.

Read once per container (the caller caches what it builds from them): a GetSecretValue per
cold start, not per request.
"""
from __future__ import annotations

import json
from typing import Any


class SecretStore:
    def __init__(self, client: Any) -> None:
        self._client = client  # a boto3 Secrets Manager client

    def get_text(self, secret_id: str) -> str:
        value = self._client.get_secret_value(SecretId=secret_id)["SecretString"]
        if not isinstance(value, str) or not value:
            raise RuntimeError(f"secret {secret_id} is empty")
        return value

    def get_json(self, secret_id: str) -> dict[str, Any]:
        value = json.loads(self.get_text(secret_id))
        if not isinstance(value, dict):
            raise RuntimeError(f"secret {secret_id} is not a JSON object")
        return value
