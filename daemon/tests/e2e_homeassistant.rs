//! Home Assistant's side of discovery: the entities it would create from lookout's discovery
//! payloads, driven the way HA drives them. Every topic comes from the discovery payloads, never
//! from lookout's documentation, and every template is rendered as HA renders it (Jinja, with
//! `value` and `value_json`), so a wrong topic, payload or template fails here.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Prefixes other than the defaults, so that a topic built without them fails here.
const TOPIC_PREFIX: &str = "site/garden";
const DISCOVERY_PREFIX: &str = "ha";

#[test]
fn home_assistant_entities_work_from_discovery_alone() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let cfg = config(
        dir.path(),
        &format!(
            "url = \"{}\"\ntopic_prefix = \"{TOPIC_PREFIX}\"\ndiscovery_prefix = \"{DISCOVERY_PREFIX}\"",
            broker.url()
        ),
        &testsrc_camera("porch", "interval = 0\nscene_change = 0"),
    );
    let mut daemon = Daemon::start(dir.path(), &cfg);
    let entity = |component: &str, object: &str| -> Value {
        let topic = format!("{DISCOVERY_PREFIX}/{component}/e2e/porch_{object}/config");
        sub.wait(&topic, T, |m| m.topic == topic).json()
    };
    let latest = |topic: &Value| -> Msg {
        let topic = topic.as_str().unwrap();
        sub.wait(topic, T, |m| m.topic == topic);
        sub.on(topic).pop().unwrap()
    };

    // Availability: online now.
    let button = entity("button", "describe");
    let instance = &button["availability"][0];
    assert!(
        instance["topic"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{TOPIC_PREFIX}/")),
        "{button}"
    );
    let available = latest(&instance["topic"]).text();
    assert_eq!(
        render(&instance["value_template"], &available),
        instance["payload_available"].as_str().unwrap()
    );

    // The camera's connectivity sensor is on once it streams.
    let status = entity("binary_sensor", "status");
    assert_eq!(status["device_class"], "connectivity");
    let until = std::time::Instant::now() + T;
    while render(
        &status["value_template"],
        &latest(&status["state_topic"]).text(),
    ) != status["payload_on"].as_str().unwrap()
    {
        assert!(std::time::Instant::now() < until, "camera never connected");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Pressing the button: the event entity fires, the image shows the picture, the sensor
    // shows the summary with the full text among its attributes.
    sub.publish(
        button["command_topic"].as_str().unwrap(),
        button["payload_press"].as_str().unwrap(),
    );
    let event = entity("event", "described");
    let fired = latest(&event["state_topic"]).json();
    assert!(
        event["event_types"]
            .as_array()
            .unwrap()
            .contains(&fired["event_type"]),
        "{fired}"
    );
    let image = entity("image", "snapshot");
    assert_eq!(image["content_type"], "image/jpeg");
    assert_eq!(
        &latest(&image["image_topic"]).payload[..2],
        &[0xFF, 0xD8],
        "a JPEG"
    );
    let sensor = entity("sensor", "description");
    let state = latest(&sensor["state_topic"]).text();
    let shown = render(&sensor["value_template"], &state);
    assert_eq!(shown, fired["summary"].as_str().unwrap());
    assert!(shown.chars().count() <= 255, "HA's state limit");
    let attributes = latest(&sensor["json_attributes_topic"]).json();
    assert_eq!(attributes["text"], fired["text"]);

    // Typing a question into the text entity: the answer sensor shows its summary.
    let text = entity("text", "ask");
    sub.publish(text["command_topic"].as_str().unwrap(), "Who is there?");
    let answer = entity("sensor", "answer");
    let topic = answer["state_topic"].as_str().unwrap().to_string();
    let answered = sub.wait("the answer", T, |m| {
        m.topic == topic && m.json()["question"] == "Who is there?"
    });
    assert!(answered.json()["error"].is_null(), "{}", answered.text());
    assert_eq!(
        render(&answer["value_template"], &answered.text()),
        answered.json()["summary"].as_str().unwrap()
    );
    // The text box shows the question asked (retained: it survives a Home Assistant restart).
    let asked = latest(&text["state_topic"]);
    assert_eq!(asked.text(), "Who is there?");
    let late = Subscriber::connect(broker.port, None);
    let text_state = text["state_topic"].as_str().unwrap().to_string();
    late.wait("the retained question", T, |m| {
        m.topic == text_state && m.retain
    });

    // A refused question still reaches the answer sensor, which shows why.
    sub.publish(text["command_topic"].as_str().unwrap(), "   ");
    let refused = sub.wait("the refusal", T, |m| {
        m.topic == topic && m.json()["error"] == "empty question"
    });
    assert_eq!(
        render(&answer["value_template"], &refused.text()),
        "not answered: empty question"
    );

    // Entity ids as Home Assistant 2025.10+ wants them: default_entity_id, instance included;
    // controls and diagnostics out of the main card; descriptions subscribed at QoS 1.
    assert_eq!(
        answer["default_entity_id"],
        "sensor.lookout_e2e_porch_answer"
    );
    assert!(answer.get("object_id").is_none(), "{answer}");
    assert_eq!(answer["device"]["name"], "Lookout e2e");
    assert_eq!(
        answer["device"]["model"], "minicpmv46-tiny-16x",
        "the model it runs"
    );
    assert_eq!(entity("switch", "enabled")["entity_category"], "config");
    assert_eq!(status["entity_category"], "diagnostic");
    assert_eq!(event["qos"], 1);

    // The switch turns the camera off and on, and reports it; while it is off, what the camera
    // sees (the description) is unavailable, and the switch is not.
    let switch = entity("switch", "enabled");
    let camera_available = |entity: &Value| -> bool {
        entity["availability"].as_array().unwrap().iter().all(|a| {
            render(&a["value_template"], &latest(&a["topic"]).text())
                == a["payload_available"].as_str().unwrap()
        })
    };
    assert!(camera_available(&sensor));
    for (command, state) in [("payload_off", "state_off"), ("payload_on", "state_on")] {
        sub.publish(
            switch["command_topic"].as_str().unwrap(),
            switch[command].as_str().unwrap(),
        );
        let topic = switch["state_topic"].as_str().unwrap().to_string();
        let expected = switch[state].as_str().unwrap().to_string();
        let until = std::time::Instant::now() + T;
        while sub.on(&topic).last().map(|m| m.text()) != Some(expected.clone()) {
            assert!(std::time::Instant::now() < until, "switch never {expected}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let on = state == "state_on";
        while camera_available(&sensor) != on {
            assert!(
                std::time::Instant::now() < until,
                "description availability never {on}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(camera_available(&switch), "the switch stays available");
    }

    // Home Assistant restarting (its birth message under the discovery prefix): the entities are
    // announced again.
    let config_topic = format!("{DISCOVERY_PREFIX}/button/e2e/porch_describe/config");
    let announced = sub.on(&config_topic).len();
    sub.publish(&format!("{DISCOVERY_PREFIX}/status"), "online");
    sub.wait_count(&config_topic, announced + 1, T);

    // Stopped cleanly: every entity becomes unavailable.
    assert!(daemon.term().success());
    let availability = instance["topic"].as_str().unwrap();
    sub.wait("stopped", T, |m| {
        m.topic == availability && m.text() == "stopped"
    });
    let available = latest(&instance["topic"]).text();
    assert_eq!(
        render(&instance["value_template"], &available),
        instance["payload_not_available"].as_str().unwrap()
    );
}

#[test]
fn a_start_without_a_camera_removes_its_entities() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let mqtt = format!("url = \"{}\"", broker.url());
    let two = format!(
        "{}{}",
        testsrc_camera("porch", "interval = 0\nscene_change = 0"),
        testsrc_camera("shed", "interval = 0\nscene_change = 0")
    );
    let sub = Subscriber::connect(broker.port, None);
    let mut daemon = Daemon::start(dir.path(), &config(dir.path(), &mqtt, &two));
    let shed = "homeassistant/switch/e2e/shed_enabled/config";
    sub.wait("the shed's entities", T, |m| {
        m.topic == shed && !m.payload.is_empty()
    });
    assert!(daemon.term().success());

    // The shed is taken out of the file while lookout is stopped; the next start clears every
    // retained config of it, and keeps the porch's.
    let one = testsrc_camera("porch", "interval = 0\nscene_change = 0");
    let mut daemon = Daemon::start(dir.path(), &config(dir.path(), &mqtt, &one));
    sub.wait("the shed's switch removed", T, |m| {
        m.topic == shed && m.payload.is_empty()
    });
    let late = Subscriber::connect(broker.port, None);
    let porch = "homeassistant/switch/e2e/porch_enabled/config";
    late.wait("the porch's entities", T, |m| m.topic == porch && m.retain);
    std::thread::sleep(Duration::from_millis(500));
    let stale: Vec<String> = late
        .all()
        .into_iter()
        .filter(|m| m.topic.contains("/shed_") && !m.payload.is_empty())
        .map(|m| m.topic)
        .collect();
    assert!(
        stale.is_empty(),
        "retained configs of the removed camera: {stale:?}"
    );
    assert!(daemon.term().success());
}

/// The event entity gets the very first description: Home Assistant subscribes to an entity's
/// topic only when its discovery config arrives, so lookout must not publish the first event
/// before that. This client does what Home Assistant does: it subscribes to discovery, and to
/// the event's state topic once the config is there.
#[test]
fn the_first_description_reaches_an_entity_subscribed_on_discovery() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut options = MqttOptions::new("e2e-ha", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 64);
    client
        .subscribe("homeassistant/event/+/+/config", QoS::AtLeastOnce)
        .unwrap();
    let (events_tx, events) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for event in connection.iter() {
            let Ok(Event::Incoming(Packet::Publish(p))) = event else {
                continue;
            };
            if p.topic.ends_with("/config") {
                let config: Value = serde_json::from_slice(&p.payload).unwrap();
                let state = config["state_topic"].as_str().unwrap().to_string();
                let qos = match config["qos"].as_u64() {
                    Some(1) => QoS::AtLeastOnce,
                    _ => QoS::AtMostOnce,
                };
                // Home Assistant sets the entity up first: a busy one takes about a second.
                std::thread::sleep(Duration::from_secs(1));
                let _ = client.try_subscribe(state, qos);
            } else {
                let _ = events_tx.send(String::from_utf8_lossy(&p.payload).to_string());
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // A camera that describes its first frame at once, with the tiny model: done in
    // milliseconds, long before a slow subscriber would be ready without the wait.
    let cfg = config(
        dir.path(),
        &format!("url = \"{}\"", broker.url()),
        &testsrc_camera("porch", "interval = 1\nscene_change = 0"),
    );
    let mut daemon = Daemon::start(dir.path(), &cfg);
    daemon.wait_log(" described in ", T);
    let first_id = daemon.described_ids()[0].clone();
    let first: Value = serde_json::from_str(&events.recv_timeout(T).expect("an event")).unwrap();
    assert_eq!(
        first["id"],
        first_id.as_str(),
        "the first description is the first event"
    );
    assert!(daemon.term().success());
}
