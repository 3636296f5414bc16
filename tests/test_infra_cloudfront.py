"""The frontend on CloudFront (issue 14): CORS for the widget's host origins (a parameter),
`Origin` forwarded and in the cache key, folder indexes by a CloudFront Function whose code
runs here under node, and an optional custom domain."""
from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest
from cfnlint.decode import decode

from devstack.embedded_aws import TEMPLATE

# The function as CloudFront runs it: `handler(event)`; node prints what it returns.
RUNNER = """
{code}
const event = JSON.parse(process.argv[1]);
process.stdout.write(JSON.stringify(handler(event)));
"""


def template() -> dict[str, Any]:
    decoded, errors = decode(str(TEMPLATE))
    assert not errors
    return dict(decoded)


def distribution() -> dict[str, Any]:
    return dict(template()["Resources"]["FrontendDistribution"]["Properties"]["DistributionConfig"])


def viewer_request(uri: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (the frontend's tests need it too)")
    code = template()["Resources"]["FolderIndexFunction"]["Properties"]["FunctionCode"]
    event = {"version": "1.0", "context": {"eventType": "viewer-request"}, "viewer": {"ip": "192.0.2.1"},
             "request": {"method": "GET", "uri": uri, "querystring": {}, "headers": {}, "cookies": {}}}
    result = subprocess.run([node, "-e", RUNNER.format(code=code), json.dumps(event)],
                            capture_output=True, text=True, timeout=30, check=True)
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize(("uri", "asked"), [
    ("/", "/index.html"),
    ("/demo/", "/demo/index.html"),
    ("/a/b/", "/a/b/index.html"),
    ("/demo/index.html", "/demo/index.html"),
    ("/widget.js", "/widget.js"),
    ("/app/chat.css", "/app/chat.css"),
    ("/config.json", "/config.json"),
])
def test_folders_are_asked_for_their_index_and_files_as_they_are(uri: str, asked: str) -> None:
    assert viewer_request(uri)["uri"] == asked


def test_a_folder_without_its_slash_is_redirected_to_it() -> None:
    """So the page's relative URLs resolve under the folder, as the local stack does."""
    response = viewer_request("/demo")
    assert response["statusCode"] == 301
    assert response["headers"] == {"location": {"value": "/demo/"}}


def test_the_function_runs_on_every_viewer_request() -> None:
    resources = template()["Resources"]
    function = resources["FolderIndexFunction"]["Properties"]
    assert function["FunctionConfig"]["Runtime"] == "cloudfront-js-2.0" and function["AutoPublish"] is True
    (association,) = distribution()["DefaultCacheBehavior"]["FunctionAssociations"]
    assert association == {"EventType": "viewer-request",
                           "FunctionARN": {"Fn::GetAtt": ["FolderIndexFunction", "FunctionMetadata.FunctionARN"]}}


def test_widget_origins_get_cors_from_a_parameter() -> None:
    parsed = template()
    assert parsed["Parameters"]["WidgetOrigins"]["Type"] == "CommaDelimitedList"
    assert parsed["Parameters"]["WidgetOrigins"]["Default"] == "*"
    cors = parsed["Resources"]["FrontendHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]["CorsConfig"]
    assert cors["AccessControlAllowOrigins"] == {"Items": {"Ref": "WidgetOrigins"}}
    assert cors["AccessControlAllowMethods"] == {"Items": ["GET", "HEAD"]}  # the widget only reads
    assert cors["AccessControlAllowCredentials"] is False


def test_origin_is_forwarded_and_keys_the_cache() -> None:
    behaviour = distribution()["DefaultCacheBehavior"]
    assert behaviour["CachePolicyId"] == {"Ref": "FrontendCachePolicy"}
    policy = template()["Resources"]["FrontendCachePolicy"]["Properties"]["CachePolicyConfig"]
    headers = policy["ParametersInCacheKeyAndForwardedToOrigin"]["HeadersConfig"]
    assert headers == {"HeaderBehavior": "whitelist", "Headers": ["Origin"]}


def test_a_custom_site_domain_is_optional() -> None:
    parsed = template()
    assert parsed["Parameters"]["SiteDomainName"]["Default"] == ""
    assert parsed["Parameters"]["SiteCertificateArn"]["Default"] == ""
    config = distribution()
    assert config["Aliases"] == {"Fn::If": ["HasSiteDomain", [{"Ref": "SiteDomainName"}], {"Ref": "AWS::NoValue"}]}
    certificate = config["ViewerCertificate"]["Fn::If"]
    assert certificate[0] == "HasSiteDomain" and certificate[2] == {"Ref": "AWS::NoValue"}
    assert certificate[1]["AcmCertificateArn"] == {"Ref": "SiteCertificateArn"}
    assert certificate[1]["SslSupportMethod"] == "sni-only"
    assert parsed["Outputs"]["FrontendUrl"]["Value"]["Fn::If"][0] == "HasSiteDomain"
