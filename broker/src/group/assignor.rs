//! Server-side partition assignors for KIP-848 consumer groups.
//!
//! An assignor turns the members' subscriptions (already resolved to topic ids) and the
//! partition counts of the subscribed topics into a *target* assignment: which member
//! should eventually own which partition. It never looks at what members currently own;
//! moving members from their current assignment to the target, safely, is the job of the
//! reconciliation in [`super::consumer`].
//!
//! Both assignors are deterministic: the same input always gives the same output, so a
//! recomputation that changes nothing in the group moves no partition.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions per topic id. Topics with no partition are never stored, so two equal
/// assignments always compare equal.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The server-side assignors a member may ask for with `ServerAssignor`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Assignor {
    /// Spreads every subscribed partition evenly over the members subscribed to its
    /// topic, keeping partitions where they are whenever the balance allows.
    #[default]
    Uniform,
    /// Per topic, contiguous ranges of partitions in member order (Kafka's range
    /// assignor), so co-partitioned topics land on the same members.
    Range,
}

impl Assignor {
    /// Every assignor, in the order used to break ties when members disagree.
    pub const ALL: [Assignor; 2] = [Assignor::Uniform, Assignor::Range];

    /// The name clients use in `ServerAssignor` (as in Kafka).
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// The assignor called `name`, if this broker has it.
    pub fn from_name(name: &str) -> Option<Assignor> {
        Assignor::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Computes the target assignment. The result has an entry for every member, empty
    /// when it gets nothing. `topics` maps each subscribed topic to its partition count.
    pub fn assign(
        self,
        members: &[MemberSubscription<'_>],
        topics: &BTreeMap<Uuid, i32>,
    ) -> BTreeMap<String, Assignment> {
        let assignments = match self {
            Assignor::Uniform => assign_uniform(members, topics),
            Assignor::Range => assign_range(members, topics),
        };
        members
            .iter()
            .map(|m| m.member_id.to_string())
            .zip(assignments)
            .collect()
    }
}

/// What an assignor knows of one member.
#[derive(Clone, Debug)]
pub struct MemberSubscription<'a> {
    pub member_id: &'a str,
    /// Static members are ordered by instance id, which survives restarts, so that a
    /// static member that comes back with a new member id keeps its place.
    pub instance_id: Option<&'a str>,
    /// Subscribed topics that exist.
    pub topics: BTreeSet<Uuid>,
    /// The member's previous target, which the uniform assignor keeps where it can.
    pub previous: Option<&'a Assignment>,
}

/// Every partition of `topics`, in topic-id then partition order.
fn all_partitions(topics: &BTreeMap<Uuid, i32>) -> impl Iterator<Item = (Uuid, i32)> + '_ {
    topics
        .iter()
        .flat_map(|(&topic, &count)| (0..count).map(move |p| (topic, p)))
}

fn insert(assignment: &mut Assignment, topic: Uuid, partition: i32) {
    assignment.entry(topic).or_default().insert(partition);
}

/// Removes and returns the highest partition of `topic`, dropping the topic when empty.
fn pop_last(assignment: &mut Assignment, topic: Uuid) -> Option<i32> {
    let partitions = assignment.get_mut(&topic)?;
    let partition = partitions.pop_last();
    if partitions.is_empty() {
        assignment.remove(&topic);
    }
    partition
}

