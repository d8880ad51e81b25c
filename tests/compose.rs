//! The real stack's files agree with each other and with tailgate: `docker-compose.yml`,
//! the `Dockerfile`, `deploy/` (stage settings, collector, Prometheus, Grafana) and
//! `scenarios/compose.toml`. Nothing here needs a Docker engine: the files are parsed and
//! cross-checked, so a renamed service, port or metric fails here first.

#![allow(clippy::unwrap_used)]

use serde_norway::Value;
use std::collections::BTreeSet;
use std::path::Path;
use tailgate::scenario::{Scenario, SourceKind};

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

fn compose() -> Value {
    let mut c = yaml("docker-compose.yml");
    c.apply_merge().unwrap(); // `<<: *stage`
    c
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["services"].get(name).unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// Host ports a service publishes (`"HOST:CONTAINER"`), as `(host, container)`.
fn published(svc: &Value) -> Vec<(u16, u16)> {
    strings(&svc["ports"])
        .iter()
        .map(|p| {
            let (h, c) = p.split_once(':').unwrap();
            (h.parse().unwrap(), c.parse().unwrap())
        })
        .collect()
}

/// The value after `flag` in a service's command.
fn flag(svc: &Value, flag: &str) -> Option<String> {
    let cmd = strings(&svc["command"]);
    cmd.iter().position(|a| a == flag).and_then(|i| cmd.get(i + 1).cloned())
}

fn env<'a>(svc: &'a Value, key: &str) -> &'a str {
    svc["environment"][key].as_str().unwrap_or_else(|| panic!("environment {key} missing"))
}

fn port_of(url_or_addr: &str) -> u16 {
    let rest = url_or_addr.rsplit_once(':').unwrap().1;
    rest.split(['/', '?']).next().unwrap().parse().unwrap()
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    authority.rsplit_once(':').unwrap().0
}

const STAGES: [&str; 4] = ["connector", "agent", "streamjob", "gateway"];

#[test]
fn every_service_the_stack_needs_is_there_with_the_settings_it_needs() {
    let c = compose();
    for name in ["kafka", "postgres", "redis", "otel-collector", "jaeger", "prometheus", "grafana"] {
        assert!(service(&c, name)["image"].as_str().is_some(), "{name} has an image");
    }
    let kafka = service(&c, "kafka");
    assert!(kafka["image"].as_str().unwrap().starts_with("apache/kafka:"), "the official Apache Kafka image");
    assert!(env(kafka, "KAFKA_PROCESS_ROLES").contains("controller"), "KRaft: the broker is its own controller");
    let pg = service(&c, "postgres");
    assert!(strings(&pg["command"]).contains(&"wal_level=logical".to_owned()), "logical decoding for the connector");
    assert!(service(&c, "otel-collector")["image"].as_str().unwrap().contains("contrib"), "contrib has `prometheus`");

    // Each stage is a `tailgate stage NAME` service built from the Dockerfile here.
    for name in STAGES {
        let s = service(&c, name);
        assert_eq!(s["build"].as_str(), Some("."), "{name} is built from ./Dockerfile");
        let cmd = strings(&s["command"]);
        assert_eq!(&cmd[..2], ["stage", name], "{name}: {cmd:?}");
        assert!(s["stop_grace_period"].as_str().is_some(), "{name} gets time to stop cleanly on SIGTERM");
    }
    assert!(service(&c, "agent")["deploy"]["replicas"].as_u64().unwrap() >= 2, "agents scale out in one group");
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    assert!(dockerfile.contains("--bin tailgate") && dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/tailgate\"]"));
}

