//! What detection has published, per camera, and what to publish next: a pure state, fed with
//! the detector's frame reports and the language model's first-sight descriptions, returning
//! the messages to send. The MQTT session only routes them (like rumqttc's `MqttState`).

use std::collections::{HashMap, HashSet};

use lookout_pipeline::track::{EventKind, TrackEvent};
use serde::Serialize;

use super::payloads::{Event, EventObject, TrackedObjectUpdate};
use super::{FrameReport, Snapshot};
use crate::mqtt::Topics;

/// A message to send, and how.
#[derive(Clone, Debug, PartialEq)]
pub enum Outgoing {
    /// Durable: through the outbox, QoS 1, in order.
    Outbox { topic: String, payload: String },
    /// A retained state, re-sent on every connect.
    State { topic: String, payload: Vec<u8> },
    /// Live data: QoS 0, not retained, not kept while disconnected.
    Live { topic: String, payload: String },
}

#[derive(Default)]
pub struct ObjectBook {
    cameras: HashMap<String, CameraBook>,
}

#[derive(Default)]
struct CameraBook {
    /// The latest published form of each object that has not ended.
    active: HashMap<String, EventObject>,
    with_snapshot: HashSet<String>,
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("payload types serialize")
}

impl ObjectBook {
    pub fn on_report(&mut self, topics: &Topics, report: FrameReport) -> Vec<Outgoing> {
        let FrameReport {
            camera,
            frame_size,
            events,
            counts,
            detections,
            snapshots,
        } = report;
        let book = self.cameras.entry(camera.clone()).or_default();
        let mut out = Vec::new();
        for Snapshot {
            object_id,
            label,
            jpeg,
        } in snapshots
        {
            book.with_snapshot.insert(object_id);
            out.push(Outgoing::State {
                topic: topics.camera(&camera, &format!("{label}/snapshot")),
                payload: jpeg,
            });
        }
        for event in events {
            out.push(book.event(topics, &camera, frame_size, event));
        }
        for (leaf, count) in counts {
            out.push(Outgoing::State {
                topic: topics.camera(&camera, &leaf),
                payload: count.to_string().into_bytes(),
            });
        }
        if let Some(d) = detections {
            out.push(Outgoing::Live {
                topic: topics.camera(&camera, "detections"),
                payload: json(&d),
            });
        }
        out
    }

    /// A first-sight description arrived: Frigate's `tracked_object_update`, and an `update`
    /// event carrying it while the object is still tracked.
    pub fn on_description(
        &mut self,
        topics: &Topics,
        camera: &str,
        object_id: &str,
        text: &str,
    ) -> Vec<Outgoing> {
        let mut out = vec![Outgoing::Outbox {
            topic: format!("{}/tracked_object_update", topics.prefix),
            payload: json(&TrackedObjectUpdate::description(object_id, camera, text)),
        }];
        let book = self.cameras.entry(camera.to_string()).or_default();
        if let Some(object) = book.active.get_mut(object_id) {
            let before = object.clone();
            object.description = Some(text.to_string());
            let event = Event {
                kind: "update",
                before,
                after: object.clone(),
            };
            out.push(Outgoing::Outbox {
                topic: format!("{}/events", topics.prefix),
                payload: json(&event),
            });
        }
        out
    }

    /// Every object of `camera` is gone (the camera was removed or lookout is reloading).
    pub fn forget(&mut self, camera: &str) {
        self.cameras.remove(camera);
    }
}

