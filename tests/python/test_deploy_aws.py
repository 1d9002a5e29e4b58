"""deploy/aws/ holds together: every policy passes parliament (an IAM policy linter) with no
finding at all, parliament does find the mistakes it is relied on for, and what must not drift is
pinned: the SCP's five actions and two exceptions, the trust policy's external id, source identity
and tag keys (those the code sends), resource scoping wherever the action supports it, the actions
granted against the calls the code makes, and the names shared with deploy/kubernetes/ and the
README.

Nothing here talks to AWS: whether AWS evaluates these policies as intended is not tried."""

import copy
import json
import pathlib
import re
import subprocess
import sys
import tomllib
import warnings

import pytest
import yaml

with warnings.catch_warnings():
    # parliament 1.6.4 imports pkg_resources, which warns that it is deprecated.
    warnings.simplefilter("ignore", UserWarning)
    import parliament
    from parliament import analyze_policy_string

REPO = pathlib.Path(__file__).resolve().parents[2]
AWS = REPO / "deploy" / "aws"
KUBERNETES = REPO / "deploy" / "kubernetes"

SCP = "scp-datashare-guardrail.json"
GATEWAY_PERMISSIONS = "gateway-role-permissions.json"
GATEWAY_TRUST = "gateway-role-trust.json"
PLATFORM_PERMISSIONS = "platform-role-permissions.json"
POLICIES = [SCP, GATEWAY_PERMISSIONS, GATEWAY_TRUST, PLATFORM_PERMISSIONS]

DATASHARE_CHANGES = {
    "redshift:AssociateDataShareConsumer",
    "redshift:DisassociateDataShareConsumer",
    "redshift:AuthorizeDataShare",
    "redshift:DeauthorizeDataShare",
    "redshift:RejectDataShare",
}
GATEWAY_ROLE = "arn:aws:iam::*:role/datashare-gateway"
PLATFORM_ROLE = "arn:aws:iam::*:role/datashare-gateway-platform"
BREAK_GLASS_ROLE = "arn:aws:iam::*:role/datashare-break-glass"
ADMIN_ROLE = "arn:aws:iam::*:role/datashare-guardrail-admin"
GATEWAY_TAG_KEYS = {"dsgw:principal", "dsgw:gateway", "dsgw:approval"}
# Issue 25's operations: granted ahead of the code that calls them.
ISSUE_25 = {
    "redshift:RejectDataShare",
    "redshift:AuthorizeDataShare",
    "redshift:DeauthorizeDataShare",
    "redshift:DescribeDataSharesForProducer",
}
DATASHARE_ARN = "arn:aws:redshift:*:*:datashare:*/*"


def load(name):
    return json.loads((AWS / name).read_text())


def as_list(value):
    return value if isinstance(value, list) else [value]


def statements(name):
    return load(name)["Statement"]


def statement(name, sid):
    (found,) = [s for s in statements(name) if s.get("Sid") == sid]
    return found


def actions(stmts):
    return {a for s in stmts for a in as_list(s["Action"])}


def is_trust_policy(doc):
    return any("Principal" in s for s in doc["Statement"])


def as_linted(doc):
    """A trust policy has no Resource (IAM refuses one) but parliament requires one
    (duo-labs/parliament#229): it is linted as a policy on the role it belongs to. scripts/test.sh
    does the same."""
    doc = copy.deepcopy(doc)
    if is_trust_policy(doc):
        for s in doc["Statement"]:
            s.setdefault("Resource", GATEWAY_ROLE)
    return doc


def findings(doc):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        policy = analyze_policy_string(json.dumps(doc))
    return [(f.issue, f.detail) for f in policy.findings]


def iam_definition():
    """parliament's copy of the Service Authorization Reference."""
    path = pathlib.Path(parliament.__file__).parent / "iam_definition.json"
    return {service["prefix"]: service for service in json.loads(path.read_text())}


def resource_types(action):
    prefix, name = action.split(":")
    (privilege,) = [
        p for p in iam_definition()[prefix]["privileges"] if p["privilege"] == name
    ]
    return {r["resource_type"].rstrip("*") for r in privilege["resource_types"]} - {""}


# parliament.

def test_parliament_is_the_pinned_version():
    pinned = re.search(
        r"^parliament==(\S+)$", (REPO / "tools" / "requirements.txt").read_text(), re.M
    )
    assert pinned and parliament.__version__ == pinned.group(1)


def test_every_file_is_one_of_the_known_policies():
    assert sorted(p.name for p in AWS.glob("*.json")) == sorted(POLICIES)


@pytest.mark.parametrize("name", POLICIES)
def test_parliament_finds_nothing(name):
    assert findings(as_linted(load(name))) == []


