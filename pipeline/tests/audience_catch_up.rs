//! The run's audience against a real gateway that goes away mid-run: when the gateway's
//! HTTP side stops and starts again on the same port, the audience subscribes again and
//! reads what it missed from the long-poll backlog, so every update is counted once and
//! none is taken for lost.

#![allow(clippy::unwrap_used)]

use loadgen::{Audience, Tally};
use pipeline::gateway::{GatewayState, Pushed};
use probes::HopSet;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn update(id: u64) -> Pushed {
    let data = format!(
        r#"{{"run":7,"id":{id},"session":{},"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","intended_ns":100,"stamps":"agent:200:300","update":{{}}}}"#,
        id % 4
    );
    Pushed { session: id % 4, data: data.into() }
}

async fn serve(addr: std::net::SocketAddr, state: &GatewayState) -> CancellationToken {
    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(pipeline::gateway::serve(listener, state.clone(), cancel.clone()));
    cancel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audience_subscribes_again_and_catches_up_after_the_gateway_restarts() {
    let (_ready, rx) = watch::channel(true);
    let state = GatewayState::new(rx, CancellationToken::new());
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let first = serve(addr, &state).await;

    let hops = HopSet::new("source", &["agent"], "client", 0, Duration::from_secs(1));
    let audience = Audience { url: format!("http://{addr}/events"), tally: Tally::new(7, 0, hops), token: None };
    let listening = CancellationToken::new();
    let task = audience.start(listening.clone()).await.unwrap();
    while state.subscribers() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in 0..10 {
        state.push(update(id));
    }
    // The HTTP side stops (its streams end) while updates go on into the backlog...
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.cancel();
    while state.subscribers() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in 10..20 {
        state.push(update(id));
    }
    // ...and starts again on the same port.
    let second = serve(addr, &state).await;
    while state.subscribers() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in 20..30 {
        state.push(update(id));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tokio::time::Instant::now() > deadline {
            break;
        }
        // Done once the audience has had time to take the live updates too.
        if state.subscribers() > 0 && tokio::time::Instant::now() + Duration::from_secs(29) > deadline {
            break;
        }
    }
    listening.cancel();
    let tally = task.await.unwrap().unwrap();
    second.cancel();
    let counts = (tally.delivered, tally.duplicates, tally.missed, tally.reconnects, tally.caught_up);
    assert_eq!((counts.0, counts.1, counts.2, counts.3), (30, 0, 0, 1), "delivered, duplicates, missed, reconnects");
    assert!(counts.4 >= 10, "what was pushed while it was away came from the backlog: {counts:?}");
}
