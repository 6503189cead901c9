//! How commands print results: aligned tables for people, or one JSON document with
//! every field (`--format json`) for programs.

use std::io::Write;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A command's result, printable either way.
pub trait Report: Serialize {
    /// The human form, ending in a newline.
    fn human(&self) -> String;
}

/// Prints a report on stdout in `format`.
pub fn emit(format: Format, report: &impl Report) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => report.human(),
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Columns padded to their widest cell, two spaces apart.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let cells = self.rows.iter().filter_map(|row| row.get(c));
                cells.map(|cell| cell.chars().count()).max().unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let last = row.len().saturating_sub(1);
            for (c, cell) in row.iter().enumerate() {
                text.push_str(cell);
                if c < last {
                    let pad = widths[c] - cell.chars().count() + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.push('\n');
        }
        text
    }
}

/// A list of node ids or partitions as `1,2,3`.
pub fn list(items: &[i32]) -> String {
    items
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// An optional number, `-` when absent.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// What happened to each of several named things (topics or groups deleted).
#[derive(Serialize)]
pub struct OutcomeReport {
    #[serde(skip)]
    verb: &'static str,
    pub results: Vec<Outcome>,
}

#[derive(Serialize)]
pub struct Outcome {
    pub name: String,
    pub ok: bool,
    pub error: Option<String>,
}

impl OutcomeReport {
    /// Prints what succeeded (and, in JSON, what failed); fails with every failure on one
    /// line if any.
    pub fn emit(
        format: Format,
        verb: &'static str,
        outcomes: corelog_client::admin::Outcomes,
    ) -> anyhow::Result<()> {
        let results: Vec<Outcome> = outcomes
            .into_iter()
            .map(|(name, result)| Outcome {
                name,
                ok: result.is_ok(),
                error: result.err().map(|e| e.to_string()),
            })
            .collect();
        let report = OutcomeReport { verb, results };
        emit(format, &report)?;
        let failures: Vec<&str> = report
            .results
            .iter()
            .filter_map(|o| o.error.as_deref())
            .collect();
        anyhow::ensure!(failures.is_empty(), "{}", failures.join("; "));
        Ok(())
    }
}

impl Report for OutcomeReport {
    fn human(&self) -> String {
        self.results
            .iter()
            .filter(|o| o.ok)
            .map(|o| format!("{} {}\n", self.verb, o.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["NAME", "PARTITIONS"]);
        table.row(vec!["a-long-name".into(), "3".into()]);
        table.row(vec!["b".into(), "12".into()]);
        assert_eq!(
            table.render(),
            "NAME         PARTITIONS\na-long-name  3\nb            12\n"
        );
    }
}