def test_parliament_finds_a_misspelt_action():
    doc = load(SCP)
    doc["Statement"][0]["Action"][0] = "redshift:AssociateDatashareConsumers"
    assert [issue for issue, _ in findings(doc)] == ["UNKNOWN_ACTION"]


def test_parliament_finds_a_resource_of_the_wrong_type():
    doc = load(GATEWAY_PERMISSIONS)
    statement_ = next(s for s in doc["Statement"] if s["Sid"] == "ConsumerAssociations")
    statement_["Resource"] = "arn:aws:redshift:*:*:namespace:*"
    assert [issue for issue, _ in findings(doc)] == ["RESOURCE_MISMATCH"]


def test_parliament_finds_a_condition_key_the_action_does_not_take():
    doc = load(GATEWAY_TRUST)
    tag = next(s for s in doc["Statement"] if s["Action"] == "sts:TagSession")
    tag["Condition"]["StringEquals"] = {"sts:ExternalId": "dsgw-444455556666-example"}
    assert [issue for issue, _ in findings(as_linted(doc))] == ["UNKNOWN_CONDITION_FOR_ACTION"]


def test_parliament_cannot_lint_a_trust_policy_as_it_is():
    # Why as_linted exists: without it every statement is MALFORMED.
    issues = {issue for issue, _ in findings(load(GATEWAY_TRUST))}
    assert issues == {"MALFORMED"}


def run_cli(*args):
    # The console script beside this interpreter (.venv/bin/parliament), stdin not a terminal as
    # in CI: 1.6.4 refuses --file then, so scripts/test.sh passes --files.
    cli = pathlib.Path(sys.executable).with_name("parliament")
    return subprocess.run(
        [str(cli), "--minimum_severity", "INFO", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_exits_1_and_prints_a_finding_and_0_silently_on_none(tmp_path):
    clean = run_cli("--files", str(AWS / SCP))
    assert (clean.returncode, clean.stdout) == (0, "")
    doc = load(SCP)
    doc["Statement"][0]["Action"][0] = "redshift:AssociateDatashareConsumers"
    broken = tmp_path / SCP
    broken.write_text(json.dumps(doc, indent=2))
    found = run_cli("--files", str(broken))
    assert found.returncode == 1
    assert "Unknown action redshift:AssociateDatashareConsumers" in found.stdout


def test_the_cli_refuses_file_without_a_terminal():
    refused = run_cli("--file", str(AWS / SCP))
    assert refused.returncode == 2
    assert "You cannot pass a file with --file and use stdin together" in refused.stderr


# The SCP.

def test_scp_denies_exactly_the_five_datashare_changes_to_all_but_the_two_roles():
    deny = statement(SCP, "DenyDatashareChangesOutsideGateway")
    assert deny["Effect"] == "Deny"
    assert set(deny["Action"]) == DATASHARE_CHANGES
    assert deny["Resource"] == "*"
    assert deny["Condition"] == {
        "ArnNotLike": {"aws:PrincipalArn": [GATEWAY_ROLE, BREAK_GLASS_ROLE]}
    }
    # No other statement mentions Redshift: nothing else is denied or excepted there.
    others = [s for s in statements(SCP) if s.get("Sid") != deny["Sid"]]
    assert len(others) == len(statements(SCP)) - 1
    assert not any(a.startswith("redshift:") for a in actions(others))


def test_scp_protects_every_role_it_trusts_from_all_but_the_admin():
    protect = statement(SCP, "ProtectGuardrailRoles")
    assert protect["Effect"] == "Deny"
    assert set(protect["Resource"]) == {GATEWAY_ROLE, PLATFORM_ROLE, BREAK_GLASS_ROLE, ADMIN_ROLE}
    assert {
        "iam:CreateRole",
        "iam:DeleteRole",
        "iam:UpdateAssumeRolePolicy",
        "iam:PutRolePolicy",
        "iam:AttachRolePolicy",
        "iam:PutRolePermissionsBoundary",
        "iam:DeleteRolePermissionsBoundary",
        "iam:TagRole",
        "iam:UntagRole",
    } <= set(protect["Action"])
    assert protect["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": ADMIN_ROLE}}


def test_scp_keeps_cloudtrail_on():
    keep = statement(SCP, "KeepCloudTrailOn")
    assert keep["Effect"] == "Deny"
    assert {"cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "cloudtrail:UpdateTrail"} <= set(
        keep["Action"]
    )
    assert keep["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": ADMIN_ROLE}}


def test_scp_is_a_valid_deny_list_within_the_size_limit():
    text = (AWS / SCP).read_text()
    # Organizations counts every character of the document, whitespace too.
    assert len(text) <= 5120
    for s in statements(SCP):
        assert s["Effect"] == "Deny" and "Principal" not in s and "NotPrincipal" not in s
        assert re.fullmatch(r"[A-Za-z0-9]+", s["Sid"])