impl CameraBook {
    fn event(
        &mut self,
        topics: &Topics,
        camera: &str,
        frame_size: (u32, u32),
        event: TrackEvent,
    ) -> Outgoing {
        let id = event.after.id.clone();
        let has_snapshot = self.with_snapshot.contains(&id);
        let previous = self.active.get(&id);
        let description = previous.and_then(|p| p.description.clone());
        let after = EventObject::new(
            camera,
            &event.after,
            frame_size,
            has_snapshot,
            description.clone(),
        );
        // `before` is what subscribers saw last: our published form, not the tracker's.
        let before = match (event.kind, previous) {
            (EventKind::New, _) | (_, None) => after.clone(),
            (_, Some(p)) => p.clone(),
        };
        match event.kind {
            EventKind::End => {
                self.active.remove(&id);
                self.with_snapshot.remove(&id);
            }
            _ => {
                self.active.insert(id, after.clone());
            }
        }
        Outgoing::Outbox {
            topic: format!("{}/events", topics.prefix),
            payload: json(&Event {
                kind: Event::kind_name(event.kind),
                before,
                after,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_pipeline::detect::Detection;
    use lookout_pipeline::track::{Tracker, TrackerConfig};

    fn topics() -> Topics {
        Topics {
            prefix: "lookout".into(),
            discovery_prefix: "homeassistant".into(),
        }
    }

    fn report(events: Vec<TrackEvent>, snapshots: Vec<Snapshot>) -> FrameReport {
        FrameReport {
            camera: "yard".into(),
            frame_size: (640, 480),
            events,
            counts: vec![("person".into(), 1)],
            detections: None,
            snapshots,
        }
    }

    fn outbox(out: &[Outgoing]) -> Vec<(String, serde_json::Value)> {
        out.iter()
            .filter_map(|o| match o {
                Outgoing::Outbox { topic, payload } => {
                    Some((topic.clone(), serde_json::from_str(payload).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    /// A person seen for two frames (confirmed: `new`), then gone until it ends.
    fn person_events() -> (Vec<TrackEvent>, Vec<TrackEvent>) {
        let mut tracker = Tracker::new(TrackerConfig::default(), 7);
        let person = Detection {
            class_id: 0,
            label: "person".into(),
            score: 0.9,
            bbox: [100.0, 100.0, 200.0, 400.0],
        };
        let mut new = tracker.update(std::slice::from_ref(&person), 0.0, 640, 480);
        new.extend(tracker.update(std::slice::from_ref(&person), 0.2, 640, 480));
        let mut end = Vec::new();
        for i in 0..30 {
            end.extend(tracker.update(&[], 0.4 + i as f64 * 0.2, 640, 480));
        }
        (new, end)
    }

    #[test]
    fn snapshots_first_then_frigate_events_then_descriptions_as_updates() {
        let (new, end) = person_events();
        assert_eq!(new.len(), 1);
        let id = new[0].after.id.clone();
        let mut book = ObjectBook::default();
        let snapshot = Snapshot {
            object_id: id.clone(),
            label: "person".into(),
            jpeg: vec![0xff, 0xd8],
        };
        let out = book.on_report(&topics(), report(new, vec![snapshot]));
        assert!(
            matches!(&out[0], Outgoing::State { topic, .. } if topic == "lookout/yard/person/snapshot")
        );
        assert!(
            matches!(out.last().unwrap(), Outgoing::State { topic, payload } if topic == "lookout/yard/person" && payload == b"1")
        );
        let events = outbox(&out);
        assert_eq!(events.len(), 1);
        let (topic, new) = &events[0];
        assert_eq!(topic, "lookout/events");
        assert_eq!(new["type"], "new");
        assert_eq!(new["after"]["has_snapshot"], true);
        assert_eq!(new["after"]["box"], serde_json::json!([100, 100, 200, 400]));
        assert_eq!(new["after"]["description"], serde_json::Value::Null);

        // The description: Frigate's message, then an update carrying it.
        let out = outbox(&book.on_description(&topics(), "yard", &id, "A person in a red coat."));
        assert_eq!(out[0].0, "lookout/tracked_object_update");
        assert_eq!(out[0].1["description"], "A person in a red coat.");
        assert_eq!(out[1].1["type"], "update");
        assert_eq!(out[1].1["before"]["description"], serde_json::Value::Null);
        assert_eq!(out[1].1["after"]["description"], "A person in a red coat.");

        // The end keeps it; a description arriving after the end is only Frigate's message.
        let out = outbox(&book.on_report(&topics(), report(end, Vec::new())));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1["type"], "end");
        assert_eq!(out[0].1["after"]["description"], "A person in a red coat.");
        assert!(out[0].1["after"]["end_time"].as_f64().is_some());
        let late = book.on_description(&topics(), "yard", &id, "Late.");
        assert_eq!(outbox(&late).len(), 1);
    }
}
