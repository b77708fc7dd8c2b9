//! The metrics file read back with `prometheus-parse`, plus the checks it does not make.

/// A metrics file read by `prometheus-parse`, plus the checks it does not make itself: every
/// sample's family has HELP and TYPE, names are valid, no series twice.
pub struct Metrics(prometheus_parse::Scrape);

impl Metrics {
    pub fn parse(body: &str) -> Metrics {
        let mut typed = std::collections::HashSet::new();
        let mut series = std::collections::HashSet::new();
        let valid = |n: &str| {
            n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(kind, "gauge");
                assert!(typed.insert(name.to_string()), "TYPE twice for {name}");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(valid(name), "bad metric name {name:?}");
                assert!(typed.contains(name), "{name} has no TYPE line before it");
                let labels = line.rsplit_once(' ').unwrap().0;
                assert!(series.insert(labels.to_string()), "series twice: {labels}");
            }
        }
        let lines = body.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
        for name in &typed {
            assert!(scrape.docs.contains_key(name), "{name} has no HELP");
        }
        assert!(!scrape.samples.is_empty());
        Metrics(scrape)
    }

    pub fn get(&self, metric: &str, database: &str, status: Option<&str>) -> f64 {
        let found: Vec<f64> = self
            .0
            .samples
            .iter()
            .filter(|s| {
                s.metric == metric
                    && s.labels.get("database") == Some(database)
                    && s.labels.get("status") == status
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                ref other => panic!("{metric} is not a gauge: {other:?}"),
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{metric}{{database={database:?}, status={status:?}}}"
        );
        found[0]
    }

    pub fn databases(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .samples
            .iter()
            .filter_map(|s| s.labels.get("database").map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}
