//! The admin API: seeding namespaces, datashares and grants at runtime, reading state, errors.

use crate::support;

use aws_sdk_redshift::types::DataShareStatus;
use serde_json::json;
use support::emulator::*;

#[tokio::test]
async fn a_grant_seeded_at_runtime_makes_a_share_available_to_the_consumer() {
    let emu = Emulator::start();
    emu.seed_grant(json!({
        "datashare_arn": FINANCE_SHARE,
        "consumer": CONSUMER_ACCOUNT,
        "status": "AUTHORIZED",
        "allow_writes": true
    }));
    let out = emu
        .consumer()
        .describe_data_shares()
        .data_share_arn(FINANCE_SHARE)
        .send()
        .await
        .unwrap();
    let assoc = &out.data_shares()[0].data_share_associations()[0];
    assert_eq!(assoc.status(), Some(&DataShareStatus::Available));
    assert_eq!(assoc.producer_allowed_writes(), Some(true));
}

#[tokio::test]
async fn a_seeded_namespace_and_share_are_usable_and_listed_in_state() {
    let emu = Emulator::start();
    let state = emu.seed(json!({
        "namespaces": [{"account": PRODUCER_ACCOUNT, "guid": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"}],
        "datashares": [{
            "producer_namespace": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
            "name": "new_share",
            "managed_by": "ADX",
            "grants": [{"consumer": CONSUMER_ACCOUNT, "status": "AUTHORIZED"}]
        }]
    }));
    let arn = "arn:aws:redshift:us-east-1:111122223333:datashare:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee/new_share";
    assert!(
        state["datashares"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["arn"] == arn)
    );
    let out = emu
        .consumer()
        .associate_data_share_consumer()
        .data_share_arn(arn)
        .associate_entire_account(true)
        .send()
        .await
        .unwrap();
    assert_eq!(out.managed_by(), Some("ADX"));
    assert_eq!(
        out.producer_arn(),
        Some(
            "arn:aws:redshift:us-east-1:111122223333:namespace:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
        )
    );
}

#[test]
fn bad_admin_input_is_a_400_naming_the_problem() {
    let emu = Emulator::start();
    let (status, body) = emu.admin(
        "POST",
        "/seed",
        Some(&json!({"namespaces": [{"account": "12", "guid": "x"}]})),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("namespaces.account"),
        "{body}"
    );
    let (status, _) = emu.admin("POST", "/seed", Some(&json!({"colour": "red"})));
    assert_eq!(status, 400);
    let (status, body) = emu.admin(
        "POST",
        "/grants",
        Some(&json!({"datashare_arn": "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/none", "consumer": "1"})),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("datashare_arn"),
        "{body}"
    );
    let (status, _) = emu.admin(
        "POST",
        "/grants",
        Some(&json!({"datashare_arn": SALES_SHARE, "consumer": "1", "colour": "red"})),
    );
    assert_eq!(status, 400);
    let (status, _) = emu.admin("GET", "/nope", None);
    assert_eq!(status, 404);
    let (status, body) = emu.admin("GET", "/health", None);
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}
