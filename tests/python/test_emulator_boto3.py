"""The emulator through boto3: every operation, every error, STS AssumeRole and the event log,
as botocore parses them."""

import datetime
import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import CONSUMER_KEY, PRODUCER_KEY

PRODUCER_NS = "arn:aws:redshift:us-east-1:111122223333:namespace:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f"
SALES = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share"
FINANCE = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/finance_share"
LEGAL = "arn:aws:redshift:us-east-1:111122223333:datashare:d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6/legal_hold_share"
CONSUMER_NS = "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
SERVERLESS_NS = "arn:aws:redshift-serverless:us-east-1:444455556666:namespace/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
OTHER_NS = "arn:aws:redshift:us-east-1:777788889999:namespace:7a7b7c7d-7e7f-4a0b-8c1d-2e3f4a5b6c7d"


def error_code(call, **kwargs):
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response["Error"]["Code"]


def test_describe_for_consumer_parses_every_field(consumer):
    out = consumer.describe_data_shares_for_consumer()
    arns = [s["DataShareArn"] for s in out["DataShares"]]
    assert SALES in arns and LEGAL in arns and FINANCE not in arns
    sales = next(s for s in out["DataShares"] if s["DataShareArn"] == SALES)
    assert sales["ProducerArn"] == PRODUCER_NS
    assert sales["AllowPubliclyAccessibleConsumers"] is False
    assoc = sales["DataShareAssociations"][0]
    assert assoc["ConsumerIdentifier"] == "444455556666"
    assert assoc["Status"] == "AVAILABLE"
    assert isinstance(assoc["CreatedDate"], datetime.datetime)
    assert assoc["CreatedDate"].utcoffset() == datetime.timedelta(0)
    assert len(out["ResponseMetadata"]["RequestId"]) == 36
    assert out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] == out["ResponseMetadata"]["RequestId"]


def test_associate_and_disassociate_by_account_namespace_and_region(consumer):
    out = consumer.associate_data_share_consumer(DataShareArn=SALES, AssociateEntireAccount=True, AllowWrites=True)
    assert out["DataShareAssociations"][0]["Status"] == "ACTIVE"
    assert out["DataShareAssociations"][0]["ConsumerAcceptedWrites"] is True
    out = consumer.associate_data_share_consumer(DataShareArn=SALES, ConsumerArn=SERVERLESS_NS)
    assert SERVERLESS_NS in [a["ConsumerIdentifier"] for a in out["DataShareAssociations"]]
    out = consumer.associate_data_share_consumer(DataShareArn=SALES, ConsumerRegion="us-west-2")
    assert "us-west-2" in [a.get("ConsumerRegion") for a in out["DataShareAssociations"]]
    consumer.disassociate_data_share_consumer(DataShareArn=SALES, ConsumerArn=SERVERLESS_NS)
    consumer.disassociate_data_share_consumer(DataShareArn=SALES, ConsumerRegion="us-west-2")
    out = consumer.disassociate_data_share_consumer(DataShareArn=SALES, DisassociateEntireAccount=True)
    assert [a["Status"] for a in out["DataShareAssociations"]] == ["AVAILABLE"]


def test_producer_authorizes_deauthorizes_and_describes(producer):
    out = producer.describe_data_shares_for_producer(Status="PENDING_AUTHORIZATION")
    assert [s["DataShareArn"] for s in out["DataShares"]] == [FINANCE]
    out = producer.authorize_data_share(DataShareArn=FINANCE, ConsumerIdentifier="777788889999", AllowWrites=True)
    assoc = out["DataShareAssociations"][0]
    assert (assoc["Status"], assoc["ProducerAllowedWrites"]) == ("AUTHORIZED", True)
    out = producer.deauthorize_data_share(DataShareArn=FINANCE, ConsumerIdentifier="777788889999")
    assert out["DataShareAssociations"][0]["Status"] == "DEAUTHORIZED"
    out = producer.describe_data_shares(DataShareArn=SALES)
    assert out["DataShares"][0]["DataShareAssociations"][0]["Status"] == "AUTHORIZED"


def test_reject_hides_the_share_from_the_consumer(consumer):
    out = consumer.reject_data_share(DataShareArn=SALES)
    assert out["DataShareAssociations"][0]["Status"] == "REJECTED"
    arns = [s["DataShareArn"] for s in consumer.describe_data_shares_for_consumer()["DataShares"]]
    assert SALES not in arns


