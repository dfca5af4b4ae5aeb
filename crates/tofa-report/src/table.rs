//! Tables as Markdown and CSV.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{ReportError, Result};

/// One cell of a [`Table`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Cell {
    /// Free text.
    Text(String),
    /// A number shown with a fixed number of decimals.
    Num { value: f64, decimals: usize },
    /// No value (shown as `-`).
    Missing,
}

impl Cell {
    /// A number with `decimals` decimals; non-finite values show as `nan`/`inf`.
    pub fn num(value: f64, decimals: usize) -> Self {
        Cell::Num { value, decimals }
    }

    /// Text.
    pub fn text(s: impl Into<String>) -> Self {
        Cell::Text(s.into())
    }

    fn render(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Num { value, decimals } => format!("{value:.decimals$}"),
            Cell::Missing => "-".into(),
        }
    }
}

/// A titled table: named columns and rows of cells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// An empty table.
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; it must have one cell per column.
    pub fn push(&mut self, row: Vec<Cell>) -> Result<()> {
        if row.len() != self.columns.len() {
            return Err(ReportError::Table {
                table: self.title.clone(),
                msg: format!(
                    "row {} has {} cells but there are {} columns",
                    self.rows.len(),
                    row.len(),
                    self.columns.len()
                ),
            });
        }
        self.rows.push(row);
        Ok(())
    }

    /// GitHub-flavoured Markdown; numbers right-aligned, `|` in text escaped.
    pub fn to_markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let numeric: Vec<bool> = (0..self.columns.len())
            .map(|c| {
                self.rows.iter().any(|r| matches!(r[c], Cell::Num { .. }))
                    && self.rows.iter().all(|r| !matches!(r[c], Cell::Text(_)))
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| esc(c)).collect();
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let rule: Vec<&str> = numeric
            .iter()
            .map(|&n| if n { "---:" } else { "---" })
            .collect();
        let _ = writeln!(out, "|{}|", rule.join("|"));
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| esc(&c.render())).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }

    /// CSV (RFC 4180 quoting); missing cells are empty.
    pub fn to_csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
        let _ = writeln!(out, "{}", header.join(","));
        for r in &self.rows {
            let cells: Vec<String> = r
                .iter()
                .map(|c| match c {
                    Cell::Missing => String::new(),
                    c => quote(&c.render()),
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join(","));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new("t4", &["data set", "lab", "full"]);
        t.push(vec![
            Cell::text("cifar|10"),
            Cell::num(0.51234, 2),
            Cell::Missing,
        ])
        .unwrap();
        t.push(vec![
            Cell::text("a,\"b\""),
            Cell::num(1.0, 1),
            Cell::num(2.5, 1),
        ])
        .unwrap();
        t
    }

    #[test]
    fn markdown_aligns_numbers_and_escapes_pipes() {
        let md = sample().to_markdown();
        assert_eq!(
            md,
            "| data set | lab | full |\n|---|---:|---:|\n| cifar\\|10 | 0.51 | - |\n| a,\"b\" | 1.0 | 2.5 |\n"
        );
    }

    #[test]
    fn csv_quotes_and_leaves_missing_empty() {
        let csv = sample().to_csv();
        assert_eq!(
            csv,
            "data set,lab,full\ncifar|10,0.51,\n\"a,\"\"b\"\"\",1.0,2.5\n"
        );
    }

    #[test]
    fn rejects_ragged_rows() {
        let mut t = Table::new("t", &["a", "b"]);
        let err = t.push(vec![Cell::Missing]).unwrap_err().to_string();
        assert_eq!(err, "table `t`: row 0 has 1 cells but there are 2 columns");
    }
}
