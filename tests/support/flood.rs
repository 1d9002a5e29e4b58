//! One caller flooding the gateway with listings (the fair-share test and benchmark): many calls
//! kept in the air, each sent again as soon as it is answered, their answers counted by reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use datashare_gateway::proto::datasharing::v1::ListConsumerDataSharesRequest;
use datashare_gateway::proto::datasharing::v1::data_sharing_client::DataSharingClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::gateway::{self, Gateway};
use super::prometheus::scrape;

/// The Redshift operation a listing is forwarded as (for the emulator's latency fault).
pub const LIST: &str = "DescribeDataSharesForConsumer";

/// One listing as `caller`.
pub async fn list(
    client: &mut DataSharingClient<Channel>,
    caller: &str,
) -> Result<(), tonic::Status> {
    client
        .list_consumer_data_shares(gateway::as_caller(
            caller,
            ListConsumerDataSharesRequest::default(),
        ))
        .await
        .map(|_| ())
}

/// A flood in progress.
pub struct Flood {
    stop: Arc<AtomicBool>,
    callers: Vec<JoinHandle<BTreeMap<String, u64>>>,
}

impl Flood {
    /// `caller` keeps `connections * per_connection` listings in the air; returns once its own
    /// queue has overflowed (`calls_shed_total{reason="caller_queue_full"}`), so the flood holds
    /// its whole share before anything else is measured.
    pub async fn start(
        gw: &Gateway,
        caller: &'static str,
        connections: usize,
        per_connection: usize,
    ) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let mut callers = Vec::new();
        for _ in 0..connections {
            let client = gw.client().await;
            for _ in 0..per_connection {
                let (mut client, stop) = (client.clone(), stop.clone());
                callers.push(tokio::spawn(async move {
                    let mut answers = BTreeMap::<String, u64>::new();
                    while !stop.load(Ordering::Relaxed) {
                        let answer = match list(&mut client, caller).await {
                            Ok(()) => "OK".to_owned(),
                            Err(status) => gateway::error_info(&status).0,
                        };
                        *answers.entry(answer).or_default() += 1;
                    }
                    answers
                }));
            }
        }
        super::wait::until(
            Duration::from_secs(30),
            "the flood's queue is full",
            async || {
                let m = scrape(gw.admin).await;
                match m.value(
                    "datashare_gateway_calls_shed_total",
                    &[("pool", "redshift"), ("reason", "caller_queue_full")],
                ) {
                    Some(n) if n > 0.0 => Ok(()),
                    seen => Err(seen),
                }
            },
        )
        .await;
        Flood { stop, callers }
    }

    /// Stops the flood; its answers by reason (`OK` or the ErrorInfo reason).
    pub async fn stop(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut answers = BTreeMap::new();
        for caller in self.callers {
            for (answer, count) in caller.await.expect("flood task") {
                *answers.entry(answer).or_default() += count;
            }
        }
        answers
    }
}