def test_paging_with_max_records_and_marker(producer):
    first = producer.describe_data_shares(MaxRecords=1)
    assert len(first["DataShares"]) == 1 and "Marker" in first
    pages = list(producer.get_paginator("describe_data_shares_for_producer").paginate(PaginationConfig={"PageSize": 1}))
    assert sum(len(p["DataShares"]) for p in pages) == 3


def test_modeled_faults(consumer, producer):
    assert error_code(consumer.associate_data_share_consumer, DataShareArn=FINANCE, AssociateEntireAccount=True) == "InvalidDataShareFault"
    assert error_code(consumer.associate_data_share_consumer, DataShareArn=SALES, ConsumerArn=OTHER_NS) == "InvalidNamespaceFault"
    assert error_code(consumer.describe_data_shares_for_consumer, ConsumerArn=OTHER_NS) == "InvalidNamespaceFault"
    assert error_code(producer.describe_data_shares_for_producer, ProducerArn=CONSUMER_NS) == "InvalidNamespaceFault"
    assert error_code(consumer.reject_data_share, DataShareArn=FINANCE) == "InvalidDataShareFault"
    assert error_code(consumer.disassociate_data_share_consumer, DataShareArn=SALES, DisassociateEntireAccount=True) == "InvalidDataShareFault"
    producer.deauthorize_data_share(DataShareArn=SALES, ConsumerIdentifier="444455556666")
    with pytest.raises(ClientError) as info:
        producer.deauthorize_data_share(DataShareArn=SALES, ConsumerIdentifier="444455556666")
    assert info.value.response["Error"]["Code"] == "InvalidDataShareFault"
    assert "already removed authorization" in info.value.response["Error"]["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # botocore maps modeled faults to exception classes.
    with pytest.raises(consumer.exceptions.InvalidDataShareFault):
        consumer.associate_data_share_consumer(DataShareArn=LEGAL + "x", AssociateEntireAccount=True)


def test_parameter_errors(consumer):
    assert error_code(consumer.associate_data_share_consumer, DataShareArn=SALES) == "InvalidParameterCombination"
    assert error_code(consumer.associate_data_share_consumer, DataShareArn=SALES, AssociateEntireAccount=True, ConsumerArn=CONSUMER_NS) == "InvalidParameterCombination"
    assert error_code(consumer.describe_data_shares_for_consumer, Status="REJECTED") == "InvalidParameterValue"


def test_sigv4_rejections(emulator):
    unknown = emulator.client(("AKIAUNKNOWNEXAMPLE00", "x"))
    assert error_code(unknown.describe_data_shares) == "InvalidClientTokenId"
    wrong = emulator.client((CONSUMER_KEY[0], "not-the-secret"))
    assert error_code(wrong.describe_data_shares) == "SignatureDoesNotMatch"
    assert emulator.counters("DescribeDataShares").get("forwarded", 0) == 0


def test_throttling_is_retried_by_botocore(emulator):
    emulator.inject_fault(kind="throttling", operation="DescribeDataShares", count=2)
    client = emulator.client(CONSUMER_KEY, total_max_attempts=3)
    out = client.describe_data_shares()
    assert out["ResponseMetadata"]["RetryAttempts"] == 2
    counters = emulator.counters("DescribeDataShares")
    assert (counters["received"], counters["forwarded"]) == (3, 1)


def test_bare_429_is_retried_by_botocore(emulator):
    emulator.inject_fault(kind="bare_429", operation="DescribeDataShares", count=1)
    # Legacy mode retries HTTP 429 in every botocore version; standard mode only from the
    # ThrottlingStatusCodeChecker of botocore 1.44 on.
    client = emulator.client(CONSUMER_KEY, total_max_attempts=2, mode="legacy")
    out = client.describe_data_shares()
    assert out["ResponseMetadata"]["RetryAttempts"] == 1


def test_server_errors_surface_their_codes(emulator, consumer):
    emulator.inject_fault(kind="internal_failure", operation="RejectDataShare", count=1)
    assert error_code(consumer.reject_data_share, DataShareArn=SALES) == "InternalFailure"
    emulator.inject_fault(kind="service_unavailable", operation="RejectDataShare", count=1)
    assert error_code(consumer.reject_data_share, DataShareArn=SALES) == "ServiceUnavailable"


# STS AssumeRole and the session credentials it hands out.

PLATFORM_KEY = ("AKIA2PLATFORMEXAMPLE", "pLatf0rmS3cretKey/EXAMPLEKEY/PLATFORMxyz")
OTHER_ROLE = "arn:aws:iam::777788889999:role/datashare-gateway"
OTHER_ROLE_EXTERNAL_ID = "dsgw-777788889999-example"


def sts_client(emulator, key):
    return boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=emulator.endpoint_url,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"total_max_attempts": 1}),
    )


