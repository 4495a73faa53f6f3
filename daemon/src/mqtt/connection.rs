//! The MQTT event loop: polls rumqttc, forwards what the session needs, and reconnects with an
//! exponential backoff (rumqttc itself retries immediately, hammering a broker that is down).

use std::time::Duration;

use rumqttc::{Outgoing, v5};
use tokio::sync::mpsc;

use super::Reply;

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum ConnEvent {
    Connected,
    Disconnected(String),
    Message {
        topic: String,
        payload: Vec<u8>,
        /// The sender's MQTT 5 response topic and correlation data, when it gave them.
        reply: Option<Reply>,
    },
    /// The broker acknowledged the QoS 1 publish with this packet id.
    PubAck(u16),
    /// A QoS ≥ 1 publish left with this packet id (QoS 0 ones are not forwarded).
    Published(u16),
    SubAck,
}

/// What one poll of an event loop yielded, whatever the protocol version.
pub enum Polled {
    Event(ConnEvent),
    /// Nothing the session needs (pings, our own subscribe, …).
    Nothing,
    /// A clean disconnect went out, or the client is gone: the loop ends.
    Done,
    /// The connection failed; `severe` problems (refused, TLS) are logged as errors.
    Failed {
        message: String,
        severe: bool,
    },
}

/// An rumqttc event loop of either protocol version.
pub trait Poll {
    fn poll_once(&mut self, broker: &str) -> impl Future<Output = Polled> + Send;
}

impl Poll for rumqttc::EventLoop {
    async fn poll_once(&mut self, broker: &str) -> Polled {
        use rumqttc::{ConnectReturnCode as Code, ConnectionError, Event, Packet};
        match self.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => Polled::Event(ConnEvent::Connected),
            Ok(Event::Incoming(Packet::Publish(p))) => Polled::Event(ConnEvent::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
                reply: None,
            }),
            Ok(Event::Incoming(Packet::PubAck(a))) => Polled::Event(ConnEvent::PubAck(a.pkid)),
            Ok(Event::Incoming(Packet::SubAck(_))) => Polled::Event(ConnEvent::SubAck),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                Polled::Event(ConnEvent::Published(pkid))
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(ConnectionError::RequestsDone) => {
                Polled::Done
            }
            Ok(_) => Polled::Nothing,
            Err(ConnectionError::ConnectionRefused(code)) => refused(
                broker,
                matches!(code, Code::BadUserNamePassword | Code::NotAuthorized),
                matches!(code, Code::BadClientId),
                &format!("{code:?}"),
            ),
            Err(ConnectionError::Tls(t)) => tls_failed(broker, &t.to_string()),
            Err(ConnectionError::Io(io)) => unreachable_broker(broker, &io),
            Err(other) => match tls_alert(&other) {
                Some(alert) => tls_failed(broker, &alert),
                None => lost(broker, &other.to_string()),
            },
        }
    }
}

impl Poll for v5::EventLoop {
    async fn poll_once(&mut self, broker: &str) -> Polled {
        use v5::mqttbytes::v5::{ConnectReturnCode as Code, Packet};
        use v5::{ConnectionError, Event};
        match self.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => Polled::Event(ConnEvent::Connected),
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let reply = p.properties.and_then(|props| {
                    Some(Reply {
                        topic: props.response_topic.filter(|t| !t.is_empty())?,
                        correlation_data: props.correlation_data.map(|d| d.to_vec()),
                    })
                });
                Polled::Event(ConnEvent::Message {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                    reply,
                })
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => Polled::Event(ConnEvent::PubAck(a.pkid)),
            Ok(Event::Incoming(Packet::SubAck(_))) => Polled::Event(ConnEvent::SubAck),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                Polled::Event(ConnEvent::Published(pkid))
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(ConnectionError::RequestsDone) => {
                Polled::Done
            }
            Ok(_) => Polled::Nothing,
            Err(ConnectionError::ConnectionRefused(code)) => refused(
                broker,
                matches!(code, Code::BadUserNamePassword | Code::NotAuthorized),
                matches!(code, Code::ClientIdentifierNotValid | Code::BadClientId),
                &format!("{code:?}"),
            ),
            Err(ConnectionError::Tls(t)) => tls_failed(broker, &t.to_string()),
            Err(ConnectionError::Io(io)) => unreachable_broker(broker, &io),
            Err(other) => match tls_alert(&other) {
                Some(alert) => tls_failed(broker, &alert),
                None => lost(broker, &other.to_string()),
            },
        }
    }
}

fn refused(broker: &str, credentials: bool, client_id: bool, code: &str) -> Polled {
    let message = if credentials {
        format!(
            "broker {broker} refused the credentials ({code}): check mqtt.username and mqtt.password / mqtt.password_file"
        )
    } else if client_id {
        format!("broker {broker} rejected the client id (mqtt.client_id)")
    } else {
        format!("broker {broker} refused the connection: {code}")
    };
    Polled::Failed {
        message,
        severe: true,
    }
}

/// A fatal TLS alert from the broker in `error`. With TLS 1.3 the broker checks a client
/// certificate after the handshake, so its refusal (certificate required, bad or unknown) comes
/// on the first read, as a read error: it is our TLS settings that failed, not a connection that
/// dropped. rumqttc passes that read error on as text, so the alert is found by rustls's wording.
fn tls_alert(error: &dyn std::error::Error) -> Option<String> {
    let text = error.to_string();
    let at = text.find("received fatal alert")?;
    Some(text[at..].to_string())
}

fn tls_failed(broker: &str, error: &str) -> Polled {
    Polled::Failed {
        message: format!("TLS with {broker} failed: {error} (mqtt.ca, mqtt.cert, mqtt.key)"),
        severe: true,
    }
}

fn unreachable_broker(broker: &str, io: &std::io::Error) -> Polled {
    Polled::Failed {
        message: format!("cannot reach broker {broker}: {io}"),
        severe: false,
    }
}

fn lost(broker: &str, error: &str) -> Polled {
    Polled::Failed {
        message: format!("connection to {broker} lost: {error}"),
        severe: false,
    }
}

/// Runs until the session goes away or a clean disconnect completes.
pub async fn run(mut eventloop: impl Poll, broker: String, tx: mpsc::Sender<ConnEvent>) {
    let mut backoff = MIN_BACKOFF;
    let mut last_error = String::new();
    loop {
        let event = match eventloop.poll_once(&broker).await {
            Polled::Event(ConnEvent::Connected) => {
                backoff = MIN_BACKOFF;
                last_error.clear();
                log::info!("connected to MQTT broker {broker}");
                ConnEvent::Connected
            }
            Polled::Event(event) => event,
            Polled::Nothing => continue,
            Polled::Done => {
                let _ = tx
                    .send(ConnEvent::Disconnected("disconnected".into()))
                    .await;
                return;
            }
            Polled::Failed { message, severe } => {
                // Log each distinct problem once at its level, repeats at debug: a broker down for
                // an hour should not flood the journal.
                if message != last_error {
                    if severe {
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
