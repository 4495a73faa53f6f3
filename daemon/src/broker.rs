//! The embedded MQTT broker (rumqttd), started when no `mqtt.url` is configured so that
//! `lookout run` works out of the box. It listens on loopback by default and has no
//! authentication: expose it only on trusted networks (`mqtt.listen`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use anyhow::Context;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

pub fn start(listen: SocketAddr) -> anyhow::Result<()> {
    // rumqttd reports a failed bind only in its own log: probe first for a clear error.
    TcpListener::bind(listen)
        .with_context(|| format!("mqtt.listen: the embedded broker cannot listen on {listen}"))?;
    let server = ServerSettings {
        name: "v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: crate::mqtt::MAX_PACKET,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1010,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Config::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                log::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .context("starting the embedded broker thread")?;
    log::info!("embedded MQTT broker listening on {listen}");
    Ok(())
}
