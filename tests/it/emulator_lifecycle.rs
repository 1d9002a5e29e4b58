//! Process behaviour: the ready line, clean exit on SIGTERM, bad fixtures, many connections.

use crate::support;

use std::process::Command;
use std::time::Duration;

use support::emulator::*;

#[test]
fn sigterm_stops_the_emulator_with_success() {
    let mut emu = Emulator::start();
    let status = Command::new("kill")
        .args(["-TERM", &emu.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = emu
        .wait_exit(Duration::from_secs(20))
        .expect("emulator exits after SIGTERM");
    assert!(exit.success(), "{exit:?}\n{}", emu.logs());
    assert!(emu.logs().contains("shutting down"));
}

#[test]
fn a_fixtures_file_with_an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[keys]]\naccess_key_id='a'\nsecret_access_key='b'\naccount='111122223333'\ncolour='red'\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--fixtures",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no ready line");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("colour"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_block_requests() {
    let emu = Emulator::start();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(
            tokio::net::TcpStream::connect(emu.api_addr())
                .await
                .unwrap(),
        );
    }
    let c = emu.consumer();
    let calls = (0..200).map(|_| {
        let c = c.clone();
        tokio::spawn(async move { c.describe_data_shares().send().await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().unwrap();
    }
    assert_eq!(emu.counter("DescribeDataShares", "answered"), 200);
    drop(idle);
}

#[tokio::test]
async fn serve_in_process_answers_until_its_shutdown_future_resolves() {
    use datashare_emulator::{EmulatorConfig, Fixtures, serve};
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", api.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = EmulatorConfig::new("us-east-1", Fixtures::dev().unwrap());
    let server = tokio::spawn(serve(api, admin, config, async move {
        let _ = stopped.await;
    }));
    let out = client(&endpoint, CONSUMER_KEY.0, CONSUMER_KEY.1, 1)
        .describe_data_shares_for_consumer()
        .send()
        .await
        .unwrap();
    assert!(!out.data_shares().is_empty());
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}
