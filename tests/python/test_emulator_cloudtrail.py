"""The emulator's CloudTrail LookupEvents as botocore parses it: pages, every field of an
event, and the ThrottlingException above two lookups a second per account."""

import json
import time

import pytest
from botocore.exceptions import ClientError

from conftest import CONSUMER_KEY, PRODUCER_KEY

SALES = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share"

# Two lookups a second per account: a client that pages keeps this far apart.
PACE_SECONDS = 0.55


def test_lookup_events_pages_newest_first_with_every_field(emulator, consumer, producer):
    for _ in range(4):
        consumer.describe_data_shares()
    consumer.associate_data_share_consumer(DataShareArn=SALES, AssociateEntireAccount=True)
    producer.describe_data_shares_for_producer()
    cloudtrail = emulator.cloudtrail(CONSUMER_KEY)

    seen, kwargs, pages = [], {"MaxResults": 2}, 0
    while True:
        page = cloudtrail.lookup_events(**kwargs)
        pages += 1
        seen.extend(page["Events"])
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
        time.sleep(PACE_SECONDS)
    assert pages == 3
    log = [e for e in emulator.admin_call("GET", "/events")["events"]
           if e["recipientAccountId"] == "444455556666"]
    assert [e["EventId"] for e in seen] == [e["eventID"] for e in reversed(log)]

    newest = seen[0]
    assert newest["EventName"] == "AssociateDataShareConsumer"
    assert newest["ReadOnly"] == "false"
    assert newest["AccessKeyId"] == CONSUMER_KEY[0]
    assert newest["EventSource"] == "redshift.amazonaws.com"
    assert newest["Username"] == "consumer-admin"
    assert newest["EventTime"].utcoffset().total_seconds() == 0
    assert newest["Resources"] == [{"ResourceType": "AWS::Redshift::DataShare", "ResourceName": SALES}]
    assert json.loads(newest["CloudTrailEvent"]) == log[-1]
    assert emulator.counters("LookupEvents")["throttled"] == 0


def test_a_third_lookup_within_a_second_is_throttled(emulator, consumer):
    consumer.describe_data_shares()
    cloudtrail = emulator.cloudtrail(CONSUMER_KEY)
    errors = []
    for _ in range(3):
        try:
            cloudtrail.lookup_events()
        except ClientError as err:
            errors.append(err)
    # Three calls in well under a second (one connection, a local emulator).
    assert len(errors) == 1
    err = errors[0].response
    assert err["Error"]["Code"] == "ThrottlingException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert emulator.counters("LookupEvents")["throttled"] == 1
    emulator.cloudtrail(PRODUCER_KEY).lookup_events()


def test_lookup_errors_are_cloudtrails_modeled_exceptions(emulator):
    cloudtrail = emulator.cloudtrail(CONSUMER_KEY)
    with pytest.raises(cloudtrail.exceptions.InvalidLookupAttributesException):
        cloudtrail.lookup_events(LookupAttributes=[
            {"AttributeKey": "EventName", "AttributeValue": "a"},
            {"AttributeKey": "ReadOnly", "AttributeValue": "true"},
        ])
    time.sleep(PACE_SECONDS)
    with pytest.raises(cloudtrail.exceptions.InvalidMaxResultsException):
        cloudtrail.lookup_events(MaxResults=51)
    time.sleep(PACE_SECONDS)
    with pytest.raises(cloudtrail.exceptions.InvalidNextTokenException):
        cloudtrail.lookup_events(NextToken="not-a-token")
