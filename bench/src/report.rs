//! Helpers shared by the benchmark binaries: percentiles and medians,
//! ratios, JSON reports, aligned text tables, and the logging set-up.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// Nearest-rank percentile `p` (0..=1) of sorted values in µs, in ms; NaN
/// when there are no values.
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[index] as f64 / 1000.0
}

/// Median of the non-NaN values (mean of the two middle ones for an even
/// count); NaN when there are none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Checks a benchmark's measured window (`--seconds`, positive) and
/// warm-up (`--warmup`, zero or more).
pub fn check_window(seconds: f64, warmup: f64) -> anyhow::Result<()> {
    if !(seconds.is_finite() && seconds > 0.0) {
        anyhow::bail!("--seconds must be positive");
    }
    if !(warmup.is_finite() && warmup >= 0.0) {
        anyhow::bail!("--warmup must be zero or positive");
    }
    Ok(())
}

/// `a / b`, NaN when `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

/// A JSON number rounded to three decimals (`null` when not finite).
pub fn json_num(x: f64) -> Value {
    if x.is_finite() {
        Value::from((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// Writes `report` to `path` as pretty-printed JSON, creating its parent
/// directory if needed.
pub fn write_json(path: &Path, report: &Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report)? + "\n";
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A text table: the first `left` columns are left-aligned, the others
/// right-aligned; every column is as wide as its widest cell.
#[derive(Clone, Debug)]
pub struct Table {
    headers: Vec<String>,
    /// `None` is a horizontal rule.
    rows: Vec<Option<Vec<String>>>,
    left: usize,
}

impl Table {
    /// A table with these column headers, the first `left` left-aligned.
    pub fn new(headers: &[&str], left: usize) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            left,
        }
    }

    /// Appends a row (missing cells are blank, extra ones dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(Some(cells));
    }

    /// Appends a horizontal rule.
    pub fn rule(&mut self) {
        self.rows.push(None);
    }

    /// The table as text, header and a rule first, one line per row.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in self.rows.iter().flatten() {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let total = widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1);
        let line = |cells: &[String]| {
            let mut out = Vec::with_capacity(columns);
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                out.push(if i < self.left {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                });
            }
            format!("{}\n", out.join("  ").trim_end())
        };
        let mut out = line(&self.headers);
        out += &format!("{}\n", "-".repeat(total));
        for row in &self.rows {
            match row {
                Some(cells) => out += &line(cells),
                None => out += &format!("{}\n", "-".repeat(total)),
            }
        }
        out
    }
}

/// Logs to stderr, at the level of `RUST_LOG` (default `warn`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_have_three_decimals_and_non_finite_ones_are_null() {
        assert_eq!(json_num(1.23456), serde_json::json!(1.235));
        assert_eq!(json_num(2.0).to_string(), "2.0");
        assert_eq!(json_num(f64::NAN), Value::Null);
        assert_eq!(json_num(f64::INFINITY), Value::Null);
    }

    #[test]
    fn a_report_is_written_as_json_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/report.json");
        let report = serde_json::json!({"benchmark": "x", "ratio": json_num(f64::NAN), "n": 3});
        write_json(&path, &report).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
    }
}
