//! Which CPUs the broker's shards should be pinned to.

use std::collections::{BTreeMap, BTreeSet};

use crate::{cpu, irq};

/// Below this many physical cores, an unspecified core count keeps the IRQ-heavy cores:
/// giving up a whole core of four costs more throughput than the interrupts cost latency.
/// Same threshold as perftune's switch from spreading IRQs over all cores ("mq" mode) to
/// dedicating cores to them.
pub const MIN_CORES_TO_SPARE_IRQ_CORES: usize = 4;

/// The CPUs to run broker shards on, by the same logic `corelog-tune check` uses:
///
/// * only CPUs this process may run on (its affinity mask / cgroup cpuset);
/// * one hardware thread per physical core before any second SMT sibling;
/// * cores that handle most NIC/disk interrupts last, when there is a choice: for
///   `Some(n)` when enough other cores exist, for `None` only on hosts with more than
///   [`MIN_CORES_TO_SPARE_IRQ_CORES`] physical cores;
/// * with no topology or interrupt information, simply every allowed CPU in order.
///
/// `None` means one shard per physical core (minus IRQ cores as above). `Some(n)` returns
/// `n` CPUs, clamped to between 1 and the number of allowed CPUs, so callers should compare
/// the length with what they asked for. The result is sorted and never empty.
pub fn pick_cores(requested: Option<usize>) -> Vec<usize> {
    let allowed = cpu::allowed_cpus();
    let siblings = cpu::sibling_map(&allowed);
    let load = irq::device_irqs()
        .map(|irqs| irq::irq_load(&irqs))
        .unwrap_or_default();
    let cores = choose_cores(&allowed, &siblings, &load, requested);
    if cores.is_empty() {
        // Only reachable if the allowed set is empty, which allowed_cpus never returns.
        vec![0]
    } else {
        cores
    }
}

/// The decision behind [`pick_cores`], apart from the reads so it can be tested.
/// `siblings` maps a CPU to its SMT siblings (itself included); a CPU missing from it is a
/// core of its own. `irq_load` is NIC/disk interrupts handled per CPU.
pub fn choose_cores(
    allowed: &[usize],
    siblings: &BTreeMap<usize, Vec<usize>>,
    irq_load: &BTreeMap<usize, u64>,
    requested: Option<usize>,
) -> Vec<usize> {
    let mut allowed = allowed.to_vec();
    allowed.sort_unstable();
    allowed.dedup();
    let core_of = |cpu: usize| siblings.get(&cpu).cloned().unwrap_or_else(|| vec![cpu]);

    // The first allowed thread of each physical core is its primary; the rest wait.
    let mut seen = BTreeSet::new();
    let (mut primaries, mut secondaries) = (Vec::new(), Vec::new());
    for &cpu in &allowed {
        if seen.insert(core_of(cpu)) {
            primaries.push(cpu);
        } else {
            secondaries.push(cpu);
        }
    }

    // Interrupts on a thread disturb its siblings too, so avoid whole physical cores.
    let heavy_cores: BTreeSet<Vec<usize>> = irq_heavy(&allowed, irq_load)
        .into_iter()
        .map(core_of)
        .collect();
    let heavy = |cpu: &usize| heavy_cores.contains(&core_of(*cpu));
    let (clean_primaries, heavy_primaries): (Vec<usize>, Vec<usize>) =
        primaries.iter().partition(|c| !heavy(c));

    let mut chosen = match requested {
        None => {
            if primaries.len() > MIN_CORES_TO_SPARE_IRQ_CORES && !clean_primaries.is_empty() {
                clean_primaries
            } else {
                primaries
            }
        }
        Some(n) => {
            let n = n.clamp(1, allowed.len().max(1));
            let (clean_secondaries, heavy_secondaries): (Vec<usize>, Vec<usize>) =
                secondaries.iter().partition(|c| !heavy(c));
            clean_primaries
                .into_iter()
                .chain(heavy_primaries)
                .chain(clean_secondaries)
                .chain(heavy_secondaries)
                .take(n)
                .collect()
        }
    };
    chosen.sort_unstable();
    chosen
}

