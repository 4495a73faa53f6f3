//! MQTT, split the rumqttc way: [`connection`] owns the event loop (poll, backoff, forward
//! events), [`session`] owns the state (subscriptions, retained states, the outbox in flight).
//! The client speaks MQTT 5 to external brokers (`mqtt.protocol`), so that an asker's response
//! topic and correlation data can be honoured, and 3.1.1 to the embedded broker.

pub mod connection;
pub mod session;
pub mod tls;

use std::time::Duration;

use anyhow::Context;
use rumqttc::{LastWill, MqttOptions, QoS, Transport, v5};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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

fn qos_v5(qos: QoS) -> v5::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// Where an MQTT 5 asker wants its answer: the response topic and correlation data of its
/// request.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub topic: String,
    pub correlation_data: Option<Vec<u8>>,
}

/// The client half, for either protocol version. Every call queues a request for the event
/// loop without waiting.
#[derive(Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

impl Client {
    /// Publishes; `correlation_data` travels as an MQTT 5 property (a 3.1.1 client drops it).
    pub fn try_publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
        correlation_data: Option<&[u8]>,
    ) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_publish(topic, qos, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => match correlation_data {
                None => c.try_publish(topic, qos_v5(qos), retain, payload),
                Some(data) => {
                    let properties = v5::mqttbytes::v5::PublishProperties {
                        correlation_data: Some(data.to_vec().into()),
                        ..Default::default()
                    };
                    c.try_publish_with_properties(topic, qos_v5(qos), retain, payload, properties)
                }
            }
            .map_err(|e| e.to_string()),
        }
    }

    pub fn try_subscribe_many(&self, filters: Vec<(String, QoS)>) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe_many(
                    filters
                        .into_iter()
                        .map(|(path, qos)| rumqttc::SubscribeFilter::new(path, qos)),
                )
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe_many(
                    filters
                        .into_iter()
                        .map(|(path, qos)| v5::mqttbytes::v5::Filter::new(path, qos_v5(qos))),
                )
                .map_err(|e| e.to_string()),
        }
    }

    pub fn try_disconnect(&self) -> Result<(), String> {
        match self {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        }
    }
}

/// Where to connect, and how: host, port, TLS, credentials, all read from the configuration
/// now, so a problem is an error naming the key rather than an endless reconnect loop.
struct Settings {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    tls: Option<Transport>,
}

fn settings(config: &Config) -> anyhow::Result<Settings> {
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
    let credentials = match &config.mqtt.username {
        Some(user) => Some((user.clone(), config.mqtt_password()?.unwrap_or_default())),
        None => None,
    };
    let tls = if tls {
        let client_config = tls::client_config(&config.mqtt).context("mqtt TLS settings")?;
        Some(Transport::Tls(rumqttc::TlsConfiguration::Rustls(
            client_config,
        )))
    } else {
        None
    };
    Ok(Settings {
        host,
        port,
        credentials,
        tls,
    })
}

/// Checks everything the connection will need (password file, TLS material) without
/// connecting.
pub fn check(config: &Config) -> anyhow::Result<()> {
    settings(config).map(|_| ())
}

/// Creates the client and spawns its event loop, which forwards events to `events`.
///
/// Clean sessions either way: rumqttc keeps in-flight messages in memory only, so durability
/// comes from our outbox, and the session resubscribes on every ConnAck.
pub fn connect(
    config: &Config,
    events: mpsc::Sender<connection::ConnEvent>,
) -> anyhow::Result<(Client, JoinHandle<()>)> {
    let s = settings(config)?;
    let broker = format!("{}:{}", s.host, s.port);
    let keep_alive = Duration::from_secs(config.mqtt.keep_alive);
    let will = (Topics::new(config).available(), "offline");
    if config.mqtt_v5() {
        let mut o = v5::MqttOptions::new(config.client_id(), s.host, s.port);
        o.set_keep_alive(keep_alive);
        o.set_clean_start(true);
        o.set_max_packet_size(Some(MAX_PACKET as u32));
        o.set_request_channel_capacity(64);
        o.set_last_will(v5::mqttbytes::v5::LastWill::new(
            will.0,
            will.1,
            v5::mqttbytes::QoS::AtLeastOnce,
            true,
            None,
        ));
        if let Some((user, password)) = s.credentials {
            o.set_credentials(user, password);
        }
        if let Some(tls) = s.tls {
            o.set_transport(tls);
        }
        let (client, eventloop) = v5::AsyncClient::new(o, 64);
        let task = tokio::spawn(connection::run(eventloop, broker, events));
        Ok((Client::V5(client), task))
    } else {
        let mut o = MqttOptions::new(config.client_id(), s.host, s.port);
        o.set_keep_alive(keep_alive);
        o.set_clean_session(true);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o.set_request_channel_capacity(64);
        o.set_last_will(LastWill::new(will.0, will.1, QoS::AtLeastOnce, true));
        if let Some((user, password)) = s.credentials {
            o.set_credentials(user, password);
        }
        if let Some(tls) = s.tls {
            o.set_transport(tls);
        }
        let (client, eventloop) = rumqttc::AsyncClient::new(o, 64);
        let task = tokio::spawn(connection::run(eventloop, broker, events));
        Ok((Client::V311(client), task))
    }
}