def session_redshift(emulator, creds):
    return boto3.client(
        "redshift",
        region_name="us-east-1",
        endpoint_url=emulator.endpoint_url,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        config=Config(retries={"total_max_attempts": 1}),
    )


def assume_other_role(emulator, **overrides):
    params = dict(
        RoleArn=OTHER_ROLE,
        RoleSessionName="boto3-session",
        ExternalId=OTHER_ROLE_EXTERNAL_ID,
        SourceIdentity="alice@example.com",
        Tags=[{"Key": "team", "Value": "data"}],
    )
    params.update(overrides)
    return sts_client(emulator, PLATFORM_KEY).assume_role(**params)


def test_assume_role_session_calls_redshift_and_is_in_the_event_log(emulator):
    out = assume_other_role(emulator)
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assert isinstance(creds["Expiration"], datetime.datetime)
    assert creds["Expiration"].utcoffset() == datetime.timedelta(0)
    user = out["AssumedRoleUser"]
    assert user["Arn"] == "arn:aws:sts::777788889999:assumed-role/datashare-gateway/boto3-session"
    assert user["AssumedRoleId"].startswith("AROA") and user["AssumedRoleId"].endswith(":boto3-session")
    assert out["SourceIdentity"] == "alice@example.com"
    assert 0 <= out["PackedPolicySize"] <= 100
    assert len(out["ResponseMetadata"]["RequestId"]) == 36

    shares = session_redshift(emulator, creds).describe_data_shares_for_consumer()["DataShares"]
    sales = next(s for s in shares if s["DataShareArn"] == SALES)
    assert sales["DataShareAssociations"][0]["ConsumerIdentifier"] == "777788889999"
    assert sales["DataShareAssociations"][0]["Status"] == "AVAILABLE"

    events = emulator.admin_call("GET", "/events")["events"]
    assert [e["eventName"] for e in events] == ["AssumeRole", "DescribeDataSharesForConsumer"]
    assume, call = events
    assert assume["eventSource"] == "sts.amazonaws.com"
    assert assume["userIdentity"]["type"] == "IAMUser"
    assert assume["requestParameters"]["tags"] == [{"key": "team", "value": "data"}]
    assert "externalId" not in assume["requestParameters"]
    assert assume["responseElements"]["credentials"]["accessKeyId"] == creds["AccessKeyId"]
    assert call["eventSource"] == "redshift.amazonaws.com"
    assert call["recipientAccountId"] == "777788889999"
    assert call["userIdentity"]["type"] == "AssumedRole"
    assert call["userIdentity"]["arn"] == user["Arn"]
    assert call["userIdentity"]["sessionContext"]["sourceIdentity"] == "alice@example.com"
    assert call["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] == OTHER_ROLE
    raw = json.dumps(events)
    for secret in (creds["SecretAccessKey"], creds["SessionToken"], OTHER_ROLE_EXTERNAL_ID, PLATFORM_KEY[1]):
        assert secret not in raw


def test_assume_role_errors_as_botocore_parses_them(emulator):
    def code_and_status(**overrides):
        with pytest.raises(ClientError) as info:
            assume_other_role(emulator, **overrides)
        return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]

    assert code_and_status(ExternalId="not-the-external-id") == ("AccessDenied", 403)
    assert code_and_status(RoleSessionName="a b") == ("ValidationError", 400)
    assert code_and_status(DurationSeconds=43201) == ("ValidationError", 400)
    untrusted = sts_client(emulator, CONSUMER_KEY)
    with pytest.raises(ClientError) as info:
        untrusted.assume_role(RoleArn=OTHER_ROLE, RoleSessionName="s1", ExternalId=OTHER_ROLE_EXTERNAL_ID, SourceIdentity="alice")
    assert info.value.response["Error"]["Code"] == "AccessDenied"


def test_an_expired_session_is_expired_token(emulator):
    creds = assume_other_role(emulator, DurationSeconds=900)["Credentials"]
    redshift = session_redshift(emulator, creds)
    redshift.describe_data_shares()
    assert emulator.admin_call("POST", "/clock", {"advance_secs": 900})["offset_secs"] == 900
    with pytest.raises(ClientError) as info:
        redshift.describe_data_shares()
    assert info.value.response["Error"]["Code"] == "ExpiredToken"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
