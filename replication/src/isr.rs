//! Leader-side follower tracking: high watermark and ISR shrink/expand decisions.
//!
//! Pure bookkeeping (no I/O, time passed in as milliseconds), modelled on Kafka's
//! `Partition.maybeIncrementLeaderHW`, `isFollowerInSync` and the replica
//! `lastCaughtUpTime` rule. The leader's partition feeds it its own log end offset
//! (LEO) on every append and each follower's fetch offset (the follower's LEO) on
//! every follower fetch; it answers with the high watermark (HW) and with the ISR
//! changes worth proposing to the controller.

/// A partition's leadership and ISR as the controller committed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAndIsr {
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub replicas: Vec<i32>,
    /// Bumped by the controller on every change of this state.
    pub partition_epoch: i32,
}

/// What the leader knows of one follower.
#[derive(Debug, Clone)]
struct Follower {
    id: i32,
    /// The offset of its last fetch; -1 until it fetched from this leader.
    log_end_offset: i64,
    last_fetch_ms: u64,
    /// The leader's LEO at the follower's last fetch.
    leader_leo_at_last_fetch: i64,
    /// The last time the follower had everything the leader had (Kafka's rule, see
    /// [`ReplicaTracker::on_follower_fetch`]).
    last_caught_up_ms: u64,
}

impl Follower {
    fn new(id: i32, in_isr: bool, now_ms: u64) -> Self {
        Follower {
            id,
            log_end_offset: -1,
            last_fetch_ms: 0,
            leader_leo_at_last_fetch: -1,
            // ISR members get the benefit of the doubt from the election on, as in Kafka;
            // the others have never been caught up.
            last_caught_up_ms: if in_isr { now_ms } else { 0 },
        }
    }
}

/// An ISR change sent to the controller (AlterPartition) and not yet committed.
#[derive(Debug, Clone)]
struct Proposal {
    isr: Vec<i32>,
    /// The partition epoch it was based on: a commit of a later one supersedes it.
    partition_epoch: i32,
}

/// The partition leader's view of its followers.
#[derive(Debug, Clone)]
pub struct ReplicaTracker {
    local_id: i32,
    partition_epoch: i32,
    isr: Vec<i32>,
    pending: Option<Proposal>,
    followers: Vec<Follower>,
    leader_leo: i64,
    high_watermark: i64,
    /// The latest time passed in: when a committed state brings new followers.
    latest_ms: u64,
}

impl ReplicaTracker {
    /// The tracker of a leader just elected (or restarted) with `state`. The HW starts at
    /// `high_watermark` (capped at the leader's LEO) and moves once every ISR member's
    /// LEO is known; a leader alone in its ISR has it at its LEO at once.
    pub fn new(
        local_id: i32,
        state: &LeaderAndIsr,
        leader_leo: i64,
        high_watermark: i64,
        now_ms: u64,
    ) -> Self {
        let mut tracker = ReplicaTracker {
            local_id,
            partition_epoch: state.partition_epoch,
            isr: Vec::new(),
            pending: None,
            followers: Vec::new(),
            leader_leo,
            high_watermark: high_watermark.min(leader_leo),
            latest_ms: now_ms,
        };
        tracker.set_state(state);
        tracker.maybe_advance_high_watermark();
        tracker
    }

    /// The leader appended: its LEO is now `leader_leo`. Returns the new HW if it moved.
    pub fn on_leader_append(&mut self, leader_leo: i64) -> Option<i64> {
        self.leader_leo = self.leader_leo.max(leader_leo);
        self.maybe_advance_high_watermark()
    }

