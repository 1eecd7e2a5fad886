use std::collections::BTreeSet;

/// Where a consumer may commit, given messages delivered and handled out of order: the lowest
/// offset still in flight, or one past the highest handled when none is.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    in_flight: BTreeSet<i64>,
    next_after_done: Option<i64>,
    committed: Option<i64>,
}

impl OffsetTracker {
    pub fn delivered(&mut self, offset: i64) {
        self.in_flight.insert(offset);
    }

    /// Marks `offset` handled; returns the new commit position if it moved forward.
    pub fn handled(&mut self, offset: i64) -> Option<i64> {
        if !self.in_flight.remove(&offset) {
            return None;
        }
        self.next_after_done = Some(self.next_after_done.map_or(offset + 1, |n| n.max(offset + 1)));
        let position = match self.in_flight.first() {
            Some(first) => *first,
            None => self.next_after_done?,
        };
        if self.committed.is_some_and(|c| c >= position) {
            return None;
        }
        self.committed = Some(position);
        Some(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_only_over_contiguous_handled() {
        let mut t = OffsetTracker::default();
        for o in 10..14 {
            t.delivered(o);
        }
        assert_eq!(t.handled(11), Some(10)); // 10 still in flight
        assert_eq!(t.handled(12), None);
        assert_eq!(t.handled(10), Some(13));
        assert_eq!(t.handled(13), Some(14));
        assert_eq!(t.handled(13), None, "a repeated commit changes nothing");
    }
}
