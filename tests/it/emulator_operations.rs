//! Every datashare operation through the real aws-sdk-redshift client, against the dev fixtures.

use crate::support;

use aws_sdk_redshift::types::{
    DataShareStatus, DataShareStatusForConsumer, DataShareStatusForProducer,
};
use serde_json::json;
use support::emulator::*;

#[tokio::test]
async fn consumer_sees_sales_share_available_and_not_finance_share() {
    let emu = Emulator::start();
    let out = emu
        .consumer()
        .describe_data_shares_for_consumer()
        .send()
        .await
        .unwrap();
    let shares = out.data_shares();
    let sales = shares
        .iter()
        .find(|s| s.data_share_arn() == Some(SALES_SHARE))
        .expect("sales_share listed");
    assert_eq!(sales.producer_arn(), Some(PRODUCER_NAMESPACE));
    assert_eq!(sales.allow_publicly_accessible_consumers(), Some(false));
    let assoc = &sales.data_share_associations()[0];
    assert_eq!(assoc.consumer_identifier(), Some(CONSUMER_ACCOUNT));
    assert_eq!(assoc.status(), Some(&DataShareStatus::Available));
    assert!(assoc.created_date().is_some() && assoc.status_change_date().is_some());
    assert!(
        shares
            .iter()
            .any(|s| s.data_share_arn() == Some(LEGAL_HOLD_SHARE))
    );
    assert!(
        shares
            .iter()
            .all(|s| s.data_share_arn() != Some(FINANCE_SHARE))
    );
    assert_eq!(out.marker(), None);
}

#[tokio::test]
async fn associate_entire_account_makes_the_share_active_on_both_sides() {
    let emu = Emulator::start();
    let out = emu
        .consumer()
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .associate_entire_account(true)
        .allow_writes(true)
        .send()
        .await
        .unwrap();
    assert_eq!(out.data_share_arn(), Some(SALES_SHARE));
    let assoc = &out.data_share_associations()[0];
    assert_eq!(assoc.consumer_identifier(), Some(CONSUMER_ACCOUNT));
    assert_eq!(assoc.status(), Some(&DataShareStatus::Active));
    assert_eq!(assoc.consumer_accepted_writes(), Some(true));

    let producer = emu
        .producer()
        .describe_data_shares()
        .data_share_arn(SALES_SHARE)
        .send()
        .await
        .unwrap();
    // The producer sees every consumer's row: 777788889999's grant stays AUTHORIZED.
    let rows = producer.data_shares()[0].data_share_associations();
    let row = |account| {
        rows.iter()
            .find(|a| a.consumer_identifier() == Some(account))
            .and_then(|a| a.status())
    };
    assert_eq!(row(CONSUMER_ACCOUNT), Some(&DataShareStatus::Active));
    assert_eq!(row(OTHER_ACCOUNT), Some(&DataShareStatus::Authorized));
    assert_eq!(emu.counter("AssociateDataShareConsumer", "forwarded"), 1);
    assert_eq!(emu.counter("AssociateDataShareConsumer", "answered"), 1);
}

#[tokio::test]
async fn associate_with_namespace_and_region_then_disassociate() {
    let emu = Emulator::start();
    let c = emu.consumer();
    let out = c
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .consumer_arn(CONSUMER_SERVERLESS_NAMESPACE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.data_share_associations()[0].consumer_identifier(),
        Some(CONSUMER_SERVERLESS_NAMESPACE)
    );
    let out = c
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .consumer_region("us-west-2")
        .send()
        .await
        .unwrap();
    let regional = out
        .data_share_associations()
        .iter()
        .find(|a| a.consumer_region() == Some("us-west-2"))
        .expect("regional association");
    assert_eq!(regional.status(), Some(&DataShareStatus::Active));

    let out = c
        .disassociate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .consumer_arn(CONSUMER_SERVERLESS_NAMESPACE)
        .send()
        .await
        .unwrap();
    assert_eq!(out.data_share_associations().len(), 1);
    let out = c
        .disassociate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .consumer_region("us-west-2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.data_share_associations()[0].status(),
        Some(&DataShareStatus::Available)
    );
}

