//! Results: the samples of each (case, contender), their medians and spreads, the tables printed
//! for people (Markdown, so that they paste into `docs/benchmarks.md`) and the JSON for machines,
//! and saved baselines to compare a later run against.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One measured run of one contender in one case.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// The scenario's primary figure (MB/s, sessions/s, p50 µs, KiB per session).
    pub value: f64,
    /// Length of the measured window.
    pub seconds: f64,
    /// Units of work inside the window (GB moved, sessions, round trips, sessions held).
    pub work: f64,
    /// CPU seconds per role inside the window (`client`, `proxy`, `agent`, `loadgen`).
    pub cpu: BTreeMap<String, f64>,
    /// Scenario-specific figures (percentiles, memory per role, machine CPU not attributed to the
    /// path's processes, ...).
    pub extra: BTreeMap<String, f64>,
    /// Scenario-specific series (`reconnect`: agents back per second).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub series: BTreeMap<String, Vec<f64>>,
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Sample {
    pub fn cpu(&self, role: &str) -> f64 {
        self.cpu.get(role).copied().unwrap_or(f64::NAN)
    }
    pub fn extra(&self, key: &str) -> f64 {
        self.extra.get(key).copied().unwrap_or(f64::NAN)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub case: String,
    pub contender: String,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContenderInfo {
    pub name: String,
    pub describe: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    pub date: String,
    pub commit: String,
    pub kernel: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub command: String,
    pub versions: BTreeMap<String, String>,
}

impl Meta {
    pub fn collect(root: &Path) -> Self {
        let sh = |prog: &str, args: &[&str]| -> String {
            Command::new(prog)
                .args(args)
                .current_dir(root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        let mut commit = sh("git", &["rev-parse", "--short", "HEAD"]);
        // Name the top-level folders with uncommitted changes to tracked files, if any.
        let status = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .current_dir(root)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        // Lines are "XY PATH": the path starts at the fourth character.
        let mut dirty: Vec<String> = status
            .lines()
            .filter_map(|l| l.get(3..))
            .map(|p| match p.split_once('/') {
                Some((top, _)) => format!("{top}/"),
                None => p.to_string(),
            })
            .collect();
        dirty.sort();
        dirty.dedup();
        if !commit.is_empty() && !dirty.is_empty() {
            commit.push_str(&format!(" (uncommitted changes in {})", dirty.join(", ")));
        }
        Self {
            date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            commit,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo")
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            loadavg_before: loadavg(),
            loadavg_after: String::new(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            versions: BTreeMap::new(),
        }
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The whole result of one scenario run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub meta: Meta,
    pub settings: BTreeMap<String, serde_json::Value>,
    pub contenders: Vec<ContenderInfo>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    /// The printed table, as header + rows of cells.
    #[serde(default)]
    pub table: Vec<Vec<String>>,
}

impl Report {
    pub fn row(&self, case: &str, contender: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.case == case && r.contender == contender)
    }

    pub fn row_mut(&mut self, case: &str, contender: &str) -> &mut Row {
        if let Some(i) = self
            .rows
            .iter()
            .position(|r| r.case == case && r.contender == contender)
        {
            return &mut self.rows[i];
        }
        self.rows.push(Row {
            case: case.to_string(),
            contender: contender.to_string(),
            samples: vec![],
        });
        self.rows.last_mut().expect("just pushed")
    }
}

/// Median of the finite values (NaN when there are none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// (min, max) of the finite values.
pub fn range(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values
        .into_iter()
        .filter(|x| x.is_finite())
        .fold((f64::NAN, f64::NAN), |(lo, hi), x| {
            (
                if lo.is_nan() { x } else { lo.min(x) },
                if hi.is_nan() { x } else { hi.max(x) },
            )
        })
}

impl Row {
    pub fn med(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.samples.iter().map(f))
    }
    /// "min–max" of a figure across the repetitions.
    pub fn spread(&self, f: impl Fn(&Sample) -> f64, digits: usize) -> String {
        let (lo, hi) = range(self.samples.iter().map(f));
        if lo.is_nan() {
            return "-".into();
        }
        format!("{}–{}", num(lo, digits), num(hi, digits))
    }
    pub fn errors(&self) -> u64 {
        self.samples.iter().map(|s| s.errors).sum()
    }
}

/// A number with `digits` decimals, "-" when not finite.
pub fn num(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "-".into()
    }
}

/// "1.23×", or "-" when either side is missing.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b != 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "-".into()
    }
}

/// Renders header + rows as an aligned Markdown table.
pub fn markdown(table: &[Vec<String>]) -> String {
    let Some(head) = table.first() else {
        return String::new();
    };
    let widths: Vec<usize> = (0..head.len())
        .map(|c| {
            table
                .iter()
                .map(|r| r.get(c).map(|s| s.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
                .max(3)
        })
        .collect();
    let line = |r: &Vec<String>| {
        let cells: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(c, w)| {
                let s = r.get(c).map(String::as_str).unwrap_or("");
                let pad = w - s.chars().count();
                if c < 2 {
                    format!("{s}{}", " ".repeat(pad))
                } else {
                    format!("{}{s}", " ".repeat(pad))
                }
            })
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    let mut out = line(head);
    out.push('\n');
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, w)| {
            if c < 2 {
                "-".repeat(*w)
            } else {
                format!("{}:", "-".repeat(w - 1))
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for r in &table[1..] {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// Where baselines live: `<target dir>/hop-bench/<scenario>/<name>.json`.
pub fn baseline_path(target_dir: &Path, scenario: &str, name: &str) -> PathBuf {
    target_dir
        .join("hop-bench")
        .join(scenario)
        .join(format!("{name}.json"))
}

pub fn save(report: &Report, path: &Path) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn load(path: &Path) -> anyhow::Result<Report> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading baseline {} (save one with --save-baseline NAME)",
            path.display()
        )
    })?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Prints the report for people: context, the table, what each contender is, and notes.
pub fn print_text(r: &Report) {
    let m = &r.meta;
    println!("## {}\n", r.scenario);
    println!(
        "- date: {}; commit: {}; machine: {} cores ({}), kernel {}",
        m.date, m.commit, m.nproc, m.cpu_model, m.kernel
    );
    println!(
        "- load average before / after: {} / {}",
        m.loadavg_before, m.loadavg_after
    );
    println!("- command: `{}`", m.command);
    let settings: Vec<String> = r.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("- settings: {}", settings.join(", "));
    let versions: Vec<String> = m
        .versions
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if !versions.is_empty() {
        println!("- versions: {}", versions.join("; "));
    }
    println!();
    print!("{}", markdown(&r.table));
    println!();
    for c in &r.contenders {
        println!("- `{}`: {}", c.name, c.describe);
    }
    for n in &r.notes {
        println!("- {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ranges_and_tables() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median([f64::NAN]).is_nan());
        assert_eq!(range([2.0, f64::NAN, 5.0, 1.0]), (1.0, 5.0));
        assert_eq!(ratio(3.0, 2.0), "1.50×");
        assert_eq!(ratio(3.0, f64::NAN), "-");
        let t = markdown(&[
            vec!["case".into(), "who".into(), "MB/s".into()],
            vec!["1".into(), "hop".into(), "12.5".into()],
        ]);
        assert_eq!(
            t,
            "| case | who | MB/s |\n| ---- | --- | ---: |\n| 1    | hop | 12.5 |\n"
        );
    }

    #[test]
    fn reports_round_trip_as_json() {
        let mut r = Report {
            scenario: "relay".into(),
            meta: Meta::default(),
            settings: BTreeMap::new(),
            contenders: vec![],
            rows: vec![],
            notes: vec![],
            table: vec![],
        };
        r.row_mut("1", "hop").samples.push(Sample {
            value: 1.5,
            ..Default::default()
        });
        r.row_mut("1", "hop").samples.push(Sample::default());
        assert_eq!(r.rows.len(), 1);
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.row("1", "hop").unwrap().samples.len(), 2);
    }
}
