//! Rendering findings for people (table) and programs (JSON).

use std::path::Path;

use serde::Serialize;

use crate::cpulist::format_cpu_list;
use crate::finding::{Finding, Status};

/// What `check --format json` prints.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub broker_cores: &'a [usize],
    pub data_dir: String,
    pub findings: &'a [Finding],
}

pub fn json(broker_cores: &[usize], data_dir: &Path, findings: &[Finding]) -> String {
    let report = Report {
        broker_cores,
        data_dir: data_dir.display().to_string(),
        findings,
    };
    // Serializing plain strings and numbers cannot fail; keep the output valid JSON anyway.
    serde_json::to_string_pretty(&report)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

/// One row per setting (SETTING, STATUS, CURRENT, RECOMMENDED), each followed by why it
/// matters, wrapped and indented so the columns stay readable.
pub fn table(broker_cores: &[usize], data_dir: &Path, findings: &[Finding]) -> String {
    const HEADERS: [&str; 4] = ["SETTING", "STATUS", "CURRENT", "RECOMMENDED"];
    // Long values (a list of IRQs) overflow their column rather than widen every row.
    const MAX_WIDTH: usize = 44;
    let rows: Vec<[String; 4]> = findings
        .iter()
        .map(|f| {
            [
                f.name.to_string(),
                f.status.as_str().to_string(),
                f.current.clone(),
                f.recommended.clone(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count().min(MAX_WIDTH));
        }
    }
    let line = |cells: [&str; 4]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };

    let mut out = format!(
        "broker cores: {}   data dir: {}\n\n",
        format_cpu_list(broker_cores),
        data_dir.display()
    );
    out.push_str(&line(HEADERS));
    out.push('\n');
    let indent = widths.first().copied().unwrap_or(0) + 2;
    for (row, f) in rows.iter().zip(findings) {
        out.push_str(&line(row.each_ref().map(String::as_str)));
        out.push('\n');
        for wrapped in wrap(
            &format!("why: {}", f.why),
            96usize.saturating_sub(indent).max(40),
        ) {
            out.push_str(&" ".repeat(indent));
            out.push_str(&wrapped);
            out.push('\n');
        }
    }
    let count = |s: Status| findings.iter().filter(|f| f.status == s).count();
    out.push_str(&format!(
        "\n{} ok, {} warn, {} unknown{}\n",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Unknown),
        if count(Status::Warn) > 0 {
            "; `corelog-tune apply --dry-run` shows what apply would change"
        } else {
            ""
        }
    ));
    out
}

/// Greedy word wrap; a word longer than `width` gets a line of its own.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Fix;

    fn findings() -> Vec<Finding> {
        vec![
            Finding::ok("vm.swappiness", "why one", "1".into(), "<= 1".into()),
            Finding::warn(
                "net.core.somaxconn",
                "why two",
                "128".into(),
                ">= 4096".into(),
                Fix::Manual("x".into()),
            ),
        ]
    }

    #[test]
    fn table_has_a_row_per_finding() {
        let t = table(&[0, 1], Path::new("./data"), &findings());
        assert!(t.starts_with("broker cores: 0-1   data dir: ./data"));
        let rows: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("vm.") || l.starts_with("net."))
            .collect();
        assert_eq!(rows.len(), 2);
        assert!(
            rows[0].contains(" ok ") && rows[0].ends_with("<= 1"),
            "{}",
            rows[0]
        );
        assert!(t.contains("why: why two"));
        assert!(t.contains("1 ok, 1 warn, 0 unknown"));
    }

    #[test]
    fn json_round_trips() {
        let j = json(&[2], Path::new("/d"), &findings());
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["broker_cores"][0], 2);
        assert_eq!(v["findings"][1]["status"], "warn");
        assert_eq!(v["findings"][1]["fix"]["manual"], "x");
        assert_eq!(v["findings"][0]["fix"], serde_json::Value::Null);
    }

    #[test]
    fn wraps_words() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(
            wrap("averyveryverylongword x", 5),
            ["averyveryverylongword", "x"]
        );
        assert_eq!(wrap("", 5), Vec::<String>::new());
    }
}