/// The fewest CPUs that together handle more than half of all NIC/disk interrupts: the
/// cores the kernel (or irqbalance, or the NIC's queue count) has made the interrupt
/// cores. Empty when there are no interrupts to speak of, or when they are spread so
/// evenly that avoiding them would mean avoiding every core.
pub fn irq_heavy(allowed: &[usize], irq_load: &BTreeMap<usize, u64>) -> Vec<usize> {
    let mut loads: Vec<(usize, u64)> = allowed
        .iter()
        .map(|&c| (c, irq_load.get(&c).copied().unwrap_or(0)))
        .collect();
    let total: u64 = loads.iter().map(|&(_, n)| n).sum();
    if total == 0 {
        return Vec::new();
    }
    // Most loaded first; equal loads in CPU order so the result is stable.
    loads.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut heavy = Vec::new();
    let mut sum = 0u64;
    for (cpu, n) in loads {
        if sum.saturating_mul(2) > total {
            break;
        }
        heavy.push(cpu);
        sum = sum.saturating_add(n);
    }
    if heavy.len() >= allowed.len() {
        return Vec::new();
    }
    heavy.sort_unstable();
    heavy
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 8 threads on 4 cores, Intel numbering: cpu N and N+4 are siblings.
    fn ht4() -> BTreeMap<usize, Vec<usize>> {
        (0..8).map(|c| (c, vec![c % 4, c % 4 + 4])).collect()
    }

    fn no_load() -> BTreeMap<usize, u64> {
        BTreeMap::new()
    }

    #[test]
    fn one_thread_per_core_by_default() {
        let all: Vec<usize> = (0..8).collect();
        assert_eq!(choose_cores(&all, &ht4(), &no_load(), None), [0, 1, 2, 3]);
    }

    #[test]
    fn siblings_only_after_every_core_is_used() {
        let all: Vec<usize> = (0..8).collect();
        assert_eq!(choose_cores(&all, &ht4(), &no_load(), Some(2)), [0, 1]);
        assert_eq!(
            choose_cores(&all, &ht4(), &no_load(), Some(6)),
            [0, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn amd_style_adjacent_siblings() {
        let siblings: BTreeMap<usize, Vec<usize>> =
            (0..8).map(|c| (c, vec![c & !1, c | 1])).collect();
        let all: Vec<usize> = (0..8).collect();
        assert_eq!(
            choose_cores(&all, &siblings, &no_load(), None),
            [0, 2, 4, 6]
        );
    }

    #[test]
    fn respects_the_affinity_mask() {
        // taskset -c 4-7: the primaries become 4..7, each the first allowed thread of its core.
        assert_eq!(
            choose_cores(&[4, 5, 6, 7], &ht4(), &no_load(), None),
            [4, 5, 6, 7]
        );
        assert_eq!(choose_cores(&[1, 5], &ht4(), &no_load(), None), [1]);
    }

    #[test]
    fn without_topology_every_cpu_in_order() {
        assert_eq!(
            choose_cores(&[3, 0, 2, 1], &BTreeMap::new(), &no_load(), None),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn avoids_irq_core_when_asked_for_fewer() {
        let load = [(0, 1_000_000), (1, 10), (2, 10), (3, 10)].into();
        assert_eq!(
            choose_cores(&[0, 1, 2, 3], &BTreeMap::new(), &load, Some(3)),
            [1, 2, 3]
        );
        // No choice left: the IRQ core is used too.
        assert_eq!(
            choose_cores(&[0, 1, 2, 3], &BTreeMap::new(), &load, Some(4)),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn small_hosts_keep_irq_cores_by_default() {
        let load = [(1, 349_519), (0, 3_995)].into();
        assert_eq!(choose_cores(&[0, 1], &BTreeMap::new(), &load, None), [0, 1]);
    }

    #[test]
    fn big_hosts_spare_the_irq_core_and_its_sibling() {
        let siblings: BTreeMap<usize, Vec<usize>> =
            (0..16).map(|c| (c, vec![c % 8, c % 8 + 8])).collect();
        let all: Vec<usize> = (0..16).collect();
        // IRQs on cpu 8, the sibling of cpu 0: physical core 0 is avoided.
        let load = [(8, 5_000_000), (3, 100)].into();
        assert_eq!(
            choose_cores(&all, &siblings, &load, None),
            [1, 2, 3, 4, 5, 6, 7]
        );
    }

    #[test]
    fn clamps_odd_requests() {
        assert_eq!(
            choose_cores(&[0, 1], &BTreeMap::new(), &no_load(), Some(0)),
            [0]
        );
        assert_eq!(
            choose_cores(&[0, 1], &BTreeMap::new(), &no_load(), Some(99)),
            [0, 1]
        );
        assert_eq!(
            choose_cores(&[], &BTreeMap::new(), &no_load(), Some(2)),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn heavy_set_is_the_smallest_majority() {
        let load = [(0, 50), (1, 30), (2, 20), (3, 0)].into();
        assert_eq!(irq_heavy(&[0, 1, 2, 3], &load), [0, 1]);
        let load = [(0, 90), (1, 10)].into();
        assert_eq!(irq_heavy(&[0, 1], &load), [0]);
        // Evenly spread: no core stands out, so none is avoided.
        let load = [(0, 10), (1, 10)].into();
        assert_eq!(irq_heavy(&[0, 1], &load), Vec::<usize>::new());
        assert_eq!(irq_heavy(&[0, 1], &BTreeMap::new()), Vec::<usize>::new());
        assert_eq!(irq_heavy(&[0], &[(0, 5)].into()), Vec::<usize>::new());
    }

    #[test]
    fn pick_cores_on_this_host_is_allowed_and_sorted() {
        let cores = pick_cores(None);
        let allowed = cpu::allowed_cpus();
        assert!(!cores.is_empty());
        assert!(cores.iter().all(|c| allowed.contains(c)));
        assert!(cores.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(pick_cores(Some(1)).len(), 1);
    }
}
