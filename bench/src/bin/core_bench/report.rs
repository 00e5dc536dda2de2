//! core_bench's report: medians across rounds per case and variant, the
//! table on stdout and the JSON document.

use geonfs_bench::report::{json_num, median, ratio, Table};
use serde_json::{json, Value};

use super::{variant_name, workload_name, Args, Record, Sample, BLOCK_SIZE, CASES};

/// Medians across rounds of one case and variant.
fn summarize(records: &[Record], case: usize, variant: usize) -> Sample {
    let samples: Vec<&Sample> = records
        .iter()
        .filter(|r| r.case == case && r.variant == variant)
        .map(|r| &r.sample)
        .collect();
    let pick =
        |f: &dyn Fn(&Sample) -> f64| median(&samples.iter().map(|s| f(s)).collect::<Vec<_>>());
    let jobs = pick(&|s| s.backlog_jobs.map_or(f64::NAN, |j| j as f64));
    Sample {
        ops_per_sec: pick(&|s| s.ops_per_sec),
        mb_per_sec: pick(&|s| s.mb_per_sec),
        p50_ms: pick(&|s| s.p50_ms),
        p99_ms: pick(&|s| s.p99_ms),
        ops: samples.iter().map(|s| s.ops).sum(),
        errors: samples.iter().map(|s| s.errors).sum(),
        syncs_per_write: pick(&|s| s.syncs_per_write),
        backlog_jobs: jobs.is_finite().then_some(jobs.round() as u64),
        backlog_mb: Some(pick(&|s| s.backlog_mb.unwrap_or(f64::NAN))).filter(|x| x.is_finite()),
    }
}

fn sample_json(s: &Sample) -> Value {
    json!({
        "ops_per_sec": json_num(s.ops_per_sec),
        "mb_per_sec": json_num(s.mb_per_sec),
        "p50_ms": json_num(s.p50_ms),
        "p99_ms": json_num(s.p99_ms),
        "ops": s.ops,
        "errors": s.errors,
        "wal_syncs_per_write": json_num(s.syncs_per_write),
        "backlog_jobs": s.backlog_jobs,
        "backlog_mb": json_num(s.backlog_mb.unwrap_or(f64::NAN)),
    })
}

pub(super) fn to_json(args: &Args, records: &[Record]) -> Value {
    let summary: Vec<Value> = (0..CASES.len())
        .map(|case| {
            let (a, b) = (summarize(records, case, 0), summarize(records, case, 1));
            let (id, what, _, _) = CASES[case];
            json!({
                "scenario": id,
                "workload": what,
                "a": variant_name(args, case, 0),
                "a_writers": workload_name(args, case, 0),
                "a_result": sample_json(&a),
                "b": variant_name(args, case, 1),
                "b_writers": workload_name(args, case, 1),
                "b_result": sample_json(&b),
                "ratio_b_over_a_ops": json_num(ratio(b.ops_per_sec, a.ops_per_sec)),
                "ratio_b_over_a_p50": json_num(ratio(b.p50_ms, a.p50_ms)),
            })
        })
        .collect();
    let rounds: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "round": r.round + 1,
                "scenario": CASES[r.case].0,
                "variant": variant_name(args, r.case, r.variant),
                "result": sample_json(&r.sample),
            })
        })
        .collect();
    json!({
        "benchmark": "core_bench",
        "config": {
            "seconds": json_num(args.seconds),
            "warmup_seconds": json_num(args.warmup),
            "rounds": args.rounds,
            "queue_depth": args.queue_depth,
            "blocks": args.blocks,
            "block_size": BLOCK_SIZE,
            "wan_writers": args.wan_writers,
            "rtt_ms": args.rtt_ms,
            "wan_mb_per_s": args.wan_mb_per_s,
        },
        "statistic": "median across rounds; latency percentiles nearest-rank over successful writes; MB = 10^6 bytes",
        "summary": summary,
        "rounds": rounds,
    })
}

pub(super) fn table(args: &Args, records: &[Record]) -> String {
    let mut out = format!(
        "core block pipeline: {} s measured (+{} s warm-up) per run, {} rounds A B A B, {} blocks of 4 MiB, all writes durable; medians across rounds\n",
        args.seconds, args.warmup, args.rounds, args.blocks
    );
    let mut t = Table::new(
        &[
            "scn", "workload", "variant", "writers", "ops/s", "MB/s", "p50 ms", "p99 ms",
            "syncs/wr", "backlog", "errors",
        ],
        4,
    );
    for (case, &(id, what, _, _)) in CASES.iter().enumerate() {
        let (a, b) = (summarize(records, case, 0), summarize(records, case, 1));
        for (variant, s) in [(0, &a), (1, &b)] {
            let backlog = match (s.backlog_jobs, s.backlog_mb) {
                (Some(jobs), Some(mb)) => format!("{jobs} jobs/{mb:.0} MB"),
                _ => "-".to_string(),
            };
            t.row(vec![
                id.to_string(),
                what.to_string(),
                variant_name(args, case, variant),
                workload_name(args, case, variant),
                format!("{:.1}", s.ops_per_sec),
                format!("{:.1}", s.mb_per_sec),
                format!("{:.2}", s.p50_ms),
                format!("{:.2}", s.p99_ms),
                format!("{:.3}", s.syncs_per_write),
                backlog,
                s.errors.to_string(),
            ]);
        }
        t.row(vec![
            id.to_string(),
            what.to_string(),
            "ratio B/A".to_string(),
            String::new(),
            format!("{:.3}x", ratio(b.ops_per_sec, a.ops_per_sec)),
            format!("{:.3}x", ratio(b.mb_per_sec, a.mb_per_sec)),
            format!("{:.2}x", ratio(b.p50_ms, a.p50_ms)),
            format!("{:.2}x", ratio(b.p99_ms, a.p99_ms)),
        ]);
        if case + 1 < CASES.len() {
            t.rule();
        }
    }
    out += &t.render();
    out
}