# The served accounts' role.

def trust_principals():
    return {p for s in statements(GATEWAY_TRUST) for p in as_list(s["Principal"]["AWS"])}


def test_trust_lets_only_the_platform_role_assume_with_external_id_and_source_identity():
    serviceaccount = yaml.safe_load((KUBERNETES / "serviceaccount.yaml").read_text())
    platform = serviceaccount["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert trust_principals() == {platform}
    assert all(s["Effect"] == "Allow" and "Resource" not in s for s in statements(GATEWAY_TRUST))
    assert actions(statements(GATEWAY_TRUST)) == {
        "sts:AssumeRole",
        "sts:SetSourceIdentity",
        "sts:TagSession",
    }
    (assume,) = [s for s in statements(GATEWAY_TRUST) if s["Action"] == "sts:AssumeRole"]
    condition = assume["Condition"]
    assert set(condition) == {"StringEquals", "StringLike"}
    assert set(condition["StringEquals"]) == {"sts:ExternalId"}
    assert condition["StringEquals"]["sts:ExternalId"]
    assert condition["StringLike"] == {
        "sts:SourceIdentity": "*",
        "aws:RequestTag/dsgw:principal": "*",
        "aws:RequestTag/dsgw:gateway": "*",
    }


def test_trust_restricts_session_tags_to_the_gateways_keys_never_transitive():
    (tag,) = [s for s in statements(GATEWAY_TRUST) if s["Action"] == "sts:TagSession"]
    condition = tag["Condition"]
    assert set(condition) == {"ForAllValues:StringEquals", "Null"}
    assert set(condition["ForAllValues:StringEquals"]) == {"aws:TagKeys"}
    assert set(condition["ForAllValues:StringEquals"]["aws:TagKeys"]) == GATEWAY_TAG_KEYS
    assert condition["Null"] == {"sts:TransitiveTagKeys": "true"}


def test_the_tag_keys_are_the_ones_the_code_sends():
    sessions = (REPO / "src" / "upstream" / "sessions.rs").read_text()
    sent = set(re.findall(r'tag\("(dsgw:[a-z]+)"', sessions))
    assert sent == GATEWAY_TAG_KEYS
    (platform_tag,) = [s for s in statements(PLATFORM_PERMISSIONS) if s["Action"] == "sts:TagSession"]
    assert set(platform_tag["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]) == sent


def redshift_calls():
    """The Redshift operations src/upstream/operations.rs calls, as IAM actions."""
    code = (REPO / "src" / "upstream" / "operations.rs").read_text()
    calls = re.findall(r"\.((?:associate|disassociate|describe|authorize|deauthorize|reject)_data_shares?[a-z_]*)\(\)", code)
    return {"redshift:" + "".join(w.capitalize() for w in c.split("_")) for c in calls}


def test_gateway_role_grants_what_the_gateway_calls_and_issue_25_only():
    calls = redshift_calls()
    # The regex still sees the calls (three today; issue 25 adds its four).
    assert {
        "redshift:AssociateDataShareConsumer",
        "redshift:DisassociateDataShareConsumer",
        "redshift:DescribeDataSharesForConsumer",
    } <= calls
    granted = actions(statements(GATEWAY_PERMISSIONS))
    redshift = {a for a in granted if a.startswith("redshift:")}
    assert calls <= redshift
    assert redshift - calls <= ISSUE_25
    assert granted - redshift == {
        "cloudtrail:LookupEvents",
        "cloudtrail:ListPublicKeys",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:ListBucketVersions",
    }
    # Every datashare change the SCP leaves to this role is one it may make.
    assert DATASHARE_CHANGES <= redshift


def test_gateway_role_scopes_datashare_actions_to_datashare_arns():
    for s in statements(GATEWAY_PERMISSIONS):
        for action in as_list(s["Action"]):
            if action in DATASHARE_CHANGES:
                assert s["Resource"] == DATASHARE_ARN, s["Sid"]


def test_gateway_role_reads_only_cloudtrails_files():
    get = statement(GATEWAY_PERMISSIONS, "ReconcileReadTrailFiles")
    assert re.fullmatch(r"arn:aws:s3:::[a-z0-9.-]+/AWSLogs/\*", get["Resource"])
    bucket = get["Resource"].split("/")[0]
    listing = statement(GATEWAY_PERMISSIONS, "ReconcileListTrailFiles")
    # reconcile lists a day's trail files with ListObjectVersions (the archive's reader), which
    # needs s3:ListBucketVersions; ListBucket keeps a missing key a 404.
    code = (REPO / "src" / "cli" / "reconcile.rs").read_text()
    assert ".list_versions(prefix)" in code
    assert set(as_list(listing["Action"])) == {"s3:ListBucket", "s3:ListBucketVersions"}
    assert listing["Resource"] == bucket
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "AWSLogs/*"}}


# The platform role.

def audit_ship():
    config = yaml.safe_load((KUBERNETES / "configmap-config.yaml").read_text())
    return tomllib.loads(config["data"]["gateway.toml"])["audit"]["ship"]


def s3_calls():
    """The S3 operations src/upstream/s3.rs calls, as the IAM actions they need."""
    code = (REPO / "src" / "upstream" / "s3.rs").read_text()
    needs = {
        # A PutObject that sets an Object Lock retention needs s3:PutObjectRetention too.
        "put_object": {"s3:PutObject", "s3:PutObjectRetention"},
        "get_object": {"s3:GetObject"},
        "list_object_versions": {"s3:ListBucketVersions"},
        # The bucket check at start.
        "get_object_lock_configuration": {"s3:GetBucketObjectLockConfiguration"},
        "get_bucket_versioning": {"s3:GetBucketVersioning"},
    }
    calls = set(re.findall(r"\.([a-z_]+_object[a-z_]*|get_bucket_versioning)\(\)", code))
    assert calls == set(needs), "an S3 call the platform role's policy does not know of"
    return set().union(*needs.values())


def test_platform_role_assumes_only_the_served_accounts_role():
    sts = [s for s in statements(PLATFORM_PERMISSIONS) if as_list(s["Action"])[0].startswith("sts:")]
    assert actions(sts) == {"sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"}
    assert {s["Resource"] for s in sts} == {GATEWAY_ROLE}
    for account in tomllib.loads(
        yaml.safe_load((KUBERNETES / "configmap-config.yaml").read_text())["data"]["gateway.toml"]
    )["accounts"].values():
        assert re.fullmatch(GATEWAY_ROLE.replace("*", r"\d{12}"), account["role_arn"])


def test_platform_role_ships_to_the_configured_bucket_and_prefix_and_never_deletes():
    ship = audit_ship()
    s3 = [s for s in statements(PLATFORM_PERMISSIONS) if as_list(s["Action"])[0].startswith("s3:")]
    granted = actions(s3)
    # What the code calls, and ListBucket (so a missing key is a 404, not a 403).
    assert granted == s3_calls() | {"s3:ListBucket"}
    assert not any("Delete" in a or "Bypass" in a for a in granted)
    objects = f"arn:aws:s3:::{ship['bucket']}/{ship['prefix']}/*"
    bucket = f"arn:aws:s3:::{ship['bucket']}"
    for s in s3:
        if s["Sid"] == "ListAuditTrail":
            assert s["Resource"] == bucket
            assert s["Condition"] == {"StringLike": {"s3:prefix": f"{ship['prefix']}/*"}}
        elif s["Sid"] == "CheckAuditBucketAtStart":
            assert s["Resource"] == bucket
            assert "Condition" not in s
        else:
            assert s["Resource"] == objects, s["Sid"]
    put = statement(PLATFORM_PERMISSIONS, "ShipAuditTrailCreateOnlyLocked")
    assert put["Action"] == "s3:PutObject"
    assert put["Condition"] == {"Null": {"s3:if-none-match": "false", "s3:object-lock-mode": "false"}}
    # The shipper sends both on every upload.
    code = (REPO / "src" / "upstream" / "s3.rs").read_text()
    assert '.if_none_match("*")' in code and ".object_lock_mode(mode)" in code


# Across the files.

@pytest.mark.parametrize("name", [GATEWAY_PERMISSIONS, PLATFORM_PERMISSIONS])
def test_resource_star_only_where_the_action_supports_no_resource(name):
    for s in statements(name):
        assert s["Effect"] == "Allow" and "NotAction" not in s and "NotResource" not in s
        for action in as_list(s["Action"]):
            assert "*" not in action, action
            if s["Resource"] == "*":
                assert resource_types(action) == set(), f"{action} supports {resource_types(action)}"


def readme_policies():
    text = (REPO / "README.md").read_text()
    docs = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    return [d for d in docs if isinstance(d, dict) and "Statement" in d]


def test_the_readmes_inline_policies_are_these_files():
    text = json.dumps(readme_policies())
    files = {name: load(name) for name in POLICIES}
    for doc in readme_policies():
        uses_ours = any(
            a.startswith("redshift:") or a in {"sts:AssumeRole", "sts:TagSession"}
            for a in actions(doc["Statement"])
        )
        if uses_ours:
            assert doc in files.values(), json.dumps(doc)
    assert "sts:ExternalId" in text  # the trust policy is shown
    readme = (REPO / "README.md").read_text()
    for name in POLICIES:
        assert f"deploy/aws/{name}" in readme, name
