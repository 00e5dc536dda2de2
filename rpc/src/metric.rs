//! One idiom for every role's Prometheus metrics: constructors for the constant
//! metric definitions in the code, and registration of a set.
//!
//! A role's metrics struct builds its metrics through a [`MetricSet`] and
//! registers them with one call. Every metric a geonfs process exports is
//! defined by a literal name, help text and label set. `prometheus` refuses a
//! definition only when one of those is malformed, which is a mistake in this
//! code, never in data from outside: every test that builds a role's metrics
//! would show it. So the constructors here turn that refusal into a panic
//! naming the metric, in this one place, and the roles' metrics modules read as
//! plain lists.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Panics with the metric's name: its constant definition is malformed.
fn malformed(name: &str, err: prometheus::Error) -> ! {
    unreachable!("the constant definition of metric {name} is malformed: {err}")
}

/// A counter.
pub fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).unwrap_or_else(|err| malformed(name, err))
}

/// A counter with labels.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|err| malformed(name, err))
}

/// An integer gauge.
pub fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(Opts::new(name, help)).unwrap_or_else(|err| malformed(name, err))
}

/// An integer gauge with labels.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|err| malformed(name, err))
}

/// A floating-point gauge with labels (ages, ratios).
pub fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|err| malformed(name, err))
}

/// A histogram with the given bucket bounds (seconds, bytes, ...).
pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .unwrap_or_else(|err| malformed(name, err))
}

/// A histogram with labels and the given bucket bounds.
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|err| malformed(name, err))
}

/// The metrics of one role, made through it and remembered, so that the
/// role registers them all with one call ([`MetricSet::register`]) and its
/// metrics module is the list of definitions and nothing else. Clones share
/// the same metrics.
#[derive(Clone, Default)]
pub struct MetricSet {
    collectors: Vec<Arc<dyn Collector>>,
}

impl std::fmt::Debug for MetricSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetricSet({} metrics)", self.collectors.len())
    }
}

/// A collector of a [`MetricSet`], registrable in several registries.
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

impl MetricSet {
    fn keep<C: Collector + Clone + 'static>(&mut self, metric: C) -> C {
        self.collectors.push(Arc::new(metric.clone()));
        metric
    }

    /// A counter ([`counter`]) of the set.
    pub fn counter(&mut self, name: &str, help: &str) -> IntCounter {
        self.keep(counter(name, help))
    }

    /// A counter with labels ([`counter_vec`]) of the set.
    pub fn counter_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.keep(counter_vec(name, help, labels))
    }

    /// An integer gauge ([`gauge`]) of the set.
    pub fn gauge(&mut self, name: &str, help: &str) -> IntGauge {
        self.keep(gauge(name, help))
    }

    /// An integer gauge with labels ([`gauge_vec`]) of the set.
    pub fn gauge_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.keep(gauge_vec(name, help, labels))
    }

    /// A floating-point gauge with labels ([`float_gauge_vec`]) of the set.
    pub fn float_gauge_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.keep(float_gauge_vec(name, help, labels))
    }

    /// A histogram ([`histogram`]) of the set.
    pub fn histogram(&mut self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.keep(histogram(name, help, buckets))
    }

    /// A histogram with labels ([`histogram_vec`]) of the set.
    pub fn histogram_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        self.keep(histogram_vec(name, help, labels, buckets))
    }

    /// Registers every metric of the set in `registry`; the first refusal
    /// (a name registered twice) is returned and the rest are not
    /// registered.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        for collector in &self.collectors {
            registry.register(Box::new(Shared(collector.clone())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_registers_every_metric_made_through_it() {
        let registry = Registry::new();
        let mut set = MetricSet::default();
        let writes = set.counter("geonfs_test_writes_total", "writes");
        let backlog = set.gauge_vec("geonfs_test_backlog", "backlog", &["site"]);
        let latency = set.histogram("geonfs_test_seconds", "latency", &[0.1, 1.0]);
        set.register(&registry).unwrap();
        writes.inc();
        backlog.with_label_values(&["b"]).set(3);
        latency.observe(0.5);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "geonfs_test_backlog",
                "geonfs_test_seconds",
                "geonfs_test_writes_total"
            ]
        );
        assert!(
            set.register(&registry).is_err(),
            "a name registered twice is refused"
        );
        let other = Registry::new();
        set.clone().register(&other).unwrap();
        assert_eq!(other.gather().len(), 3, "one set, several registries");
    }

    #[test]
    #[should_panic(expected = "geonfs test bad name")]
    fn a_malformed_definition_names_the_metric() {
        counter("geonfs test bad name", "a name with spaces is malformed");
    }
}