    /// Follower `replica` fetched from `fetch_offset` (so its log ends there) while the
    /// leader's LEO was `leader_leo`. Kafka's `lastCaughtUpTime` rule: the follower was
    /// caught up now if it asked for everything the leader has, and at its previous fetch
    /// if it now asks for at least what the leader had then. Returns the new HW if it
    /// moved. Fetches from replicas outside the assignment are ignored.
    pub fn on_follower_fetch(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        leader_leo: i64,
        now_ms: u64,
    ) -> Option<i64> {
        self.leader_leo = self.leader_leo.max(leader_leo);
        self.latest_ms = self.latest_ms.max(now_ms);
        let follower = self.followers.iter_mut().find(|f| f.id == replica)?;
        if fetch_offset >= leader_leo {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= follower.leader_leo_at_last_fetch
            && follower.leader_leo_at_last_fetch >= 0
        {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(follower.last_fetch_ms);
        }
        follower.leader_leo_at_last_fetch = leader_leo;
        follower.last_fetch_ms = now_ms;
        follower.log_end_offset = fetch_offset;
        self.maybe_advance_high_watermark()
    }

    /// The minimum LEO over the maximal ISR (the leader included); never decreases.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Of `candidates`, the in-sync follower with the longest log, if any has everything
    /// below the high watermark (Kafka's rack-aware replica selector, KIP-392).
    pub fn most_caught_up(&self, candidates: &[i32]) -> Option<i32> {
        self.followers
            .iter()
            .filter(|f| candidates.contains(&f.id) && self.isr.contains(&f.id))
            .filter(|f| f.log_end_offset >= self.high_watermark)
            .max_by_key(|f| f.log_end_offset)
            .map(|f| f.id)
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[i32] {
        &self.isr
    }

    /// The ISR proposed to the controller and not committed yet, to resend if the
    /// request was lost.
    pub fn pending_isr(&self) -> Option<&[i32]> {
        self.pending.as_ref().map(|p| p.isr.as_slice())
    }

    /// The followers in the ISR that have not been caught up for more than `lag_max_ms`
    /// (`replica.lag.time.max.ms`). One whose LEO equals the leader's is never out of
    /// sync, however long ago it fetched: there was nothing to fetch.
    pub fn out_of_sync(&self, now_ms: u64, lag_max_ms: u64) -> Vec<i32> {
        self.isr
            .iter()
            .filter_map(|&id| self.follower(id))
            .filter(|f| {
                f.log_end_offset != self.leader_leo
                    && now_ms.saturating_sub(f.last_caught_up_ms) > lag_max_ms
            })
            .map(|f| f.id)
            .collect()
    }

    /// Replicas outside the (maximal) ISR that may join it: their log reaches the HW and
    /// the start of the current leader epoch, so they hold everything committed and
    /// nothing of an older leader's that this one does not (Kafka's `isFollowerInSync`).
    pub fn caught_up_to_join(&self, leader_epoch_start_offset: i64) -> Vec<i32> {
        self.followers
            .iter()
            .filter(|f| !self.in_maximal_isr(f.id))
            .filter(|f| {
                f.log_end_offset >= self.high_watermark
                    && f.log_end_offset >= leader_epoch_start_offset
            })
            .map(|f| f.id)
            .collect()
    }

    /// Records an ISR change sent to the controller. Until it is committed the HW is
    /// computed over the union of the current and the proposed ISR (Kafka's maximal
    /// ISR): a joining replica holds the HW back at once, and a leaving one keeps
    /// counting until the controller agreed.
    pub fn propose_isr(&mut self, new_isr: Vec<i32>) {
        self.pending = Some(Proposal {
            isr: new_isr,
            partition_epoch: self.partition_epoch,
        });
    }

    /// Forgets a proposal the controller refused, so the next check proposes afresh.
    pub fn abandon_pending_isr(&mut self) {
        self.pending = None;
    }

    /// A state committed by the controller. Clears the pending proposal when this is
    /// it, or when a later partition epoch superseded it (the controller will refuse a
    /// proposal based on an old epoch).
    pub fn apply(&mut self, state: &LeaderAndIsr) {
        if let Some(pending) = &self.pending {
            if same_members(&pending.isr, &state.isr)
                || state.partition_epoch > pending.partition_epoch
            {
                self.pending = None;
            }
        }
        self.partition_epoch = self.partition_epoch.max(state.partition_epoch);
        self.set_state(state);
        self.maybe_advance_high_watermark();
    }

    /// Takes the ISR and replica set of `state`, keeping what is known of followers
    /// that stay; new followers start unknown (ISR members as caught up now). A follower
    /// leaving the ISR forgets its position: it may be down and restart with less than it
    /// had (followers do not fsync each append), so only a fetch may bring it back.
    fn set_state(&mut self, state: &LeaderAndIsr) {
        let now_ms = self.latest_ms;
        let mut followers = Vec::with_capacity(state.replicas.len());
        for &id in state.replicas.iter().filter(|&&id| id != self.local_id) {
            let in_isr = state.isr.contains(&id);
            let follower = match self.followers.iter().find(|f| f.id == id) {
                Some(known) if in_isr || !self.isr.contains(&id) => known.clone(),
                Some(_) => Follower::new(id, false, now_ms),
                None => Follower::new(id, in_isr, now_ms),
            };
            followers.push(follower);
        }
        self.isr = state.isr.clone();
        self.followers = followers;
    }

    fn follower(&self, id: i32) -> Option<&Follower> {
        self.followers.iter().find(|f| f.id == id)
    }

    fn in_maximal_isr(&self, id: i32) -> bool {
        self.isr.contains(&id) || self.pending.as_ref().is_some_and(|p| p.isr.contains(&id))
    }

    /// Kafka's `maybeIncrementLeaderHW`: the minimum LEO over the maximal ISR, the
    /// leader's own included; a member whose LEO is unknown holds the HW where it is.
    fn maybe_advance_high_watermark(&mut self) -> Option<i64> {
        let mut candidate = self.leader_leo;
        for follower in &self.followers {
            if self.in_maximal_isr(follower.id) {
                candidate = candidate.min(follower.log_end_offset);
            }
        }
        (candidate > self.high_watermark).then(|| {
            self.high_watermark = candidate;
            candidate
        })
    }
}

fn same_members(a: &[i32], b: &[i32]) -> bool {
    a.len() == b.len() && a.iter().all(|id| b.contains(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(isr: &[i32], partition_epoch: i32) -> LeaderAndIsr {
        LeaderAndIsr {
            leader: 1,
            leader_epoch: 5,
            isr: isr.to_vec(),
            replicas: vec![1, 2, 3],
            partition_epoch,
        }
    }

    #[test]
    fn leader_alone_in_the_isr_moves_the_hw_with_its_appends() {
        let single = LeaderAndIsr {
            leader: 1,
            leader_epoch: 0,
            isr: vec![1],
            replicas: vec![1],
            partition_epoch: 0,
        };
        let mut t = ReplicaTracker::new(1, &single, 10, 0, 0);
        assert_eq!(t.high_watermark(), 10);
        assert_eq!(t.on_leader_append(15), Some(15));
        assert_eq!(t.on_leader_append(15), None);
        assert_eq!(t.high_watermark(), 15);
    }

    #[test]
    fn hw_is_the_minimum_leo_over_the_isr_and_waits_for_unknown_followers() {
        let mut t = ReplicaTracker::new(1, &state(&[1, 2, 3], 0), 100, 40, 0);
        assert_eq!(t.high_watermark(), 40); // followers' LEOs unknown
        assert_eq!(t.on_follower_fetch(2, 90, 100, 1), None);
        assert_eq!(t.on_follower_fetch(3, 60, 100, 1), Some(60));
        assert_eq!(t.on_follower_fetch(3, 95, 100, 2), Some(90));
        assert_eq!(t.on_follower_fetch(2, 100, 100, 3), Some(95));
        // Never decreases, whatever a follower reports.
        assert_eq!(t.on_follower_fetch(3, 10, 100, 4), None);
        assert_eq!(t.high_watermark(), 95);
        // Unknown replicas are ignored.
        assert_eq!(t.on_follower_fetch(9, 100, 100, 5), None);
    }

    #[test]
    fn the_read_replica_is_the_longest_in_sync_log_among_candidates() {
        let mut four = state(&[1, 2, 3], 0);
        four.replicas = vec![1, 2, 3, 4];
        let mut t = ReplicaTracker::new(1, &four, 100, 0, 0);
        assert_eq!(t.most_caught_up(&[2, 3]), None, "positions unknown");
        t.on_follower_fetch(2, 90, 100, 1);
        t.on_follower_fetch(3, 95, 100, 1);
        t.on_follower_fetch(4, 100, 100, 1); // not in the ISR
        assert_eq!(t.high_watermark(), 90);
        assert_eq!(t.most_caught_up(&[2, 3, 4]), Some(3));
        assert_eq!(t.most_caught_up(&[2, 4]), Some(2));
        assert_eq!(t.most_caught_up(&[4]), None);
        assert_eq!(t.most_caught_up(&[]), None);
    }

    #[test]
    fn a_follower_leaving_the_isr_rejoins_only_after_a_fetch() {
        let mut t = ReplicaTracker::new(1, &state(&[1, 2, 3], 0), 100, 100, 0);
        t.on_follower_fetch(2, 100, 100, 1);
        t.on_follower_fetch(3, 100, 100, 1);
        t.apply(&state(&[1, 2], 1)); // 3 shrunk out (it died, say)
        assert!(
            t.caught_up_to_join(0).is_empty(),
            "its old position is forgotten"
        );
        t.on_follower_fetch(3, 100, 100, 2);
        assert_eq!(t.caught_up_to_join(0), vec![3]);
    }

    #[test]
    fn last_caught_up_time_follows_kafka() {
        let mut t = ReplicaTracker::new(1, &state(&[1, 2, 3], 0), 100, 100, 1_000);
        let lag = 500;
        // Follower 2 fetches at 100 (everything) at t=1100: caught up then.
        t.on_follower_fetch(2, 100, 100, 1_100);
        // Leader moves to 200; follower 2 fetches at 150 at t=1900: not caught up now,
        // and 150 >= 100 (the leader's LEO at its previous fetch): caught up at 1100.
        t.on_leader_append(200);
        t.on_follower_fetch(2, 150, 200, 1_900);
        assert_eq!(t.out_of_sync(1_600, lag), vec![3]); // 3 never fetched since 1000
        assert_eq!(t.out_of_sync(1_601, lag), vec![2, 3]);
        // Fetching 200 (>= 200, the leader's LEO at its previous fetch): caught up at 1900.
        t.on_follower_fetch(2, 200, 300, 2_000);
        assert_eq!(t.out_of_sync(2_400, lag), vec![3]);
        // A follower with everything the leader has is never out of sync.
        let mut idle = ReplicaTracker::new(1, &state(&[1, 2], 0), 50, 50, 0);
        idle.on_follower_fetch(2, 50, 50, 10);
        assert!(idle.out_of_sync(1_000_000, lag).is_empty());
    }

    #[test]
    fn expansion_holds_the_hw_while_pending_and_shrink_keeps_counting_until_committed() {
        let mut t = ReplicaTracker::new(1, &state(&[1, 2], 7), 100, 100, 0);
        t.on_follower_fetch(2, 100, 100, 1);
        // Follower 3 is behind the HW: it may not join yet.
        t.on_follower_fetch(3, 80, 100, 1);
        assert!(t.caught_up_to_join(90).is_empty());
        t.on_follower_fetch(3, 100, 100, 2);
        assert!(t.caught_up_to_join(120).is_empty()); // not at the epoch start yet
        assert_eq!(t.caught_up_to_join(90), vec![3]);
        t.propose_isr(vec![1, 2, 3]);
        assert!(t.caught_up_to_join(90).is_empty()); // already joining
        assert_eq!(t.pending_isr(), Some(&[1, 2, 3][..]));
        // While pending, 3 holds the HW back.
        t.on_leader_append(150);
        t.on_follower_fetch(2, 150, 150, 3);
        assert_eq!(t.high_watermark(), 100);
        assert_eq!(t.on_follower_fetch(3, 120, 150, 3), Some(120));
        t.apply(&state(&[1, 2, 3], 8));
        assert_eq!((t.isr(), t.pending_isr()), (&[1, 2, 3][..], None));

        // Shrink of 3: it keeps counting until the controller commits.
        t.propose_isr(vec![1, 2]);
        assert_eq!(t.on_leader_append(200), None);
        t.on_follower_fetch(2, 200, 200, 4);
        assert_eq!(t.high_watermark(), 120);
        // A re-delivery of the same committed state does not clear the proposal.
        t.apply(&state(&[1, 2, 3], 8));
        assert!(t.pending_isr().is_some());
        t.apply(&state(&[1, 2], 9));
        assert_eq!(t.high_watermark(), 200);
        assert_eq!(t.isr(), &[1, 2]);
    }

    #[test]
    fn a_later_partition_epoch_supersedes_a_pending_proposal() {
        let mut t = ReplicaTracker::new(1, &state(&[1, 2, 3], 3), 10, 10, 0);
        t.propose_isr(vec![1, 2]);
        t.apply(&state(&[1, 3], 4)); // someone else's change won
        assert_eq!(t.pending_isr(), None);
        assert_eq!(t.isr(), &[1, 3]);
    }

    /// A small deterministic generator, so a failure reproduces.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn randomized_hw_is_monotonic_and_below_every_isr_leo() {
        let (mut shrinks, mut expansions) = (0, 0);
        for seed in 1..=50u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut leos = [0i64, 0, 0, 0]; // index = replica id; 1 leads
            let mut committed = state(&[1, 2, 3], 0);
            committed.replicas = vec![1, 2, 3];
            let mut t = ReplicaTracker::new(1, &committed, 0, 0, 0);
            let mut now = 0u64;
            let mut last_hw = 0;
            for _ in 0..2_000 {
                now += rng.below(50);
                match rng.below(6) {
                    0 | 1 => {
                        leos[1] += rng.below(5) as i64;
                        t.on_leader_append(leos[1]);
                    }
                    2 | 3 => {
                        let id = 2 + rng.below(2) as usize;
                        // A follower fetches somewhere between its LEO and the leader's.
                        let gap = (leos[1] - leos[id]) as u64;
                        leos[id] += rng.below(gap + 1) as i64;
                        t.on_follower_fetch(id as i32, leos[id], leos[1], now);
                    }
                    4 if t.pending_isr().is_none() => {
                        let out = t.out_of_sync(now, 200);
                        let join = t.caught_up_to_join(0);
                        if let Some(&gone) = out.first() {
                            let isr: Vec<i32> =
                                t.isr().iter().copied().filter(|&id| id != gone).collect();
                            t.propose_isr(isr);
                            shrinks += 1;
                        } else if let Some(&new) = join.first() {
                            let mut isr = t.isr().to_vec();
                            isr.push(new);
                            t.propose_isr(isr);
                            expansions += 1;
                        }
                    }
                    _ => {
                        if let Some(isr) = t.pending_isr().map(<[i32]>::to_vec) {
                            committed.isr = isr;
                            committed.partition_epoch += 1;
                            t.apply(&committed);
                        }
                    }
                }
                let hw = t.high_watermark();
                assert!(
                    hw >= last_hw,
                    "seed {seed}: HW went back from {last_hw} to {hw}"
                );
                assert!(
                    hw <= leos[1],
                    "seed {seed}: HW {hw} beyond the leader's LEO"
                );
                for &id in t.isr() {
                    assert!(
                        hw <= leos[id as usize],
                        "seed {seed}: HW {hw} beyond ISR member {id}'s LEO {}",
                        leos[id as usize]
                    );
                }
                last_hw = hw;
            }
        }
        // The walk must have exercised both kinds of ISR change.
        assert!(
            shrinks > 0 && expansions > 0,
            "{shrinks} shrinks, {expansions} expansions"
        );
    }
}