#[tokio::test]
async fn producer_authorizes_and_deauthorizes_a_pending_grant() {
    let emu = Emulator::start();
    let p = emu.producer();
    let pending = p
        .describe_data_shares_for_producer()
        .status(DataShareStatusForProducer::PendingAuthorization)
        .send()
        .await
        .unwrap();
    assert_eq!(pending.data_shares().len(), 1);
    assert_eq!(
        pending.data_shares()[0].data_share_arn(),
        Some(FINANCE_SHARE)
    );

    let out = p
        .authorize_data_share()
        .data_share_arn(FINANCE_SHARE)
        .consumer_identifier(OTHER_ACCOUNT)
        .allow_writes(false)
        .send()
        .await
        .unwrap();
    let assoc = &out.data_share_associations()[0];
    assert_eq!(assoc.consumer_identifier(), Some(OTHER_ACCOUNT));
    assert_eq!(assoc.status(), Some(&DataShareStatus::Authorized));
    assert_eq!(assoc.producer_allowed_writes(), Some(false));

    let out = p
        .deauthorize_data_share()
        .data_share_arn(FINANCE_SHARE)
        .consumer_identifier(OTHER_ACCOUNT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.data_share_associations()[0].status(),
        Some(&DataShareStatus::Deauthorized)
    );
}

#[tokio::test]
async fn consumer_rejects_and_the_share_disappears_from_its_list() {
    let emu = Emulator::start();
    let c = emu.consumer();
    let out = c
        .reject_data_share()
        .data_share_arn(SALES_SHARE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.data_share_associations()[0].status(),
        Some(&DataShareStatus::Rejected)
    );
    let list = c.describe_data_shares_for_consumer().send().await.unwrap();
    assert!(
        list.data_shares()
            .iter()
            .all(|s| s.data_share_arn() != Some(SALES_SHARE))
    );
    let producer = emu
        .producer()
        .describe_data_shares_for_producer()
        .status(DataShareStatusForProducer::Rejected)
        .send()
        .await
        .unwrap();
    assert_eq!(
        producer.data_shares()[0].data_share_arn(),
        Some(SALES_SHARE)
    );
}

#[tokio::test]
async fn consumer_status_filter_separates_active_from_available() {
    let emu = Emulator::start();
    let c = emu.consumer();
    c.associate_data_share_consumer()
        .data_share_arn(LEGAL_HOLD_SHARE)
        .consumer_arn(CONSUMER_NAMESPACE)
        .send()
        .await
        .unwrap();
    let active = c
        .describe_data_shares_for_consumer()
        .status(DataShareStatusForConsumer::Active)
        .send()
        .await
        .unwrap();
    let arns: Vec<_> = active
        .data_shares()
        .iter()
        .filter_map(|s| s.data_share_arn())
        .collect();
    assert_eq!(arns, [LEGAL_HOLD_SHARE]);
    let available = c
        .describe_data_shares_for_consumer()
        .status(DataShareStatusForConsumer::Available)
        .consumer_arn(CONSUMER_NAMESPACE)
        .send()
        .await
        .unwrap();
    let arns: Vec<_> = available
        .data_shares()
        .iter()
        .filter_map(|s| s.data_share_arn())
        .collect();
    assert_eq!(arns, [SALES_SHARE]);
}

#[tokio::test]
async fn paginators_walk_every_page_with_max_records_and_marker() {
    let emu = Emulator::start();
    // Seed 5 more shares so the producer owns 8.
    let shares: Vec<_> = (0..5)
        .map(|i| json!({"producer_namespace": "9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f", "name": format!("paged_{i}")}))
        .collect();
    emu.seed(json!({ "datashares": shares }));

    let p = emu.producer();
    let all: Vec<_> = p
        .describe_data_shares_for_producer()
        .max_records(3)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(all.len(), 8);
    let mut arns: Vec<_> = all.iter().filter_map(|s| s.data_share_arn()).collect();
    arns.dedup();
    assert_eq!(arns.len(), 8, "no share is returned twice");
    assert_eq!(emu.counter("DescribeDataSharesForProducer", "forwarded"), 3);

    let first = p
        .describe_data_shares()
        .max_records(2)
        .send()
        .await
        .unwrap();
    assert_eq!(first.data_shares().len(), 2);
    let marker = first.marker().expect("a marker while more records remain");
    let second = p
        .describe_data_shares()
        .max_records(100)
        .marker(marker)
        .send()
        .await
        .unwrap();
    assert_eq!(second.data_shares().len(), 6);
    assert_eq!(second.marker(), None);

    let consumer_pages: Vec<_> = emu
        .consumer()
        .describe_data_shares_for_consumer()
        .max_records(1)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(consumer_pages.len(), 2);
}

#[tokio::test]
async fn responses_carry_the_request_id_header() {
    use aws_sdk_redshift::operation::RequestId;
    let emu = Emulator::start();
    let out = emu.consumer().describe_data_shares().send().await.unwrap();
    let id = out.request_id().expect("x-amzn-RequestId header");
    assert_eq!(id.len(), 36);
}
