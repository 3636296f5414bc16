"""Configuration from the environment, and X-Ray tracing that is on only in Lambda."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chalicelib.settings import Settings, jobs_queue_name
from chalicelib.tracing import configure_tracing, running_on_lambda
from tests.conftest import ROOT

ENV = {
    "CONNECTIONS_TABLE": "c", "MESSAGES_TABLE": "m", "MEMBERS_TABLE": "u",
    "JOBS_QUEUE_URL": "https://q", "SIGNING_SECRET_ID": "s", "HOST_AUTH_SECRET_ID": "h",
}


def test_settings_read_every_variable() -> None:
    settings = Settings.from_env({**ENV, "CALLBACK_URL": "http://127.0.0.1:9"})
    assert (settings.connections_table, settings.callback_url) == ("c", "http://127.0.0.1:9")
    assert Settings.from_env(ENV).callback_url is None


def test_missing_variable_is_named_in_the_error() -> None:
    with pytest.raises(RuntimeError, match="MEMBERS_TABLE"):
        Settings.from_env({k: v for k, v in ENV.items() if k != "MEMBERS_TABLE"})


def test_queue_name_defaults_for_chalice_package() -> None:
    assert jobs_queue_name({}) == "webim-dev-ack-timeout"
    assert jobs_queue_name({"JOBS_QUEUE_NAME": "webim-prod-ack-timeout"}) == "webim-prod-ack-timeout"


def test_tracing_is_off_outside_lambda() -> None:
    assert not running_on_lambda({})
    assert not running_on_lambda({"AWS_LAMBDA_FUNCTION_NAME": "f", "WEBIM_LOCAL": "1"})
    assert configure_tracing({}) is False


def _python(code: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEBIM_"))}
    env.update(extra_env)
    return subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=True)


def test_on_lambda_tracing_patches_botocore() -> None:
    code = (
        "from chalicelib.tracing import configure_tracing\n"
        "import botocore.client\n"
        "print(configure_tracing(), hasattr(botocore.client.BaseClient._make_api_call, '__wrapped__'))"
    )
    result = _python(code, {"AWS_LAMBDA_FUNCTION_NAME": "webim-dev", "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR"})
    assert result.stdout.split() == ["True", "True"]


def test_importing_the_app_locally_prints_no_warnings() -> None:
    result = _python("import app; print('ok')", {"AWS_DEFAULT_REGION": "us-east-1"})
    assert result.stdout.strip() == "ok"
    assert result.stderr == ""


class FakeSecrets:
    def get_text(self, secret_id: str) -> str:
        return "k" * 64

    def get_json(self, secret_id: str) -> dict[str, object]:
        return {"issuers": []}


def test_dev_login_is_off_on_lambda_even_if_configured() -> None:
    from chalicelib.errors import DevLoginDisabledError
    from chalicelib.wiring import _authenticator

    settings = Settings.from_env({**ENV, "WEBIM_DEV_LOGIN": "1"})
    assert settings.dev_login
    local = _authenticator(settings, FakeSecrets(), {"WEBIM_LOCAL": "1"})  # type: ignore[arg-type]
    assert local.dev_login("alice").identity.id == "alice"
    on_lambda = _authenticator(settings, FakeSecrets(), {"AWS_LAMBDA_FUNCTION_NAME": "webim-dev"})  # type: ignore[arg-type]
    with pytest.raises(DevLoginDisabledError):
        on_lambda.dev_login("alice")
