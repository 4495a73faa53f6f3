//! What the tracker reports: an object appeared, changed in a way someone
//! would act on, or ended.
//!
//! Updates are deliberately rare. A box moving every frame is not news;
//! entering a zone, a new label, a clearly better score or starting and
//! stopping to move is. Each event carries the object as it was last
//! published and as it is now, as Frigate's MQTT events do.

use serde::Serialize;

use super::object::TrackedObject;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The object was confirmed; `before == after`.
    New,
    /// Something in [`TrackEvent::changes`] changed.
    Update,
    /// The object is gone; `after.end_time` is set.
    End,
}

/// A significant change since the object was last published.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Label {
        from: String,
        to: String,
    },
    LeftZone(String),
    EnteredZone(String),
    Stationary(bool),
    /// The top score rose by at least the configured step.
    TopScore,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackEvent {
    pub kind: EventKind,
    /// The object as last published (for `New`, as now).
    pub before: TrackedObject,
    pub after: TrackedObject,
    /// For `Update`, what changed, in this order: label, zones left, zones
    /// entered (each in configuration order), stationary, top score. Empty
    /// for `New` and `End`.
    pub changes: Vec<Change>,
}

impl Change {
    /// The significant differences from `before` to `after`.
    pub(super) fn between(
        before: &TrackedObject,
        after: &TrackedObject,
        top_score_step: f32,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        if before.label != after.label {
            changes.push(Change::Label {
                from: before.label.clone(),
                to: after.label.clone(),
            });
        }
        let left = before
            .current_zones
            .iter()
            .filter(|z| !after.current_zones.contains(z));
        changes.extend(left.cloned().map(Change::LeftZone));
        let entered = after
            .current_zones
            .iter()
            .filter(|z| !before.current_zones.contains(z));
        changes.extend(entered.cloned().map(Change::EnteredZone));
        if before.stationary != after.stationary {
            changes.push(Change::Stationary(after.stationary));
        }
        // A rise must be real: a zero or NaN step never reports an unchanged
        // score.
        let rise = after.top_score - before.top_score;
        if rise > 0.0 && rise >= top_score_step {
            changes.push(Change::TopScore);
        }
        changes
    }
}
