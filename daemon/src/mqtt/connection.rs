//! The MQTT event loop: polls rumqttc, forwards what the session needs, and reconnects with an
//! exponential backoff (rumqttc itself retries immediately, hammering a broker that is down).

use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing, Packet};
use tokio::sync::mpsc;

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum ConnEvent {
    Connected,
    Disconnected(String),
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    /// The broker acknowledged the QoS 1 publish with this packet id.
    PubAck(u16),
    /// A QoS ≥ 1 publish left with this packet id (QoS 0 ones are not forwarded).
    Published(u16),
    SubAck,
}

/// Runs until the session goes away or a clean disconnect completes.
pub async fn run(mut eventloop: EventLoop, broker: String, tx: mpsc::Sender<ConnEvent>) {
    let mut backoff = MIN_BACKOFF;
    let mut last_error = String::new();
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = MIN_BACKOFF;
                last_error.clear();
                log::info!("connected to MQTT broker {broker}");
                ConnEvent::Connected
            }
            Ok(Event::Incoming(Packet::Publish(p))) => ConnEvent::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
            },
            Ok(Event::Incoming(Packet::PubAck(a))) => ConnEvent::PubAck(a.pkid),
            Ok(Event::Incoming(Packet::SubAck(_))) => ConnEvent::SubAck,
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => ConnEvent::Published(pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                let _ = tx
                    .send(ConnEvent::Disconnected("disconnected".into()))
                    .await;
                return;
            }
            Ok(_) => continue,
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                let message = explain(&e, &broker);
                // Log each distinct problem once at its level, repeats at debug: a broker down for
                // an hour should not flood the journal.
                if message != last_error {
                    if matches!(
                        e,
                        ConnectionError::ConnectionRefused(_) | ConnectionError::Tls(_)
                    ) {
                        log::error!("MQTT: {message}; retrying");
                    } else {
                        log::warn!("MQTT: {message}; retrying");
                    }
                    last_error = message.clone();
                } else {
                    log::debug!("MQTT: {message}; retrying in {backoff:?}");
                }
                if tx.send(ConnEvent::Disconnected(message)).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

fn explain(e: &ConnectionError, broker: &str) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => format!(
                "broker {broker} refused the credentials ({code:?}): check mqtt.username and mqtt.password / mqtt.password_file"
            ),
            ConnectReturnCode::BadClientId => {
                format!("broker {broker} rejected the client id (mqtt.client_id)")
            }
            other => format!("broker {broker} refused the connection: {other:?}"),
        },
        ConnectionError::Tls(t) => {
            format!("TLS with {broker} failed: {t} (mqtt.ca, mqtt.cert, mqtt.key)")
        }
        ConnectionError::Io(io) => format!("cannot reach broker {broker}: {io}"),
        other => format!("connection to {broker} lost: {other}"),
    }
}
