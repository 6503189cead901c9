//! Replica placement for new partitions: rack-aware round robin, with the semantics of Kafka's
//! rack-aware assignment.
//!
//! Brokers are ordered by alternating racks (first broker of each rack, then the second of
//! each, ...). Partition `p`'s first replica, its preferred leader, is broker `start + p` of
//! that order, so leaders go round robin over brokers. Followers are taken from the brokers
//! after the leader at an offset that grows each time the leaders have gone once around, so
//! follower sets vary, and a follower is only put on a rack that has no replica of the
//! partition yet until every rack has one.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

use super::controller::ControllerError;
use super::records::BrokerId;

pub fn assign_replicas(
    brokers: &[(BrokerId, Option<String>)],
    partitions: i32,
    replication_factor: i16,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, ControllerError> {
    if partitions < 1 {
        return Err(ControllerError::new(
            ResponseError::InvalidPartitions,
            format!("number of partitions must be at least 1, got {partitions}"),
        ));
    }
    let (arranged, rack_count) = arrange(brokers);
    let n = arranged.len();
    let rf = usize::try_from(replication_factor).unwrap_or(0);
    if rf < 1 || rf > n {
        return Err(ControllerError::new(
            ResponseError::InvalidReplicationFactor,
            format!("replication factor {replication_factor} must be between 1 and the {n} available brokers"),
        ));
    }
    let first = start % n;
    let mut shift = (start / n) % n;
    let mut assignments = Vec::with_capacity(usize::try_from(partitions).unwrap_or(0));
    for p in 0..usize::try_from(partitions).unwrap_or(0) {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let leader = (first + p) % n;
        let mut replicas = vec![arranged[leader].0];
        let mut racks = BTreeSet::from([arranged[leader].1]);
        // Two passes over the other brokers always suffice: the first fills every rack
        // (or the partition), the second accepts any broker not yet chosen.
        for j in 0..2 * (n - 1) {
            if replicas.len() == rf {
                break;
            }
            // Shifting by whole rounds of racks keeps the first follower on the next rack.
            let (broker, rack) = arranged[(leader + 1 + (shift * rack_count + j) % (n - 1)) % n];
            let rack_ok = !racks.contains(&rack) || racks.len() == rack_count;
            if rack_ok && !replicas.contains(&broker) {
                replicas.push(broker);
                racks.insert(rack);
            }
        }
        debug_assert_eq!(replicas.len(), rf);
        assignments.push(replicas);
    }
    Ok(assignments)
}

/// Brokers (deduplicated, each with the index of its rack) in alternating-rack order, and the
/// number of racks. Brokers without a rack share one.
fn arrange(brokers: &[(BrokerId, Option<String>)]) -> (Vec<(BrokerId, usize)>, usize) {
    let mut by_rack: BTreeMap<Option<&str>, BTreeSet<BrokerId>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack.entry(rack.as_deref()).or_default().insert(*id);
    }
    let mut racks: Vec<Vec<BrokerId>> = by_rack
        .into_values()
        .map(|ids| ids.into_iter().collect())
        .collect();
    let rack_count = racks.len();
    let mut arranged = Vec::with_capacity(brokers.len());
    let deepest = racks.iter().map(Vec::len).max().unwrap_or(0);
    for depth in 0..deepest {
        for (rack, ids) in racks.iter_mut().enumerate() {
            if let Some(&id) = ids.get(depth) {
                arranged.push((id, rack));
            }
        }
    }
    (arranged, rack_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(spec: &[(BrokerId, Option<&str>)]) -> Vec<(BrokerId, Option<String>)> {
        spec.iter()
            .map(|(id, rack)| (*id, rack.map(String::from)))
            .collect()
    }

    fn counts(ids: impl Iterator<Item = BrokerId>) -> BTreeMap<BrokerId, usize> {
        let mut counts = BTreeMap::new();
        for id in ids {
            *counts.entry(id).or_default() += 1;
        }
        counts
    }

    #[test]
    fn spreads_replicas_over_racks_and_balances_leaders() {
        let list = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let rack_of = |id: BrokerId| list.iter().find(|b| b.0 == id).unwrap().1.clone();
        for start in [0, 1, 5, 17, 1000] {
            let a = assign_replicas(&list, 12, 3, start).unwrap();
            assert_eq!(a.len(), 12);
            for replicas in &a {
                let racks: BTreeSet<_> = replicas.iter().map(|&id| rack_of(id)).collect();
                assert_eq!(racks.len(), 3, "{replicas:?} on one rack twice");
            }
            let leaders = counts(a.iter().map(|r| r[0]));
            assert!(leaders.values().all(|&c| c == 2), "leaders {leaders:?}");
            let all = counts(a.iter().flatten().copied());
            assert!(all.values().all(|&c| c == 6), "replicas {all:?}");
        }
    }

    #[test]
    fn uses_every_rack_before_repeating_one() {
        let list = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
        ]);
        for start in 0..8 {
            for replicas in assign_replicas(&list, 8, 3, start).unwrap() {
                assert!(replicas.contains(&4), "{replicas:?} misses rack b");
                assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
            }
        }
    }

    #[test]
    fn without_racks_is_round_robin() {
        let list = brokers(&[(3, None), (1, None), (2, None), (4, None), (2, None)]);
        let a = assign_replicas(&list, 8, 2, 0).unwrap();
        assert_eq!(a[0][0], 1);
        assert_eq!(counts(a.iter().map(|r| r[0])).values().max(), Some(&2));
        assert!(counts(a.iter().flatten().copied())
            .values()
            .all(|&c| c == 4));
        assert!(a.iter().all(|r| r[0] != r[1]));
        // Different starts rotate the leaders.
        assert_ne!(assign_replicas(&list, 1, 2, 1).unwrap()[0][0], a[0][0]);
        // A single broker holds everything.
        assert_eq!(
            assign_replicas(&list[..1], 3, 1, 9).unwrap(),
            [[3], [3], [3]]
        );
    }

    #[test]
    fn rejects_impossible_requests() {
        let list = brokers(&[(1, None), (2, None)]);
        let code = |r: Result<_, ControllerError>| r.unwrap_err().code;
        let invalid_rf = ResponseError::InvalidReplicationFactor.code();
        assert_eq!(code(assign_replicas(&list, 1, 3, 0)), invalid_rf);
        assert_eq!(code(assign_replicas(&list, 1, 0, 0)), invalid_rf);
        assert_eq!(code(assign_replicas(&list, 1, -1, 0)), invalid_rf);
        assert_eq!(code(assign_replicas(&[], 1, 1, 0)), invalid_rf);
        let invalid_partitions = ResponseError::InvalidPartitions.code();
        assert_eq!(code(assign_replicas(&list, 0, 1, 0)), invalid_partitions);
    }
}
