//! MQTT, split the rumqttc way: [`connection`] owns the event loop (poll, backoff, forward
//! events), [`session`] owns the state (subscriptions, retained states, the outbox in flight).

pub mod connection;
pub mod session;
pub mod tls;

use std::time::Duration;

use anyhow::Context;
use rumqttc::{LastWill, MqttOptions, QoS, Transport};

use crate::config::{Broker, Config};

/// Big enough for full-HD JPEG snapshots (the rumqttc default is 10 KiB).
pub const MAX_PACKET: usize = 8 * 1024 * 1024;

/// Topic names, in one place.
#[derive(Clone, Debug)]
pub struct Topics {
    pub prefix: String,
    pub discovery_prefix: String,
}

impl Topics {
    pub fn new(config: &Config) -> Topics {
        Topics {
            prefix: config.mqtt.topic_prefix.clone(),
            discovery_prefix: config.mqtt.discovery_prefix.clone(),
        }
    }
    pub fn available(&self) -> String {
        format!("{}/available", self.prefix)
    }
    pub fn camera(&self, camera: &str, leaf: &str) -> String {
        format!("{}/{camera}/{leaf}", self.prefix)
    }
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }
    /// `<prefix>/<camera>/<leaf>` → (camera, leaf).
    pub fn parse_camera_topic<'a>(&self, topic: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        rest.split_once('/')
    }
}

pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Client options from the configuration; reads the password file and TLS material now, so a
/// problem is an error naming the key rather than an endless reconnect loop.
pub fn options(config: &Config) -> anyhow::Result<MqttOptions> {
    let (host, port, tls) = match config.broker() {
        Broker::Embedded(addr) => {
            // An embedded broker on 0.0.0.0 or :: is reached on loopback.
            let ip = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            (ip, addr.port(), false)
        }
        Broker::External { host, port, tls } => (host, port, tls),
    };
    let mut o = MqttOptions::new(config.client_id(), host.clone(), port);
    o.set_keep_alive(Duration::from_secs(config.mqtt.keep_alive));
    // Clean sessions: rumqttc keeps in-flight messages in memory only, so durability comes from
    // our outbox, and we resubscribe on every ConnAck.
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_request_channel_capacity(64);
    let topics = Topics::new(config);
    o.set_last_will(LastWill::new(
        topics.available(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &config.mqtt.username {
        let password = config.mqtt_password()?.unwrap_or_default();
        o.set_credentials(user.clone(), password);
    }
    if tls {
        let client_config = tls::client_config(&config.mqtt).context("mqtt TLS settings")?;
        o.set_transport(Transport::Tls(rumqttc::TlsConfiguration::Rustls(
            client_config,
        )));
    }
    Ok(o)
}
