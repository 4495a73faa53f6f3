//! Home Assistant MQTT discovery: one device per lookout instance, a set of entities per camera.
//! Published retained, and again whenever Home Assistant announces `online` on its status topic.
//!
//! Availability: every entity follows `<prefix>/available`. The template maps our `stopped`
//! (clean exit) to `offline`, since HA ignores payloads it does not know.

use serde_json::{Value, json};

use crate::config::CameraConfig;
use crate::mqtt::Topics;

pub struct Discovery<'a> {
    pub topics: &'a Topics,
    /// Unique per instance (the MQTT client id, sanitised).
    pub node_id: String,
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

    fn base(&self, camera: &str, object: &str, name: &str) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), json!(name));
        m.insert(
            "unique_id".into(),
            json!(format!("{}_{camera}_{object}", self.node_id)),
        );
        m.insert(
            "object_id".into(),
            json!(format!("lookout_{camera}_{object}")),
        );
        m.insert(
            "device".into(),
            json!({
                "identifiers": [format!("lookout_{}", self.node_id)],
                "name": format!("Lookout {}", self.node_id),
                "manufacturer": "lookout",
                "model": "MiniCPM-V 4.6 (local)",
                "sw_version": env!("CARGO_PKG_VERSION"),
            }),
        );
        m.insert("availability_topic".into(), json!(self.topics.available()));
        m.insert(
            "availability_template".into(),
            json!("{{ 'online' if value == 'online' else 'offline' }}"),
        );
        m.insert("payload_available".into(), json!("online"));
        m.insert("payload_not_available".into(), json!("offline"));
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
        let mut add = |component: &str, object: &str, name: &str, extra: Value| {
            let mut m = self.base(c, object, name);
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
                "icon": "mdi:cctv",
            }),
        );
        add(
            "image",
            "snapshot",
            &format!("{c} snapshot"),
            json!({ "image_topic": t("snapshot"), "content_type": "image/jpeg" }),
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
            }),
        );
        add(
            "text",
            "ask",
            &format!("{c} ask"),
            json!({ "command_topic": t("ask"), "max": 255, "mode": "text", "icon": "mdi:chat-question" }),
        );
        add(
            "sensor",
            "answer",
            &format!("{c} answer"),
            json!({
                "state_topic": t("last_answer"),
                "value_template": "{{ value_json.summary }}",
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
            }),
        );
        out
    }

    /// Empty retained payloads that remove a camera's entities (camera removed on reload).
    pub fn remove_camera(&self, camera: &str) -> Vec<String> {
        [
            ("sensor", "description"),
            ("event", "described"),
            ("image", "snapshot"),
            ("button", "describe"),
            ("switch", "enabled"),
            ("text", "ask"),
            ("sensor", "answer"),
            ("binary_sensor", "status"),
        ]
        .iter()
        .map(|(component, object)| self.config_topic(component, camera, object))
        .collect()
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
        }
        assert_eq!(d.remove_camera("porch").len(), 8);
    }
}
