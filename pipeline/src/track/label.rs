//! An object's label, decided by its whole history rather than its latest
//! detection.
//!
//! Detectors confuse similar classes for a frame or two (a dog seen as a cat,
//! a car as a truck). Each matched detection votes for its label with its
//! score, and the object takes the label with the most votes in total, so a
//! brief misclassification cannot flip it but a persistent one does.

use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub(super) struct LabelVotes {
    totals: BTreeMap<String, Tally>,
    leader: String,
}

#[derive(Clone, Copy, Debug)]
struct Tally {
    score_sum: f64,
    /// The class id the label was last detected with.
    class_id: usize,
}

impl LabelVotes {
    pub(super) fn new(label: &str, class_id: usize, score: f32) -> Self {
        let mut votes = Self {
            totals: BTreeMap::new(),
            leader: label.to_owned(),
        };
        votes.add(label, class_id, score);
        votes
    }

    /// Adds a detection's vote. The leader changes only when another label's
    /// total strictly exceeds it, so ties keep the label the object has.
    pub(super) fn add(&mut self, label: &str, class_id: usize, score: f32) {
        let tally = self.totals.entry(label.to_owned()).or_insert(Tally {
            score_sum: 0.0,
            class_id,
        });
        tally.score_sum += f64::from(score);
        tally.class_id = class_id;
        let challenger = tally.score_sum;
        if challenger > self.leader_tally().score_sum {
            label.clone_into(&mut self.leader);
        }
    }

    /// The winning label and its class id.
    pub(super) fn leader(&self) -> (&str, usize) {
        (&self.leader, self.leader_tally().class_id)
    }

    fn leader_tally(&self) -> Tally {
        self.totals[&self.leader]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_odd_vote_does_not_flip_the_label() {
        let mut votes = LabelVotes::new("dog", 16, 0.8);
        votes.add("dog", 16, 0.7);
        votes.add("cat", 15, 0.9);
        assert_eq!(votes.leader(), ("dog", 16));
    }

    #[test]
    fn persistent_votes_flip_it() {
        let mut votes = LabelVotes::new("dog", 16, 0.8);
        votes.add("cat", 15, 0.6);
        assert_eq!(votes.leader(), ("dog", 16));
        votes.add("cat", 15, 0.6);
        assert_eq!(votes.leader(), ("cat", 15));
    }

    #[test]
    fn a_tie_keeps_the_current_label() {
        let mut votes = LabelVotes::new("dog", 16, 0.5);
        votes.add("cat", 15, 0.5);
        assert_eq!(votes.leader(), ("dog", 16));
    }
}
