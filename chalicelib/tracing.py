"""X-Ray tracing through Powertools' Tracer: on in Lambda, off everywhere else, and silent when off."""
from __future__ import annotations

import os
from collections.abc import Mapping


def running_on_lambda(env: Mapping[str, str] = os.environ) -> bool:
    return "AWS_LAMBDA_FUNCTION_NAME" in env and "WEBIM_LOCAL" not in env


def configure_tracing(env: Mapping[str, str] = os.environ) -> bool:
    """Patch boto3/botocore for X-Ray when running on AWS Lambda; return whether it did.

    Powertools' Tracer does the patching (aws-xray-sdk underneath, in maintenance mode: the
    Tracer is where a successor SDK will plug in). It is created only on Lambda: it imports the
    X-Ray SDK, and importing that elsewhere is what makes it complain about a missing segment
    context.
    """
    if not running_on_lambda(env) or env.get("WEBIM_TRACING") == "off":
        return False
    from aws_lambda_powertools import Tracer  # noqa: PLC0415  (Lambda only, see docstring)

    Tracer(service="webim", disabled=False, auto_patch=True, patch_modules=("boto3", "botocore"))
    return True
