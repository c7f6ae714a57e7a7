//! A peer's confidence scale and ours. Both are probabilities that a box is a face,
//! but of different detectors: a threshold chosen for DeepStack's or CompreFace's
//! detector does not mean the same on ours. RetinaFace's scores sit near 1 for clear
//! faces and near 0 for the rest, so the few borderline faces fall in between: at the
//! literal value, deepstack-python's 0.45 keeps a doubtful box that our 0.5 drops,
//! and CompreFace's 0.8 drops a real face that our 0.5 keeps.
//!
//! So a peer's default means our default (`--score-threshold`, 0.5 unless set):
//! the peer's values below its default map linearly onto ours below ours, and those
//! above onto ours above, with 0 and 1 kept. DeepStack has two defaults in use, 0.55
//! (the server's, when a client sends none) and 0.45 (what deepstack-python sends):
//! everything from one to the other means our default. Scores go back through the
//! inverse, so a client that filters the answer at its own threshold keeps exactly
//! the faces the server kept.

/// The values of a peer's scale that mean our default threshold: `low..=high`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub low: f32,
    pub high: f32,
}

/// DeepStack and CodeProject.AI: `min_confidence`, 0.45 (deepstack-python) to 0.55 (the server).
pub const DEEPSTACK: Scale = Scale {
    low: 0.45,
    high: 0.55,
};

/// CompreFace: `det_prob_threshold`, 0.8 by default.
pub const COMPREFACE: Scale = Scale {
    low: 0.8,
    high: 0.8,
};

impl Scale {
    /// The threshold on our scale for the peer's `value` (clamped to 0..1), given our
    /// default `ours`.
    pub fn threshold(self, value: f32, ours: f32) -> f32 {
        let (value, ours) = (clamp01(value), clamp01(ours));
        if value < self.low {
            ours * value / self.low
        } else if value <= self.high {
            ours
        } else {
            ours + (value - self.high) * (1.0 - ours) / (1.0 - self.high)
        }
    }

    /// Our `score` on the peer's scale, given our default `ours`: a face kept at the
    /// threshold of peer value `v` gets a confidence of at least `v`.
    pub fn confidence(self, score: f32, ours: f32) -> f32 {
        let (score, ours) = (clamp01(score), clamp01(ours));
        if score < ours {
            self.low * score / ours
        } else if ours >= 1.0 {
            self.high
        } else {
            self.high + (score - ours) * (1.0 - self.high) / (1.0 - ours)
        }
    }
}

/// Recognition: the confidence (DeepStack, CodeProject.AI) and similarity
/// (CompreFace) of a face at Euclidean `distance` from a subject's nearest example,
/// with the match distance `within`. 1 at distance 0, falling with the square of
/// the distance (DeepStack's own `(cos + 1) / 2` is `1 - d²/4` for unit vectors) to
/// [`NAMED_AT`] at `within`; beyond `within`, `None`: the face is unknown whatever
/// threshold a client sends. So a client that sends DeepStack's default names
/// exactly the faces within the match distance, the clients' lower defaults
/// (deepstack-python's 0.45, double-take's 40 and 60 %) name no more, and a
/// stricter threshold is a smaller distance (0.8: `within` x 0.79).
pub fn similarity(distance: f32, within: f32) -> Option<f32> {
    if !(distance.is_finite() && within > 0.0 && distance <= within) {
        return None;
    }
    let ratio = distance.max(0.0) / within;
    Some(1.0 - (1.0 - NAMED_AT) * ratio * ratio)
}

/// Verification (CompreFace's `verify`): the similarity of two faces at Euclidean
/// `distance`, on [`similarity`]'s curve but for any distance, as verification
/// answers with a number for every pair and the client decides: [`NAMED_AT`] at the
/// match distance, falling on to 0 at 1.74 times it.
pub fn verification(distance: f32, within: f32) -> f32 {
    if !(distance.is_finite() && within > 0.0) {
        return 0.0;
    }
    let ratio = distance.max(0.0) / within;
    clamp01(1.0 - (1.0 - NAMED_AT) * ratio * ratio)
}

/// The confidence of a face at the match distance: DeepStack's (and
/// CodeProject.AI's) default `min_confidence` for recognition.
pub const NAMED_AT: f32 = 0.67;

fn clamp01(value: f32) -> f32 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn a_peers_default_is_our_default_and_the_ends_stay() {
        for ours in [0.5, 0.3, 0.7] {
            for value in [0.45, 0.5, 0.55] {
                assert!(close(DEEPSTACK.threshold(value, ours), ours));
            }
            assert!(close(COMPREFACE.threshold(0.8, ours), ours));
            for scale in [DEEPSTACK, COMPREFACE] {
                assert!(close(scale.threshold(0.0, ours), 0.0));
                assert!(close(scale.threshold(1.0, ours), 1.0));
                assert!(close(scale.threshold(-3.0, ours), 0.0));
            }
        }
        assert!(close(COMPREFACE.threshold(0.4, 0.5), 0.25));
        assert!(close(COMPREFACE.threshold(0.9, 0.5), 0.75));
        assert!(close(DEEPSTACK.threshold(0.775, 0.5), 0.75));
    }

    #[test]
    fn verification_follows_similarity_and_goes_on_beyond_the_match_distance() {
        for distance in [0.0, 0.1, 0.3, 0.5, 0.6] {
            assert!(close(
                verification(distance, 0.6),
                similarity(distance, 0.6).unwrap()
            ));
        }
        assert!(verification(0.7, 0.6) < NAMED_AT && verification(0.7, 0.6) > 0.5);
        assert_eq!(verification(1.2, 0.6), 0.0);
        assert_eq!(verification(f32::NAN, 0.6), 0.0);
    }

    #[test]
    fn similarity_is_one_at_zero_and_deepstacks_default_at_the_match_distance() {
        assert_eq!(similarity(0.0, 0.6), Some(1.0));
        assert!(close(similarity(0.6, 0.6).unwrap(), NAMED_AT));
        assert!(close(similarity(0.3, 0.6).unwrap(), 0.9175));
        assert!(close(similarity(0.5, 0.6).unwrap(), 0.770_833));
        assert_eq!(similarity(0.6001, 0.6), None);
        assert_eq!(similarity(f32::NAN, 0.6), None);
        // Decreasing: a stricter threshold is a smaller distance.
        let values: Vec<f32> = (0..=60)
            .map(|d| similarity(d as f32 / 100.0, 0.6).unwrap())
            .collect();
        assert!(values.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn a_face_kept_at_a_peer_threshold_reports_at_least_that_confidence() {
        let ours = 0.5;
        for scale in [DEEPSTACK, COMPREFACE] {
            for step in 0..=100 {
                let value = step as f32 / 100.0;
                let threshold = scale.threshold(value, ours);
                for score_step in 0..=100 {
                    let score = score_step as f32 / 100.0;
                    if score >= threshold {
                        assert!(
                            scale.confidence(score, ours) >= value - 1e-5,
                            "{scale:?}: score {score} kept at {value} reports {}",
                            scale.confidence(score, ours)
                        );
                    }
                }
            }
            assert!(close(scale.confidence(1.0, ours), 1.0));
            assert!(close(scale.confidence(0.0, ours), 0.0));
        }
    }
}