/// Uniform assignment, in three steps:
/// 1. stickiness: every member keeps the partitions of its previous target that are still
///    valid (topic still subscribed and partition still existing), each at most once;
/// 2. completeness: every other partition goes to the least loaded member subscribed to
///    its topic;
/// 3. balance: while a member holds a partition that a member subscribed to the same
///    topic with at least two partitions fewer could take, one partition moves. Each move
///    lowers the sum of squared loads, so this ends; with identical subscriptions it ends
///    with loads differing by at most one.
fn assign_uniform(
    members: &[MemberSubscription<'_>],
    topics: &BTreeMap<Uuid, i32>,
) -> Vec<Assignment> {
    let mut assignments = vec![Assignment::new(); members.len()];
    let mut loads = vec![0usize; members.len()];
    let mut taken: BTreeSet<(Uuid, i32)> = BTreeSet::new();

    for (i, member) in members.iter().enumerate() {
        for (&topic, partitions) in member.previous.into_iter().flatten() {
            let count = topics.get(&topic).copied().unwrap_or(0);
            if !member.topics.contains(&topic) {
                continue;
            }
            for &p in partitions {
                if (0..count).contains(&p) && taken.insert((topic, p)) {
                    insert(&mut assignments[i], topic, p);
                    loads[i] += 1;
                }
            }
        }
    }

    for (topic, p) in all_partitions(topics) {
        if taken.contains(&(topic, p)) {
            continue;
        }
        if let Some(i) = least_loaded(members, &loads, topic) {
            insert(&mut assignments[i], topic, p);
            loads[i] += 1;
        }
    }

    rebalance_uniform(members, topics, &mut assignments, &mut loads);
    assignments
}

/// The least loaded member subscribed to `topic` (lowest index on ties).
fn least_loaded(members: &[MemberSubscription<'_>], loads: &[usize], topic: Uuid) -> Option<usize> {
    (0..members.len())
        .filter(|&i| members[i].topics.contains(&topic))
        .min_by_key(|&i| (loads[i], i))
}

/// The most loaded member that holds a partition of `topic` (lowest index on ties).
fn most_loaded_holder(assignments: &[Assignment], loads: &[usize], topic: Uuid) -> Option<usize> {
    (0..assignments.len())
        .filter(|&i| assignments[i].contains_key(&topic))
        .min_by_key(|&i| (std::cmp::Reverse(loads[i]), i))
}

/// Step 3 of [`assign_uniform`].
fn rebalance_uniform(
    members: &[MemberSubscription<'_>],
    topics: &BTreeMap<Uuid, i32>,
    assignments: &mut [Assignment],
    loads: &mut [usize],
) {
    loop {
        let mut moved = false;
        for &topic in topics.keys() {
            while let (Some(from), Some(to)) = (
                most_loaded_holder(assignments, loads, topic),
                least_loaded(members, loads, topic),
            ) {
                if loads[from] < loads[to] + 2 {
                    break;
                }
                let Some(p) = pop_last(&mut assignments[from], topic) else {
                    break;
                };
                insert(&mut assignments[to], topic, p);
                loads[from] -= 1;
                loads[to] += 1;
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
}

/// Range assignment: for each topic, its subscribers in a fixed member order (static
/// members by instance id first, then dynamic members by member id) get contiguous ranges,
/// the first `count % n` one partition more. Because the order is the same for every
/// topic, members with the same subscription get the same partition numbers of topics
/// with the same partition count (co-partitioning).
fn assign_range(
    members: &[MemberSubscription<'_>],
    topics: &BTreeMap<Uuid, i32>,
) -> Vec<Assignment> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| {
        let m = &members[i];
        (
            m.instance_id.is_none(),
            m.instance_id.unwrap_or(m.member_id),
            m.member_id,
        )
    });

    let mut assignments = vec![Assignment::new(); members.len()];
    for (&topic, &count) in topics {
        let subscribers: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| members[i].topics.contains(&topic))
            .collect();
        let Ok(n) = i32::try_from(subscribers.len()) else {
            continue;
        };
        if n == 0 || count <= 0 {
            continue;
        }
        let (quota, extra) = (count / n, count % n);
        let mut start = 0;
        for (rank, &i) in (0..n).zip(&subscribers) {
            let len = quota + i32::from(rank < extra);
            for p in start..start + len {
                insert(&mut assignments[i], topic, p);
            }
            start += len;
        }
    }
    assignments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn member<'a>(
        id: &'a str,
        topics: &[Uuid],
        previous: Option<&'a Assignment>,
    ) -> MemberSubscription<'a> {
        MemberSubscription {
            member_id: id,
            instance_id: None,
            topics: topics.iter().copied().collect(),
            previous,
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn parts(a: &Assignment, t: Uuid) -> Vec<i32> {
        a.get(&t)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every partition of `topics` is assigned exactly once.
    fn assert_complete(result: &BTreeMap<String, Assignment>, topics: &BTreeMap<Uuid, i32>) {
        let mut seen = BTreeSet::new();
        for a in result.values() {
            for (&t, ps) in a {
                for &p in ps {
                    assert!(seen.insert((t, p)), "{t}/{p} assigned twice");
                }
            }
        }
        assert_eq!(seen, all_partitions(topics).collect());
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_rejected() {
        for a in Assignor::ALL {
            assert_eq!(Assignor::from_name(a.name()), Some(a));
        }
        assert_eq!(Assignor::from_name("sticky"), None);
    }

    #[test]
    fn uniform_is_balanced_over_topics() {
        let (a, b) = (topic(1), topic(2));
        let topics = BTreeMap::from([(a, 5), (b, 2)]);
        let members = [
            member("m1", &[a, b], None),
            member("m2", &[a, b], None),
            member("m3", &[a, b], None),
        ];
        let result = Assignor::Uniform.assign(&members, &topics);
        assert_complete(&result, &topics);
        let mut loads: Vec<usize> = result.values().map(count).collect();
        loads.sort();
        assert_eq!(loads, vec![2, 2, 3]);
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins_and_leaves() {
        let t = topic(1);
        let topics = BTreeMap::from([(t, 6)]);
        let first = Assignor::Uniform.assign(
            &[member("m1", &[t], None), member("m2", &[t], None)],
            &topics,
        );

        // A third member takes two partitions; the others keep four of their six.
        let members = [
            member("m1", &[t], first.get("m1")),
            member("m2", &[t], first.get("m2")),
            member("m3", &[t], None),
        ];
        let second = Assignor::Uniform.assign(&members, &topics);
        assert_complete(&second, &topics);
        for id in ["m1", "m2", "m3"] {
            assert_eq!(count(&second[id]), 2, "{id}");
        }
        for id in ["m1", "m2"] {
            assert!(
                second[id][&t].is_subset(&first[id][&t]),
                "{id} lost a partition it could keep"
            );
        }

        // When m3 leaves, m1 and m2 keep theirs and split m3's.
        let members = [
            member("m1", &[t], second.get("m1")),
            member("m2", &[t], second.get("m2")),
        ];
        let third = Assignor::Uniform.assign(&members, &topics);
        assert_complete(&third, &topics);
        for id in ["m1", "m2"] {
            assert_eq!(count(&third[id]), 3);
            assert!(second[id][&t].is_subset(&third[id][&t]));
        }
    }

    #[test]
    fn uniform_respects_heterogeneous_subscriptions() {
        let (a, b) = (topic(1), topic(2));
        let topics = BTreeMap::from([(a, 4), (b, 4)]);
        let members = [
            member("m1", &[a], None),
            member("m2", &[a, b], None),
            member("m3", &[b], None),
        ];
        let result = Assignor::Uniform.assign(&members, &topics);
        assert_complete(&result, &topics);
        assert!(!result["m1"].contains_key(&b));
        assert!(!result["m3"].contains_key(&a));
        let loads: Vec<usize> = result.values().map(count).collect();
        assert!(
            loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1,
            "{loads:?}"
        );
    }

    #[test]
    fn uniform_drops_partitions_that_no_longer_exist_or_are_unsubscribed() {
        let (a, b) = (topic(1), topic(2));
        let previous = Assignment::from([(a, BTreeSet::from([0, 1, 7])), (b, BTreeSet::from([0]))]);
        let topics = BTreeMap::from([(a, 2)]);
        let result = Assignor::Uniform.assign(&[member("m1", &[a], Some(&previous))], &topics);
        assert_eq!(
            result["m1"],
            Assignment::from([(a, BTreeSet::from([0, 1]))])
        );
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic_and_co_partitions() {
        let (a, b) = (topic(1), topic(2));
        let topics = BTreeMap::from([(a, 5), (b, 5)]);
        let members = [member("m2", &[a, b], None), member("m1", &[a, b], None)];
        let result = Assignor::Range.assign(&members, &topics);
        assert_complete(&result, &topics);
        assert_eq!(parts(&result["m1"], a), vec![0, 1, 2]);
        assert_eq!(parts(&result["m2"], a), vec![3, 4]);
        assert_eq!(parts(&result["m1"], b), vec![0, 1, 2]);
        assert_eq!(parts(&result["m2"], b), vec![3, 4]);
    }

    #[test]
    fn range_orders_static_members_by_instance_id() {
        let t = topic(1);
        let topics = BTreeMap::from([(t, 4)]);
        let dynamic = member("a-dynamic", &[t], None);
        let mut stat = member("z-static", &[t], None);
        stat.instance_id = Some("instance-1");
        let result = Assignor::Range.assign(&[dynamic, stat], &topics);
        assert_eq!(parts(&result["z-static"], t), vec![0, 1]);
        assert_eq!(parts(&result["a-dynamic"], t), vec![2, 3]);
    }

    #[test]
    fn range_splits_each_topic_among_its_own_subscribers() {
        let (a, b) = (topic(1), topic(2));
        let topics = BTreeMap::from([(a, 3), (b, 2)]);
        let members = [member("m1", &[a], None), member("m2", &[a, b], None)];
        let result = Assignor::Range.assign(&members, &topics);
        assert_complete(&result, &topics);
        assert_eq!(parts(&result["m1"], a), vec![0, 1]);
        assert_eq!(parts(&result["m2"], a), vec![2]);
        assert_eq!(parts(&result["m2"], b), vec![0, 1]);
    }

    #[test]
    fn no_members_or_no_topics_give_empty_assignments() {
        let t = topic(1);
        let topics = BTreeMap::from([(t, 3), (topic(2), 0), (topic(3), -4)]);
        for assignor in Assignor::ALL {
            assert!(assignor.assign(&[], &topics).is_empty());
            let result = assignor.assign(&[member("m1", &[], None)], &topics);
            assert_eq!(result["m1"], Assignment::new());
        }
    }
}
