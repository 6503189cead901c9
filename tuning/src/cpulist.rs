//! The kernel's CPU list format ("0-3,8,10-11"), used by sysfs, /proc/irq/*/smp_affinity_list
//! and the `--cores` option.

/// No kernel supports more CPUs than this (NR_CPUS tops out at 8192); a bigger number is a
/// typo, and refusing it keeps "0-4000000000" from allocating gigabytes.
pub const MAX_CPUS: usize = 8192;

/// Parses "0-3,8,10-11" into sorted, distinct CPU numbers. An empty string is the empty set
/// (an IRQ with no affinity, an offline list with nothing offline).
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (parse_cpu(lo, s)?, parse_cpu(hi, s)?),
            None => {
                let cpu = parse_cpu(part, s)?;
                (cpu, cpu)
            }
        };
        if lo > hi {
            return Err(format!("bad CPU list {s:?}: range {part} runs backwards"));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn parse_cpu(word: &str, whole: &str) -> Result<usize, String> {
    let word = word.trim();
    let cpu: usize = word
        .parse()
        .map_err(|_| format!("bad CPU list {whole:?}: {word:?} is not a CPU number"))?;
    if cpu >= MAX_CPUS {
        return Err(format!(
            "bad CPU list {whole:?}: CPU {cpu} is beyond the kernel's limit of {MAX_CPUS}"
        ));
    }
    Ok(cpu)
}

/// Formats CPUs the way the kernel does: sorted, consecutive runs as ranges.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_singles() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11").unwrap(),
            [0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("5").unwrap(), [5]);
        assert_eq!(parse_cpu_list("0-1\n").unwrap(), [0, 1]);
    }

    #[test]
    fn sorts_and_dedups() {
        assert_eq!(parse_cpu_list("3,1-2,2").unwrap(), [1, 2, 3]);
    }

    #[test]
    fn empty_is_empty_set() {
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("\n").unwrap(), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("1,,2").unwrap(), [1, 2]);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("-1").is_err());
        assert!(parse_cpu_list("0-").is_err());
        assert!(parse_cpu_list("0-4000000000").is_err());
        assert!(parse_cpu_list("99999999999999999999999").is_err());
        // The kernel's stride syntax is input-only; nothing we read prints it.
        assert!(parse_cpu_list("0-7:2/4").is_err());
    }

    #[test]
    fn formats_runs() {
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpu_list(&[11, 10, 0]), "0,10-11");
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[4]), "4");
    }

    #[test]
    fn round_trips() {
        for s in ["0-3,8,10-11", "0", "1,3,5", "0-127"] {
            assert_eq!(format_cpu_list(&parse_cpu_list(s).unwrap()), s);
        }
    }
}
