//! Home Assistant MQTT discovery: one device per lookout instance, a set of entities per camera.
//! Published retained, and again whenever Home Assistant announces `online` on its status topic.
//!
//! Availability: every entity follows `<prefix>/available`. The template maps our `stopped`
//! (clean exit) to `offline`, since HA ignores payloads it does not know. Entities that show
//! what a camera sees (its description, snapshot, detections) also follow that camera's
//! `status`, so a camera that is offline or disabled does not show stale data as current; its
//! controls (the switch that enables it again) and its connectivity sensor do not.

use serde_json::{Value, json};

use crate::config::CameraConfig;
use crate::mqtt::Topics;

pub struct Discovery<'a> {
    pub topics: &'a Topics,
    /// Unique per instance (the MQTT client id, sanitised).
    pub node_id: String,
    /// The model the instance runs, as the device's model (`[model]`'s directory or hub id).
    pub model: String,
}

/// `[a-zA-Z0-9_-]` only, as HA requires in discovery topics.
pub fn node_id(client_id: &str) -> String {
    client_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Discovery<'_> {
    fn config_topic(&self, component: &str, camera: &str, object: &str) -> String {
        format!(
            "{}/{component}/{}/{camera}_{object}/config",
            self.topics.discovery_prefix, self.node_id
        )
    }

    /// What the instance is called once the word lookout is taken off its node id: `host` for
    /// `lookout-host`, `e2e` for `e2e`, empty for `lookout`.
    fn instance(&self) -> &str {
        let id = self.node_id.as_str();
        match id.get(..7) {
            Some(head) if head.eq_ignore_ascii_case("lookout") => {
                id[7..].trim_start_matches(['-', '_'])
            }
            _ => id,
        }
    }

    /// `<domain>.lookout_<instance>_<camera>_<object>`: the entity id Home Assistant gives the
    /// entity on creation (`object_id` is deprecated from 2025.10). The instance is part of it,
    /// so two lookouts with a camera of the same name do not collide.
    fn entity_id(&self, component: &str, camera: &str, object: &str) -> String {
        let slug: String = ["lookout", self.instance(), camera, object]
            .iter()
            .filter(|part| !part.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("_")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{component}.{slug}")
    }

    fn base(
        &self,
        component: &str,
        camera: &str,
        object: &str,
        name: &str,
    ) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), json!(name));
        m.insert(
            "unique_id".into(),
            json!(format!("{}_{camera}_{object}", self.node_id)),
        );
        m.insert(
            "default_entity_id".into(),
            json!(self.entity_id(component, camera, object)),
        );
        let device_name = match self.instance() {
            "" => "Lookout".to_string(),
            instance => format!("Lookout {instance}"),
        };
        m.insert(
            "device".into(),
            json!({
                "identifiers": [format!("lookout_{}", self.node_id)],
                "name": device_name,
                "manufacturer": "lookout",
                "model": self.model,
                "sw_version": env!("CARGO_PKG_VERSION"),
            }),
        );
        m.insert(
            "availability".into(),
            json!([{
                "topic": self.topics.available(),
                "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }]),
        );
        m.insert("availability_mode".into(), json!("all"));
        m.insert(
            "origin".into(),
            json!({ "name": "lookout", "sw_version": env!("CARGO_PKG_VERSION") }),
        );
        m
    }

    /// (config topic, payload) for every entity of `camera`.
    pub fn camera(&self, camera: &CameraConfig) -> Vec<(String, String)> {
        let c = camera.name.as_str();
        let t = |leaf: &str| self.topics.camera(c, leaf);
        let mut out = Vec::new();
        // Entities showing what the camera sees, and so unavailable while it is not streaming.
        let seen = |object: &str| {
            matches!(object, "description" | "described" | "snapshot")
                || object.ends_with("_occupancy")
                || object.ends_with("_count")
                || object.ends_with("_snapshot")
                || object.starts_with("sensor_")
        };
        let camera_status = json!({
            "topic": t("status"),
            "value_template": "{{ 'online' if value_json.state == 'online' else 'offline' }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        });
        let mut add = |component: &str, object: &str, name: &str, extra: Value| {
            let mut m = self.base(component, c, object, name);
            if seen(object)
                && let Some(Value::Array(list)) = m.get_mut("availability")
            {
                list.push(camera_status.clone());
            }
            if let Value::Object(extra) = extra {
                m.extend(extra);
            }
            out.push((
                self.config_topic(component, c, object),
                Value::Object(m).to_string(),
            ));
        };
        add(
            "sensor",
            "description",
            &format!("{c} description"),
            json!({
                "state_topic": t("state"),
                "value_template": "{{ value_json.summary }}",
                "json_attributes_topic": t("state"),
                "icon": "mdi:text-box-outline",
            }),
        );
        add(
            "event",
            "described",
            &format!("{c} described"),
            json!({
                "state_topic": t("description"),
                "event_types": ["description"],
                // Descriptions go out through the outbox at QoS 1: subscribe at 1 as well, or
                // at-least-once delivery stops at the broker.
                "qos": 1,
                "icon": "mdi:cctv",
            }),
        );
        add(
            "image",
            "snapshot",
            &format!("{c} snapshot"),
            json!({ "image_topic": t("snapshot"), "content_type": "image/jpeg", "icon": "mdi:camera-outline" }),
        );
        add(
            "button",
            "describe",
            &format!("{c} describe now"),
            json!({ "command_topic": t("describe/set"), "payload_press": "PRESS", "icon": "mdi:eye-refresh" }),
        );
        add(
            "switch",
            "enabled",
            &format!("{c} enabled"),
            json!({
                "command_topic": t("enabled/set"),
                "state_topic": t("enabled/state"),
                "payload_on": "ON",
                "payload_off": "OFF",
                "state_on": "ON",
                "state_off": "OFF",
                "entity_category": "config",
                "icon": "mdi:cctv",
            }),
        );
        add(
            "text",
            "ask",
            &format!("{c} ask"),
            // The state is the last question asked (retained), so the box is not `unknown` after
            // Home Assistant restarts.
            json!({
                "command_topic": t("ask"),
                "state_topic": t("ask/state"),
                "max": 255,
                "mode": "text",
                "icon": "mdi:chat-question",
            }),
        );
        add(
            "sensor",
            "answer",
            &format!("{c} answer"),
            // A refused or failed question has no summary: its error is the state instead.
            json!({
                "state_topic": t("last_answer"),
                "value_template": "{{ value_json.summary if value_json.summary else ('not answered: ' ~ value_json.error)[:255] }}",
                "json_attributes_topic": t("last_answer"),
                "icon": "mdi:chat-processing",
            }),
        );
        add(
            "binary_sensor",
            "status",
            &format!("{c} camera"),
            json!({
                "state_topic": t("status"),
                "value_template": "{{ value_json.state }}",
                "payload_on": "online",
                "payload_off": "offline",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
            }),
        );
        for sensor in &camera.sensors {
            let object = format!("sensor_{}", sensor.name);
            let name = format!("{c} {}", sensor.name.replace(['_', '-'], " "));
            let topic = t(&format!("sensor/{}", sensor.name));
            // The answer is the state; confidence, scores, the question and timings are its
            // attributes.
            let mut entity = json!({
                "state_topic": topic,
                "json_attributes_topic": topic,
                "icon": "mdi:comment-question-outline",
            });
            let component = match sensor.answer.as_str() {
                "yes_no" => {
                    entity["value_template"] = json!("{{ 'ON' if value_json.value else 'OFF' }}");
                    "binary_sensor"
                }
                "number" => {
                    entity["value_template"] = json!("{{ value_json.value }}");
                    entity["state_class"] = json!("measurement");
                    if let Some(unit) = &sensor.unit {
                        entity["unit_of_measurement"] = json!(unit);
                    }
                    "sensor"
                }
                "choice" => {
                    entity["value_template"] = json!("{{ value_json.value }}");
                    entity["device_class"] = json!("enum");
                    entity["options"] = json!(sensor.options);
                    "sensor"
                }
                _ => {
                    entity["value_template"] = json!("{{ value_json.value[:255] }}");
                    "sensor"
                }
            };
            add(component, &object, &name, entity);
        }
        if let Some(detect) = &camera.detect {
            add(
                "sensor",
                "detector",
                &format!("{c} detector"),
                json!({
                    "state_topic": t("detector"),
                    "value_template": "{{ value_json.state }}",
                    "json_attributes_topic": t("detector"),
                    "entity_category": "diagnostic",
                    "icon": "mdi:target",
                }),
            );
            let occupied = "{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}";
            for label in &detect.labels {
                add(
                    "binary_sensor",
                    &format!("{label}_occupancy"),
                    &format!("{c} {label} occupancy"),
                    json!({
                        "state_topic": t(label),
                        "value_template": occupied,
                        "device_class": "occupancy",
                    }),
                );
                add(
                    "sensor",
                    &format!("{label}_count"),
                    &format!("{c} {label} count"),
                    json!({
                        "state_topic": t(label),
                        "state_class": "measurement",
                        "unit_of_measurement": "objects",
                        "icon": "mdi:counter",
                    }),
                );
                add(
                    "image",
                    &format!("{label}_snapshot"),
                    &format!("{c} {label} snapshot"),
                    json!({
                        "image_topic": t(&format!("{label}/snapshot")),
                        "content_type": "image/jpeg",
                        "icon": "mdi:image-filter-center-focus",
                    }),
                );
            }
            for zone in &detect.zones {
                for label in detect
                    .labels
                    .iter()
                    .filter(|l| zone.labels.is_empty() || zone.labels.contains(l))
                {
                    let leaf = format!("{}/{label}", zone.name);
                    add(
                        "binary_sensor",
                        &format!("{}_{label}_occupancy", zone.name),
                        &format!("{c} {} {label} occupancy", zone.name),
                        json!({
                            "state_topic": t(&leaf),
                            "value_template": occupied,
                            "device_class": "occupancy",
                        }),
                    );
                    add(
                        "sensor",
                        &format!("{}_{label}_count", zone.name),
                        &format!("{c} {} {label} count", zone.name),
                        json!({
                            "state_topic": t(&leaf),
                            "state_class": "measurement",
                            "unit_of_measurement": "objects",
                            "icon": "mdi:counter",
                        }),
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_has_the_required_keys() {
        let topics = Topics {
            prefix: "lookout".into(),
            discovery_prefix: "homeassistant".into(),
        };
        let d = Discovery {
            topics: &topics,
            node_id: node_id("lookout-host.lan"),
            model: "openbmb/MiniCPM-V-4.6".into(),
        };
        assert_eq!(d.node_id, "lookout-host_lan");
        let cam = CameraConfig {
            name: "porch".into(),
            ..CameraConfig::default()
        };
        let msgs = d.camera(&cam);
        assert_eq!(msgs.len(), 8);
        for (topic, payload) in msgs {
            let v: Value = serde_json::from_str(&payload).unwrap();
            assert!(
                v["unique_id"].is_string() && v["device"]["identifiers"].is_array(),
                "{topic}"
            );
            let component = topic.split('/').nth(1).unwrap();
            let required: &[&str] = match component {
                "sensor" | "binary_sensor" => &["state_topic"],
                "event" => &["state_topic", "event_types"],
                "image" => &["image_topic"],
                "button" | "text" => &["command_topic"],
                "switch" => &["command_topic", "state_topic"],
                other => panic!("unexpected {other}"),
            };
            for key in required {
                assert!(!v[key].is_null(), "{topic} lacks {key}");
            }
            // An icon, or a device class Home Assistant draws one for (by state).
            assert!(
                v["icon"].is_string() || v["device_class"].is_string(),
                "{topic} has no icon"
            );
        }

        // Detection adds a detector sensor, and per label (and zone) occupancy, count and
        // snapshot entities.
        let mut detect = crate::config::detect::DetectConfig {
            labels: vec!["person".into(), "car".into()],
            ..Default::default()
        };
        detect.zones.push(crate::config::detect::ZoneConfig {
            name: "driveway".into(),
            points: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]],
            labels: vec!["car".into()],
            ..Default::default()
        });
        let cam = CameraConfig {
            detect: Some(detect),
            ..cam
        };
        let msgs = d.camera(&cam);
        assert_eq!(msgs.len(), 8 + 1 + 2 * 3 + 2);
        for (topic, payload) in &msgs {
            let v: Value = serde_json::from_str(payload).unwrap();
            assert!(
                v["icon"].is_string() || v["device_class"].is_string(),
                "{topic} has no icon"
            );
        }
        let find = |suffix: &str| -> Value {
            let (_, p) = msgs.iter().find(|(t, _)| t.ends_with(suffix)).unwrap();
            serde_json::from_str(p).unwrap()
        };
        let occupancy = find("binary_sensor/lookout-host_lan/porch_driveway_car_occupancy/config");
        assert_eq!(occupancy["state_topic"], "lookout/porch/driveway/car");
        assert_eq!(occupancy["device_class"], "occupancy");
        let count = find("sensor/lookout-host_lan/porch_person_count/config");
        assert_eq!(count["state_topic"], "lookout/porch/person");
        let image = find("image/lookout-host_lan/porch_car_snapshot/config");
        assert_eq!(image["image_topic"], "lookout/porch/car/snapshot");
        assert_eq!(
            image["default_entity_id"],
            "image.lookout_host_lan_porch_car_snapshot"
        );
        assert!(image.get("object_id").is_none());
        assert_eq!(image["device"]["name"], "Lookout host_lan");
        assert_eq!(image["device"]["model"], "openbmb/MiniCPM-V-4.6");
        assert_eq!(find("porch_enabled/config")["entity_category"], "config");
        assert_eq!(find("porch_status/config")["entity_category"], "diagnostic");
        assert_eq!(find("porch_described/config")["qos"], 1);
        assert_eq!(
            find("porch_ask/config")["state_topic"],
            "lookout/porch/ask/state"
        );
    }

    #[test]
    fn each_sensor_is_the_entity_of_its_answer_type() {
        use crate::config::sensor::SensorConfig;
        let topics = Topics {
            prefix: "lookout".into(),
            discovery_prefix: "homeassistant".into(),
        };
        let d = Discovery {
            topics: &topics,
            node_id: "e2e".into(),
            model: "m".into(),
        };
        let sensor = |name: &str, answer: &str| SensorConfig {
            name: name.into(),
            question: "?".into(),
            answer: answer.into(),
            ..SensorConfig::default()
        };
        let cam = CameraConfig {
            name: "garage".into(),
            sensors: vec![
                sensor("door", "yes_no"),
                SensorConfig {
                    unit: Some("cars".into()),
                    ..sensor("cars", "number")
                },
                SensorConfig {
                    options: vec!["none".into(), "green".into()],
                    ..sensor("bins", "choice")
                },
                sensor("note", "text"),
            ],
            ..CameraConfig::default()
        };
        let msgs = d.camera(&cam);
        let find = |suffix: &str| -> Value {
            let (_, p) = msgs
                .iter()
                .find(|(t, _)| t.ends_with(suffix))
                .unwrap_or_else(|| panic!("no {suffix}"));
            serde_json::from_str(p).unwrap()
        };
        let door = find("binary_sensor/e2e/garage_sensor_door/config");
        assert_eq!(door["state_topic"], "lookout/garage/sensor/door");
        assert_eq!(
            door["default_entity_id"],
            "binary_sensor.lookout_e2e_garage_sensor_door"
        );
        let cars = find("sensor/e2e/garage_sensor_cars/config");
        assert_eq!(cars["unit_of_measurement"], "cars");
        let bins = find("sensor/e2e/garage_sensor_bins/config");
        assert_eq!(bins["device_class"], "enum");
        assert_eq!(bins["options"], serde_json::json!(["none", "green"]));
        let note = find("sensor/e2e/garage_sensor_note/config");
        assert!(note["device_class"].is_null() && note["unit_of_measurement"].is_null());
    }
}
