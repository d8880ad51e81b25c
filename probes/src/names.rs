//! The metric vocabulary both exporters speak: each metric's Prometheus name (`/metrics`),
//! its OpenTelemetry name (OTLP) and its help text, and the label keys and values, so that
//! a dashboard built on one export reads the other the same way.

/// One metric under both of its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The Prometheus name (a counter's ends in `_total`).
    pub prometheus: &'static str,
    /// The OpenTelemetry name.
    pub otlp: &'static str,
    pub help: &'static str,
}

const fn metric(prometheus: &'static str, otlp: &'static str, help: &'static str) -> Metric {
    Metric { prometheus, otlp, help }
}

/// Histogram, seconds.
pub const END_TO_END: Metric = metric(
    "tailgate_end_to_end_latency_seconds",
    "tailgate.end_to_end.duration",
    "From an event's intended send time to its delivery to a client.",
);
/// Histogram, seconds; labels [`HOP`] and [`KIND`].
pub const HOP_LATENCY: Metric = metric(
    "tailgate_hop_latency_seconds",
    "tailgate.hop.duration",
    "Each hop of a delivered event: transit between stages, or service inside one.",
);
pub const EVENTS_SENT: Metric =
    metric("tailgate_events_sent_total", "tailgate.events.sent", "Events the load generator sent.");
pub const EVENTS_DELIVERED: Metric =
    metric("tailgate_events_delivered_total", "tailgate.events.delivered", "Distinct events delivered to a client.");
pub const EVENTS_LOST: Metric = metric(
    "tailgate_events_lost_total",
    "tailgate.events.lost",
    "Events sent and never delivered, dead-lettered or filtered (known when the run has drained).",
);
/// Gauge.
pub const EVENTS_IN_FLIGHT: Metric = metric(
    "tailgate_events_in_flight",
    "tailgate.events.in_flight",
    "Events sent and not yet delivered, dead-lettered or filtered.",
);
pub const DELIVERIES_UNREADABLE: Metric = metric(
    "tailgate_deliveries_unreadable_total",
    "tailgate.deliveries.unreadable",
    "Deliveries whose stamps could not be read.",
);
/// Counter; labels [`STAGE`] and [`OUTCOME`] (one of [`OUTCOMES`]).
pub const STAGE_EVENTS: Metric = metric(
    "tailgate_stage_events_total",
    "tailgate.stage.events",
    "Events each stage forwarded, dead-lettered, filtered or dropped as duplicates.",
);
/// Gauge; label [`STAGE`].
pub const STAGE_WAITING: Metric = metric(
    "tailgate_stage_waiting_events",
    "tailgate.stage.waiting",
    "Events passed on by the previous hop that this stage has not yet settled.",
);
/// Gauge; label [`GROUP`].
pub const CONSUMER_GROUP_LAG: Metric = metric(
    "tailgate_consumer_group_lag",
    "tailgate.consumer_group.lag",
    "Records between each stage group's committed offsets and the high watermarks, from the broker.",
);
/// Gauge.
pub const GATEWAY_CLIENTS: Metric =
    metric("tailgate_gateway_clients", "tailgate.gateway.clients", "Streaming clients connected to the gateway.");
pub const GATEWAY_DROPPED: Metric =
    metric("tailgate_gateway_dropped_total", "tailgate.gateway.dropped", "Updates dropped from slow clients' queues.");
pub const GATEWAY_DISCONNECTED: Metric = metric(
    "tailgate_gateway_disconnected_total",
    "tailgate.gateway.disconnected",
    "Clients cut off for falling a whole buffer behind.",
);
pub const GATEWAY_PAUSES: Metric = metric(
    "tailgate_gateway_pauses_total",
    "tailgate.gateway.pauses",
    "Times the gateway's consumer paused because every client's queue was full.",
);

/// Label keys.
pub const STAGE: &str = "stage";
pub const OUTCOME: &str = "outcome";
pub const HOP: &str = "hop";
pub const KIND: &str = "kind";
pub const GROUP: &str = "group";

/// The values of [`OUTCOME`].
pub const FORWARDED: &str = "forwarded";
pub const DEAD_LETTERED: &str = "dead_lettered";
pub const FILTERED: &str = "filtered";
pub const DUPLICATE: &str = "duplicate";
pub const OUTCOMES: [&str; 4] = [FORWARDED, DEAD_LETTERED, FILTERED, DUPLICATE];

/// The values of [`KIND`].
pub const SERVICE: &str = "service";
pub const TRANSIT: &str = "transit";
