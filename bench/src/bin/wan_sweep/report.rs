//! The sweep's outputs: the text table, the JSON and the PNG figure.

use geonfs_bench::plot::{Figure, Panel, Series};
use geonfs_bench::report::{json_num, percentile_ms, ratio, Table};
use geonfs_testkit::replication::SAMPLE_EVERY;
use serde_json::{json, Value};

use super::{mbps, Args, Iops, RttResult, CHUNK};

/// The table: one row per RTT.
pub(crate) fn table(results: &[RttResult], args: &Args) -> Table {
    let mut t = Table::new(
        &[
            "rtt_ms",
            "write_MBps",
            "rpo_max_s",
            "rpo_p50_s",
            "drain_s",
            "raw_p50_ms",
            "raw_p99_ms",
            "raw_stale",
            "iops_owner_before",
            "iops_new_site_after",
            "new/owner",
            "catchup_s",
        ],
        0,
    );
    for r in results {
        let h = &r.handover;
        t.row(vec![
            r.rtt_ms.to_string(),
            format!("{:.1}", r.write_mbps),
            format!("{:.2}", r.sustain.rpo_max()),
            format!("{:.2}", r.sustain.rpo_p50()),
            format!("{:.2}", r.sustain.drain_s),
            format!("{:.2}", percentile_ms(&r.raw.read_us, 0.5)),
            format!("{:.2}", percentile_ms(&r.raw.read_us, 0.99)),
            format!("{}/{}", r.raw.stale, args.raw_samples),
            format!("{:.0}", h.owner.iops),
            format!("{:.0}", h.new_site.iops),
            format!("{:.2}", ratio(h.new_site.iops, h.owner.iops)),
            format!("{:.2}", h.catchup_s),
        ]);
    }
    t
}

/// One RTT's numbers as a JSON object.
fn result_json(r: &RttResult) -> Value {
    let samples: Vec<Value> = r
        .sustain
        .samples
        .iter()
        .map(|s| {
            json!({
                "t_s": json_num(s.at_s),
                "rpo_s": json_num(s.rpo_s),
                "jobs": json_num(s.jobs),
                "writing": s.writing,
            })
        })
        .collect();
    let latencies =
        |us: &[u64]| -> Vec<Value> { us.iter().map(|&u| json_num(u as f64 / 1000.0)).collect() };
    let iops = |i: &Iops| {
        json!({
            "iops": json_num(i.iops),
            "reads": i.reads,
            "mismatched": i.mismatched,
        })
    };
    let h = &r.handover;
    json!({
        "rtt_ms": r.rtt_ms,
        "write": {
            "seconds": json_num(r.write_s),
            "mbps": json_num(r.write_mbps),
        },
        "sustain": {
            "seconds": json_num(r.sustain.seconds),
            "bytes": r.sustain.bytes,
            "mbps": json_num(mbps(r.sustain.bytes, r.sustain.seconds)),
            "rpo_max_s": json_num(r.sustain.rpo_max()),
            "rpo_p50_s": json_num(r.sustain.rpo_p50()),
            "drain_s": json_num(r.sustain.drain_s),
            "samples": samples,
        },
        "read_after_write": {
            "samples": r.raw.read_us.len(),
            "stale": r.raw.stale,
            "read_p50_ms": json_num(percentile_ms(&r.raw.read_us, 0.5)),
            "read_p99_ms": json_num(percentile_ms(&r.raw.read_us, 0.99)),
            "write_p50_ms": json_num(percentile_ms(&r.raw.write_us, 0.5)),
            "read_ms_sorted": latencies(&r.raw.read_us),
            "write_ms_sorted": latencies(&r.raw.write_us),
        },
        "handover": {
            "initial_drain_s": json_num(h.initial_drain_s),
            "owner_before": iops(&h.owner),
            "handover_write_ms": json_num(h.handover_write_ms),
            "catchup_s": json_num(h.catchup_s),
            "new_site_after": iops(&h.new_site),
            "ratio_new_over_owner": json_num(ratio(h.new_site.iops, h.owner.iops)),
        },
    })
}

/// The whole run as JSON: parameters and one object per RTT.
pub(crate) fn to_json(results: &[RttResult], args: &Args) -> Value {
    json!({
        "benchmark": "wan_sweep",
        "params": {
            "sites": 3,
            "cores_per_site": 3,
            "replication_factor": 3,
            "rtts_ms": args.rtts,
            "wan_mbps": args.wan_mbps.map(json_num),
            "write_mib": args.write_mib,
            "write_chunk_bytes": CHUNK,
            "depth": args.depth,
            "sustain_secs": json_num(args.sustain_secs),
            "rpo_sample_ms": u64::try_from(SAMPLE_EVERY.as_millis()).unwrap_or(u64::MAX),
            "raw_samples": args.raw_samples,
            "iops_mib": args.iops_mib,
            "iops_secs": json_num(args.iops_secs),
            "drain_timeout_s": json_num(args.drain_timeout),
            "seed": args.seed,
        },
        "results": results.iter().map(result_json).collect::<Vec<_>>(),
    })
}

/// The PNG: one panel per quantity against the RTT.
pub(crate) fn figure(results: &[RttResult], args: &Args) -> Figure {
    let line = |label: &str, y: &dyn Fn(&RttResult) -> f64| Series {
        label: label.to_string(),
        points: results.iter().map(|r| (r.rtt_ms as f64, y(r))).collect(),
    };
    let bandwidth = args
        .wan_mbps
        .map_or("unlimited".to_string(), |m| format!("{m} Mbit/s"));
    Figure {
        title: format!(
            "geonfs WAN sweep: 3 sites x 3 cores, n = 3, WAN bandwidth {bandwidth}, depth {}",
            args.depth
        ),
        x_label: "inter-site RTT (ms)".to_string(),
        columns: 2,
        size: (1400, 1000),
        panels: vec![
            Panel {
                title: "Write throughput at the owner (site a)".to_string(),
                y_label: "MB/s".to_string(),
                series: vec![
                    line(
                        &format!("{} MiB sequential + COMMIT", args.write_mib),
                        &|r| r.write_mbps,
                    ),
                    line("sustained rewrite", &|r| {
                        mbps(r.sustain.bytes, r.sustain.seconds)
                    }),
                ],
            },
            Panel {
                title: "Read-after-write: READ at site b after WRITE at a".to_string(),
                y_label: "READ latency (ms)".to_string(),
                series: vec![
                    line("p50", &|r| percentile_ms(&r.raw.read_us, 0.5)),
                    line("p99", &|r| percentile_ms(&r.raw.read_us, 0.99)),
                ],
            },
            Panel {
                title: "Replication lag (RPO) under sustained writes".to_string(),
                y_label: "seconds".to_string(),
                series: vec![
                    line("RPO max", &|r| r.sustain.rpo_max()),
                    line("RPO median", &|r| r.sustain.rpo_p50()),
                    line("drain after the writes", &|r| r.sustain.drain_s),
                ],
            },
            Panel {
                title: "4 KiB random-read IOPS around a handover a -> b".to_string(),
                y_label: "IOPS".to_string(),
                series: vec![
                    line("site a (owner) before", &|r| r.handover.owner.iops),
                    line("site b (new owner) after", &|r| r.handover.new_site.iops),
                ],
            },
        ],
    }
}
