//! One connection cannot hold more calls open than `server.max_concurrent_streams`: the gateway
//! advertises the bound in its HTTP/2 settings, which a client must obey.

use crate::support;

use std::time::Duration;

use support::emulator::Emulator;
use support::gateway::{Gateway, GatewayOptions};

async fn advertised_max_streams(gw: &Gateway) -> usize {
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    // The server's SETTINGS arrive just after the handshake.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let max = client.current_max_send_streams();
        if max != usize::MAX || tokio::time::Instant::now() > deadline {
            return max;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        client = client.ready().await.expect("ready");
    }
}

#[tokio::test]
async fn the_stream_bound_is_advertised_by_default_and_configurable() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    assert_eq!(advertised_max_streams(&gw).await, 100);
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.server_toml = "max_concurrent_streams = 7".into();
    let gw = Gateway::start(options).await;
    assert_eq!(advertised_max_streams(&gw).await, 7);
}
