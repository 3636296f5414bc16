"""CloudFront sends the pages' security headers (issue 11, finding 9): a response headers policy
attached to every cache behaviour, with the local stack's policy (devstack/page_headers.py) but
for `connect-src`, where the APIs are API Gateway's origins. cfn-lint: tests/test_packaging.py."""
from __future__ import annotations

from typing import Any

from cfnlint.decode import decode

from devstack.embedded_aws import TEMPLATE
from devstack.page_headers import content_security_policy


def template() -> dict[str, Any]:
    decoded, errors = decode(str(TEMPLATE))
    assert not errors
    return dict(decoded)


def directives(policy: str) -> dict[str, str]:
    parts = (" ".join(part.split()) for part in policy.split(";"))
    return {name: rest for name, _, rest in (part.partition(" ") for part in parts if part)}


def test_every_cache_behaviour_sends_the_frontend_headers_policy() -> None:
    resources = template()["Resources"]
    config = resources["FrontendDistribution"]["Properties"]["DistributionConfig"]
    behaviours = [config["DefaultCacheBehavior"], *config.get("CacheBehaviors", [])]
    assert all(b.get("ResponseHeadersPolicyId") == {"Ref": "FrontendHeadersPolicy"} for b in behaviours)
    assert resources["FrontendHeadersPolicy"]["Type"] == "AWS::CloudFront::ResponseHeadersPolicy"


def test_cloudfront_sends_the_local_stacks_policy_with_the_api_origins() -> None:
    parsed = template()
    security = parsed["Resources"]["FrontendHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"][
        "SecurityHeadersConfig"]
    csp = security["ContentSecurityPolicy"]
    assert csp["Override"] is True
    cloudfront = directives(csp["ContentSecurityPolicy"]["Fn::Sub"])
    frame_ancestors = parsed["Parameters"]["FrameAncestors"]["Default"]
    local = directives(content_security_policy(frame_ancestors))
    differ = ("connect-src", "img-src")
    assert {k: v for k, v in cloudfront.items() if k not in differ} == {
        **{k: v for k, v in local.items() if k not in differ}, "frame-ancestors": "${FrameAncestors}"}
    assert frame_ancestors == "'none'"
    media = "https://${MediaBucket.RegionalDomainName}"  # photos: presigned GETs and POSTs (§14.1)
    assert cloudfront["connect-src"].split() == [
        "'self'", "https://*.execute-api.${AWS::Region}.amazonaws.com",
        "wss://*.execute-api.${AWS::Region}.amazonaws.com", media, "${ConnectSources}"]
    # locally the bucket is on the page's own origin; blob: shows a photo before it is sent
    assert local["img-src"].split() == ["'self'", "data:", "blob:"]
    assert cloudfront["img-src"].split() == [*local["img-src"].split(), media]
    # X-Frame-Options DENY unless host origins may frame the pages; and no referrer
    assert security["FrameOptions"]["Fn::If"][:2] == ["NotFramed", {"FrameOption": "DENY", "Override": True}]
    assert parsed["Conditions"]["NotFramed"] == {"Fn::Equals": [{"Ref": "FrameAncestors"}, "'none'"]}
    assert security["ReferrerPolicy"] == {"ReferrerPolicy": "no-referrer", "Override": True}
    assert security["ContentTypeOptions"] == {"Override": True}
