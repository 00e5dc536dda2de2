//! `[meta]`: meta-kvs's Raft timing, checked against the round trip
//! between sites (an election needs a few of them: pre-vote, vote).

use std::time::Duration;

use crate::raw::{Leaf, RawMeta};
use crate::units::{format_duration, parse_duration};
use crate::{MetaSettings, MetaTiming, WanLink};

use super::Ctx;

/// The shortest tick accepted.
const MIN_TICK: Duration = Duration::from_millis(10);
/// The longest tick accepted.
const MAX_TICK: Duration = Duration::from_secs(10);
/// The longest round trip and election timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// An election timeout must span at least this many round trips.
pub(super) const ELECTION_RTTS: u32 = 3;

fn duration(ctx: &mut Ctx<'_>, key: &str, leaf: &Leaf<String>) -> Option<Duration> {
    let text = ctx.get(key, leaf)?;
    match parse_duration(text) {
        Ok(d) if d <= MAX_TIMEOUT => Some(d),
        Ok(_) => {
            ctx.push(
                key,
                format!("{text:?} is too long (at most {}s)", MAX_TIMEOUT.as_secs()),
            );
            None
        }
        Err(m) => {
            ctx.push(key, m);
            None
        }
    }
}

/// `[meta]` as written, and its problems against the timing it gives.
pub(super) fn meta(ctx: &mut Ctx<'_>, raw: Option<&RawMeta>, wan: &[WanLink]) -> MetaSettings {
    let Some(r) = raw else {
        return MetaSettings::default();
    };
    let settings = MetaSettings {
        inter_site_rtt: duration(ctx, "meta.inter_site_rtt", &r.inter_site_rtt),
        tick: duration(ctx, "meta.tick", &r.tick),
        election_timeout: duration(ctx, "meta.election_timeout", &r.election_timeout),
        heartbeat_interval: duration(ctx, "meta.heartbeat_interval", &r.heartbeat_interval),
    };
    let timing = MetaTiming::new(&settings, wan);
    if settings.tick.is_some() && !(MIN_TICK..=MAX_TICK).contains(&timing.tick) {
        ctx.push(
            "meta.tick",
            format!(
                "{} is out of range (expected {} to {})",
                format_duration(timing.tick),
                format_duration(MIN_TICK),
                format_duration(MAX_TICK)
            ),
        );
    }
    if timing.heartbeat_interval < timing.tick {
        ctx.push(
            "meta.heartbeat_interval",
            format!(
                "{} is shorter than the tick ({})",
                format_duration(timing.heartbeat_interval),
                format_duration(timing.tick)
            ),
        );
    }
    if timing.election_timeout < timing.heartbeat_interval * 2 {
        ctx.push(
            "meta.election_timeout",
            format!(
                "{} is less than two heartbeat intervals ({} each): followers would start \
                 elections against a live leader",
                format_duration(timing.election_timeout),
                format_duration(timing.heartbeat_interval)
            ),
        );
    }
    if timing.election_timeout < timing.inter_site_rtt * ELECTION_RTTS {
        ctx.push(
            "meta.election_timeout",
            format!(
                "{} is less than {ELECTION_RTTS} inter-site round trips ({} each): an election \
                 needs a pre-vote and a vote round across sites, so none would complete",
                format_duration(timing.election_timeout),
                format_duration(timing.inter_site_rtt)
            ),
        );
    }
    settings
}
