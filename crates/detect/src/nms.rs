use crate::Detection;
pub use osprey_core::track::iou;

/// Class-aware non-maximum suppression: within each class, a box overlapping a higher-scoring
/// one by more than `threshold` IoU is dropped. Returns at most `limit`, highest score first.
pub fn nms(mut candidates: Vec<Detection>, threshold: f32, limit: usize) -> Vec<Detection> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for c in candidates {
        let suppressed = kept.iter().any(|k| k.class_id == c.class_id && iou(&k.bbox, &c.bbox) > threshold);
        if !suppressed {
            kept.push(c);
            if kept.len() == limit {
                break;
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_id: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { label: String::new(), class_id, score, bbox }
    }

    #[test]
    fn suppresses_overlaps_within_a_class_only() {
        let kept = nms(
            vec![
                det(0, 0.6, [0.0, 0.0, 10.0, 10.0]),
                det(0, 0.9, [1.0, 1.0, 11.0, 11.0]),
                det(2, 0.5, [1.0, 1.0, 11.0, 11.0]),
                det(0, 0.7, [50.0, 50.0, 60.0, 60.0]),
            ],
            0.5,
            10,
        );
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.7, 0.5]);
    }
}