#[test]
fn the_stage_settings_name_the_services_of_the_compose_network() {
    let c = compose();
    // Every stage mounts the same settings file, which must be a valid scenario.
    let mut mounted = BTreeSet::new();
    for name in STAGES {
        let s = service(&c, name);
        let config = flag(s, "--config").unwrap();
        let volume = strings(&s["volumes"]).into_iter().find(|v| v.contains(&format!(":{config}"))).unwrap();
        mounted.insert(volume.split(':').next().unwrap().trim_start_matches("./").to_owned());
    }
    assert_eq!(mounted.len(), 1, "{mounted:?}");
    let file = mounted.pop_first().unwrap();
    let stages = Scenario::load(Path::new(&file)).unwrap();

    let kafka = service(&c, "kafka");
    let internal = env(kafka, "KAFKA_ADVERTISED_LISTENERS").split(',').find(|l| l.starts_with("INTERNAL://")).unwrap();
    assert_eq!(
        stages.broker.bootstrap.as_deref(),
        internal.strip_prefix("INTERNAL://"),
        "stages use the internal listener"
    );

    let pg = service(&c, "postgres");
    let url = stages.connector.postgres.as_deref().unwrap();
    assert_eq!(stages.connector.source, SourceKind::Postgres);
    assert_eq!(host_of(url), "postgres");
    let creds = format!("{}:{}@", env(pg, "POSTGRES_USER"), env(pg, "POSTGRES_PASSWORD"));
    assert!(url.contains(&creds) && url.ends_with(&format!("/{}", env(pg, "POSTGRES_DB"))), "{url}");
    assert_eq!(host_of(stages.edge_cache.url.as_deref().unwrap()), "redis");

    for name in STAGES {
        let endpoint = env(service(&c, name), "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert_eq!((host_of(endpoint), port_of(endpoint)), ("otel-collector", 4317), "{name}");
        assert!(env(service(&c, name), "OTEL_SERVICE_NAME").ends_with(name));
    }
}

#[test]
fn the_run_scenario_reaches_what_compose_publishes() {
    let c = compose();
    let run = Scenario::load(Path::new("scenarios/compose.toml")).unwrap();
    assert!(run.stages.external, "the stages are the compose services");
    let publishes = |svc: &str, port: u16| published(service(&c, svc)).iter().any(|(h, _)| *h == port);

    let bootstrap = run.broker.bootstrap.as_deref().unwrap();
    let external = env(service(&c, "kafka"), "KAFKA_ADVERTISED_LISTENERS")
        .split(',')
        .find(|l| l.starts_with("EXTERNAL://"))
        .unwrap();
    assert_eq!(port_of(bootstrap), port_of(external));
    assert!(publishes("kafka", port_of(bootstrap)));
    assert!(publishes("postgres", port_of(run.connector.postgres.as_deref().unwrap())));
    assert!(publishes("redis", port_of(run.edge_cache.url.as_deref().unwrap())));

    // The gateway's URL is the port it listens on, published.
    let gateway = run.stages.gateway.as_deref().unwrap();
    let gw = service(&c, "gateway");
    assert_eq!(port_of(&flag(gw, "--listen").unwrap()), port_of(gateway));
    assert!(publishes("gateway", port_of(gateway)));

    // Each /metrics URL is a stage's --metrics (or the gateway's server), published; the
    // connector's must be among them, for its filtered count.
    let mut seen = BTreeSet::new();
    for url in &run.stages.metrics {
        let port = port_of(url);
        let owner = STAGES
            .iter()
            .find(|s| {
                let svc = service(&c, s);
                let serves = flag(svc, "--metrics").or_else(|| flag(svc, "--listen"));
                serves.is_some_and(|a| port_of(&a) == port) && publishes(s, port)
            })
            .unwrap_or_else(|| panic!("no stage publishes /metrics on {url}"));
        seen.insert(*owner);
    }
    assert!(seen.contains("connector"), "{seen:?}");

    // The run's spans go to the collector's published OTLP port.
    let endpoint = run.telemetry.endpoint.as_deref().unwrap();
    assert!(publishes("otel-collector", port_of(endpoint)));
}

#[test]
fn the_collector_sends_traces_to_jaeger_and_metrics_to_prometheus() {
    let c = compose();
    let col = yaml("deploy/otel-collector.yaml");
    let mount = strings(&service(&c, "otel-collector")["volumes"]);
    assert!(mount.iter().any(|v| v.starts_with("./deploy/otel-collector.yaml:")), "{mount:?}");
    let grpc = col["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str().unwrap();
    assert_eq!(port_of(grpc), 4317);
    assert!(col["receivers"]["otlp"]["protocols"]["http"].is_mapping());

    let exporters = col["exporters"].as_mapping().unwrap();
    let names: Vec<&str> = exporters.keys().filter_map(Value::as_str).collect();
    let jaeger = names.iter().find(|n| n.starts_with("otlp/")).unwrap();
    let to = exporters[*jaeger]["endpoint"].as_str().unwrap();
    assert_eq!(host_of(to), "jaeger");
    assert_eq!(env(service(&c, "jaeger"), "COLLECTOR_OTLP_ENABLED"), "true");
    assert!(names.contains(&"prometheus"));
    let prom_port = port_of(exporters["prometheus"]["endpoint"].as_str().unwrap());

    let pipelines = &col["service"]["pipelines"];
    assert!(strings(&pipelines["traces"]["receivers"]).contains(&"otlp".to_owned()));
    assert_eq!(strings(&pipelines["traces"]["exporters"]), [jaeger.to_string()]);
    assert_eq!(strings(&pipelines["metrics"]["exporters"]), ["prometheus"]);
    // Every processor a pipeline names is configured.
    for p in ["traces", "metrics"] {
        for proc in strings(&pipelines[p]["processors"]) {
            assert!(col["processors"].get(proc.as_str()).is_some(), "{p} uses unconfigured processor {proc}");
        }
    }

    // Prometheus scrapes the collector's exporter, every stage and the run.
    let prom = yaml("deploy/prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in prom["scrape_configs"].as_sequence().unwrap() {
        for sc in job["static_configs"].as_sequence().into_iter().flatten() {
            targets.extend(strings(&sc["targets"]));
        }
        for dns in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
            for n in strings(&dns["names"]) {
                targets.insert(format!("{n}:{}", dns["port"].as_u64().unwrap()));
            }
        }
    }
    assert!(targets.contains(&format!("otel-collector:{prom_port}")), "{targets:?}");
    for name in STAGES {
        let svc = service(&c, name);
        let addr = flag(svc, "--metrics").or_else(|| flag(svc, "--listen")).unwrap();
        assert!(targets.contains(&format!("{name}:{}", port_of(&addr))), "{name} not scraped: {targets:?}");
    }
    let run = Scenario::load(Path::new("scenarios/compose.toml")).unwrap();
    let run_metrics = run.telemetry.metrics.as_deref().unwrap();
    assert!(targets.contains(&format!("host.docker.internal:{}", port_of(run_metrics))), "{targets:?}");
}

#[test]
fn grafana_is_provisioned_with_a_dashboard_of_metrics_tailgate_serves() {
    let c = compose();
    let graf = service(&c, "grafana");
    let volumes = strings(&graf["volumes"]);
    let source = yaml("deploy/grafana/provisioning/datasources/prometheus.yaml");
    let ds = &source["datasources"][0];
    assert_eq!(ds["type"].as_str(), Some("prometheus"));
    let url = ds["url"].as_str().unwrap();
    assert_eq!(host_of(url), "prometheus");
    assert!(publishes_inside(&c, "prometheus", port_of(url)));

    // Exemplars lead from a latency bucket to its trace in Jaeger.
    let prom = strings(&service(&c, "prometheus")["command"]);
    assert!(prom.contains(&"--enable-feature=exemplar-storage".to_owned()), "{prom:?}");
    let to = ds["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"].as_str().unwrap();
    let jaeger = source["datasources"].as_sequence().unwrap().iter().find(|d| d["uid"].as_str() == Some(to)).unwrap();
    assert_eq!((jaeger["type"].as_str(), host_of(jaeger["url"].as_str().unwrap())), (Some("jaeger"), "jaeger"));

    let provider = yaml("deploy/grafana/provisioning/dashboards/tailgate.yaml");
    let path = provider["providers"][0]["options"]["path"].as_str().unwrap();
    let host_dir = volumes.iter().find_map(|v| v.strip_suffix(&format!(":{path}:ro"))).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(host_dir.trim_start_matches("./")).join("tailgate.json")).unwrap(),
    )
    .unwrap();

    // Every metric a panel queries is one tailgate's /metrics renders.
    let stage_counters = pipeline::STAGES.iter().map(|s| ((*s).to_owned(), Default::default())).collect();
    let metrics = pipeline::metrics::Metrics::new("source", stage_counters, "client", Default::default());
    metrics.set_group_lags(&[("tailgate-agent".into(), Some(0))]);
    let page = metrics.render();
    let served: BTreeSet<&str> =
        page.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')) {
                if word.starts_with("tailgate_") {
                    assert!(served.contains(word), "panel `{}` queries `{word}`, which /metrics lacks", panel["title"]);
                    queried += 1;
                }
            }
        }
    }
    assert!(queried >= 6, "the dashboard shows tailgate's metrics");
}

/// Whether a service listens on `port` inside the network (its image's default here).
fn publishes_inside(c: &Value, svc: &str, port: u16) -> bool {
    published(service(c, svc)).iter().any(|(_, inside)| *inside == port)
}
