//! The audience: subscribes to the gateway's Server-Sent Events stream, timestamps each
//! update as its bytes arrive, and tallies every event exactly once (duplicates are counted,
//! never double-timed).

use crate::{Error, Result};
use http_body_util::BodyExt;
use probes::{Delivery, HopSet};
use serde::de::IgnoredAny;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

/// What the audience has seen.
#[derive(Debug)]
pub struct Tally {
    /// End-to-end and per-hop recorders (events after warm-up only).
    pub hops: HopSet,
    run: u64,
    measure_from_ns: u64,
    seen: Vec<u64>,
    /// Distinct events of this run received.
    pub delivered: u64,
    /// Of those, intended during warm-up.
    pub warmup_delivered: u64,
    /// Repeat deliveries of an event already received.
    pub duplicates: u64,
    /// Deliveries that arrived before an earlier event of their session (ids grow with
    /// intended time within a session, so a lower id after a higher one is out of order).
    pub reordered: u64,
    last_in_session: std::collections::HashMap<u64, u64>,
    /// Updates from another run (left over on shared topics).
    pub foreign: u64,
    /// Updates of this run with an id it never sent (not counted as delivered).
    pub unexpected: u64,
    /// The run's live count of events sent: ids far beyond it are refused at once, so no
    /// id makes the tally grow without bound.
    sent: Option<Arc<AtomicU64>>,
    /// Times the stream ended before the run did and the audience subscribed again.
    pub reconnects: u64,
    /// Distinct events read from the gateway's backlog after a gap (a reconnect, or
    /// updates the gateway dropped for this subscriber).
    pub caught_up: u64,
    /// Updates that had left the gateway's backlog before a catch-up could read them: the
    /// audience's gap, not the pipeline's loss.
    pub missed: u64,
    /// Ids read from the backlog that the stream may still bring (not repeats of the
    /// gateway's); at most a backlog's worth.
    caught: std::collections::HashSet<u64>,
    /// Updates that could not be read; the first reason is kept.
    pub unreadable: u64,
    pub first_unreadable: Option<String>,
    /// End-to-end latency of warm-up events, when set (kept apart from the statistics).
    pub warmup: Option<probes::LatencyRecorder>,
    /// End-to-end latency of the events intended in each of these windows (a fault's, say),
    /// warm-up or not.
    pub windows: Vec<IntendedWindow>,
    delivered_live: Arc<AtomicU64>,
    observer: ObserverSlot,
    /// Only ids `residue + k * stride` are this tally's (one worker's share of a run whose
    /// workers send from disjoint id spaces); others are counted in `others` and passed over.
    share: Option<(u64, u64)>,
    /// Updates of this run outside the tally's share.
    pub others: u64,
    /// Where each distinct delivery is reported for tracing (the receive span, or the whole
    /// trace of an unsampled event that broke the SLA).
    pub spans: probes::spans::Spans,
}

struct ObserverSlot(Option<Observer>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(observer)" } else { "None" })
    }
}

/// Called with (intended ns, stamps, received ns, traceparent) for every distinct delivery.
pub type Observer = Box<dyn FnMut(u64, &str, u64, &str) + Send>;

impl Tally {
    /// A tally for `run`, measuring events intended at or after `measure_from_ns`.
    pub fn new(run: u64, measure_from_ns: u64, hops: HopSet) -> Self {
        Self {
            hops,
            run,
            measure_from_ns,
            seen: Vec::new(),
            delivered: 0,
            warmup_delivered: 0,
            duplicates: 0,
            reordered: 0,
            last_in_session: std::collections::HashMap::new(),
            foreign: 0,
            unexpected: 0,
            sent: None,
            reconnects: 0,
            caught_up: 0,
            missed: 0,
            caught: std::collections::HashSet::new(),
            unreadable: 0,
            first_unreadable: None,
            warmup: None,
            windows: Vec::new(),
            delivered_live: Arc::default(),
            observer: ObserverSlot(None),
            share: None,
            others: 0,
            spans: None,
        }
    }

    /// Takes only the ids `residue + k * stride`, as `k`: the events one of `stride`
    /// workers sent, its ids interleaved with the others'.
    pub fn share(&mut self, stride: u64, residue: u64) {
        self.share = (stride > 1).then_some((stride, residue % stride));
    }

    /// How far beyond the live count of events sent an id may be and still be kept until
    /// [`Self::settle`] (the delivery can overtake the count by a moment).
    pub const AHEAD: u64 = 1 << 16;

    /// Takes ids only up to [`Self::AHEAD`] beyond `sent` (the run's live count of events
    /// sent); ids further ahead are counted as unexpected at once.
    pub fn bound_by(&mut self, sent: Arc<AtomicU64>) {
        self.sent = Some(sent);
    }

    /// Once the load is over and `sent` events were sent: deliveries of ids at or beyond it
    /// were never sent, so they are moved from `delivered` to `unexpected`.
    pub fn settle(&mut self, sent: u64) {
        let beyond: u64 = self
            .seen
            .iter()
            .enumerate()
            .map(|(word, bits)| {
                let first = word as u64 * 64;
                let mask = if first >= sent {
                    u64::MAX
                } else if sent - first >= 64 {
                    0
                } else {
                    u64::MAX << (sent - first)
                };
                u64::from((bits & mask).count_ones())
            })
            .sum();
        self.delivered -= beyond;
        self.unexpected += beyond;
    }

    /// Also hands every distinct delivery (warm-up included) to `observer`, e.g. a live view.
    pub fn observe_with(&mut self, observer: Observer) {
        self.observer = ObserverSlot(Some(observer));
    }

    /// A live count of distinct deliveries, readable while the audience runs.
    pub fn delivered_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.delivered_live)
    }

    /// Whether event `id` has been delivered.
    pub fn has(&self, id: u64) -> bool {
        self.seen.get((id / 64) as usize).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Takes one SSE `data` payload received at `received_ns`.
    pub fn observe(&mut self, data: &str, received_ns: u64) {
        self.take(data, received_ns, true);
    }

    /// Takes one update read from the gateway's backlog after a gap: one already received
    /// is passed over (it is not a repeat delivery), a new one is timed as it arrives now.
    pub fn catch_up(&mut self, data: &str, received_ns: u64) {
        if self.caught.len() >= Self::AHEAD as usize {
            self.caught.clear(); // ids from catch-ups long past: the stream brought them already
        }
        if self.take(data, received_ns, false) {
            self.caught_up += 1;
        }
    }

    /// Takes one update; whether it was a distinct delivery of this run.
    fn take(&mut self, data: &str, received_ns: u64, repeats_count: bool) -> bool {
        let d: Delivery<'_, IgnoredAny> = match serde_json::from_str(data) {
            Ok(d) => d,
            Err(e) => {
                self.unreadable(format!("not a delivery: {e}"));
                return false;
            }
        };
        if d.run != self.run {
            self.foreign += u64::from(repeats_count);
            return false;
        }
        let id = match self.share {
            Some((stride, residue)) if d.id % stride != residue => {
                self.others += u64::from(repeats_count);
                return false;
            }
            Some((stride, _)) => d.id / stride,
            None => d.id,
        };
        if let Some(sent) = &self.sent
            && id >= sent.load(Ordering::Relaxed).saturating_add(Self::AHEAD)
        {
            self.unexpected += 1;
            return false;
        }
        let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1024, 0);
        }
        if self.seen[word] & bit != 0 {
            // What a catch-up read first is not repeated by the gateway when the stream brings it.
            let ours = self.caught.remove(&id);
            self.duplicates += u64::from(repeats_count && !ours);
            return false;
        }
        if !repeats_count {
            self.caught.insert(id);
        }
        self.seen[word] |= bit;
        let last = self.last_in_session.entry(d.session).or_insert(id);
        if id < *last {
            self.reordered += 1;
        }
        *last = (*last).max(id);
        self.delivered += 1;
        self.delivered_live.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = &mut self.observer.0 {
            o(d.intended_ns, &d.stamps, received_ns, &d.traceparent);
        }
        if let Some(sink) = &self.spans
            && let Ok(trace) = probes::TraceContext::parse(d.traceparent.as_bytes())
        {
            sink.delivered(&trace, d.id, d.intended_ns, &d.stamps, received_ns);
        }
        let latency_ns = received_ns.saturating_sub(d.intended_ns);
        for w in self.windows.iter_mut().filter(|w| (w.from_ns..w.until_ns).contains(&d.intended_ns)) {
            w.histogram.saturating_record(latency_ns / 1_000);
        }
        if d.intended_ns < self.measure_from_ns {
            self.warmup_delivered += 1;
            if let Some(w) = &mut self.warmup {
                w.record(received_ns.saturating_sub(d.intended_ns), received_ns);
            }
        } else if let Err(e) = self.hops.record(d.intended_ns, d.stamps.as_bytes(), received_ns) {
            self.unreadable(format!("event {}: {e}", d.id));
        }
        true
    }

    fn unreadable(&mut self, why: String) {
        self.unreadable += 1;
        self.first_unreadable.get_or_insert(why);
    }
}

/// The events intended from `from_ns` until `until_ns` (epoch ns), and their end-to-end
/// latency in microseconds.
#[derive(Debug, Clone)]
pub struct IntendedWindow {
    pub from_ns: u64,
    pub until_ns: u64,
    pub histogram: hdrhistogram::Histogram<u64>,
}

impl IntendedWindow {
    pub fn new(from_ns: u64, until_ns: u64) -> Self {
        Self { from_ns, until_ns, histogram: probes::recorder::new_histogram() }
    }
}

/// A subscription to the gateway's firehose.
#[derive(Debug)]
pub struct Audience {
    pub url: String,
    pub tally: Tally,
    /// Sent as `Authorization: Bearer TOKEN` when the gateway requires one.
    pub token: Option<String>,
}

impl Audience {
    /// Connects (answering once the gateway accepted the subscription), then listens on a
    /// task until `cancel`, returning the tally. `url` is `http://host:port/path`. When the
    /// stream ends before `cancel` (the gateway restarted, say), or the gateway says it
    /// dropped updates this subscriber was too slow for, the audience subscribes again and
    /// reads what it missed from the gateway's long-poll backlog (`/poll`), so a gap of its
    /// own is not taken for a loss of the pipeline's.
    pub async fn start(self, cancel: CancellationToken) -> Result<tokio::task::JoinHandle<Result<Tally>>> {
        let Self { url, mut tally, token } = self;
        let fail = |reason: String| Error::Subscribe { url: url.clone(), reason };
        let rest = url.strip_prefix("http://").ok_or_else(|| fail("only http:// URLs are supported".into()))?;
        let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
        let gateway = Gateway { url: url.clone(), authority: authority.to_owned(), token };
        let mut body = gateway.get(&path, "text/event-stream").await?.into_body();
        Ok(tokio::spawn(async move {
            let mut buf = Vec::<u8>::with_capacity(64 * 1024);
            loop {
                let frame = tokio::select! {
                    () = cancel.cancelled() => break,
                    frame = body.frame() => frame,
                };
                let received_ns = probes::now_ns();
                let ended = match frame {
                    None => Some("the stream ended".to_owned()),
                    Some(Err(e)) => Some(e.to_string()),
                    Some(Ok(frame)) => {
                        if let Ok(bytes) = frame.into_data() {
                            buf.extend_from_slice(&bytes);
                        }
                        None
                    }
                };
                let mut lagged = false;
                let consumed = for_each_event(
                    &buf,
                    |data| tally.observe(data, received_ns),
                    |c| lagged |= c.starts_with("lagged"),
                );
                buf.drain(..consumed);
                if let Some(why) = ended {
                    buf.clear();
                    // Said once subscribed again: a stream that ends as the run stops the
                    // gateway is no news.
                    let Some(again) = gateway.resubscribe(&path, &cancel).await else { break };
                    eprintln!("audience: {why} ({url}); subscribed again, reading what was missed from the backlog");
                    body = again.into_body();
                    tally.reconnects += 1;
                    lagged = true;
                }
                if lagged {
                    gateway.catch_up(&mut tally).await?;
                }
            }
            Ok(tally)
        }))
    }
}

/// Where the audience listens, and how it asks.
#[derive(Debug, Clone)]
struct Gateway {
    url: String,
    authority: String,
    token: Option<String>,
}

impl Gateway {
    /// `GET path` on a connection of its own; the response once its status is a success.
    async fn get(&self, path: &str, accept: &str) -> Result<hyper::Response<hyper::body::Incoming>> {
        let fail = |reason: String| Error::Subscribe { url: self.url.clone(), reason };
        let stream = tokio::net::TcpStream::connect(&self.authority).await.map_err(|e| fail(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let mut request = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::ACCEPT, accept);
        if let Some(t) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request =
            request.body(http_body_util::Empty::<hyper::body::Bytes>::new()).map_err(|e| fail(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(Error::Status { url: self.url.clone(), status: response.status().as_u16() });
        }
        Ok(response)
    }

    /// Subscribes again, trying every 200 ms until it works; `None` once `cancel`.
    async fn resubscribe(
        &self,
        path: &str,
        cancel: &CancellationToken,
    ) -> Option<hyper::Response<hyper::body::Incoming>> {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
            if let Ok(r) = self.get(path, "text/event-stream").await {
                return Some(r);
            }
        }
    }

    /// Reads the whole long-poll backlog into `tally` (updates it has are passed over);
    /// what had left the backlog is counted in `tally.missed`.
    async fn catch_up(&self, tally: &mut Tally) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Page {
            cursor: u64,
            missed: u64,
            updates: Vec<Box<serde_json::value::RawValue>>,
        }
        let mut cursor = 0;
        let mut first = true;
        loop {
            let path = format!("/poll?cursor={cursor}&wait=0&max=1000");
            let body = self.get(&path, "application/json").await?.into_body();
            let bytes =
                body.collect().await.map_err(|e| Error::Stream { url: self.url.clone(), reason: e.to_string() })?;
            let page: Page = serde_json::from_slice(&bytes.to_bytes())
                .map_err(|e| Error::Stream { url: self.url.clone(), reason: format!("a backlog page: {e}") })?;
            if first {
                tally.missed += page.missed;
                first = false;
            }
            let received_ns = probes::now_ns();
            for u in &page.updates {
                tally.catch_up(u.get(), received_ns);
            }
            if page.updates.is_empty() || page.cursor == cursor {
                return Ok(());
            }
            cursor = page.cursor;
        }
    }
}

/// Calls `f` with the `data` of every complete event in `buf`, and `comment` with the text
/// of every comment line, and returns how many bytes were consumed. Events are separated
/// by a blank line; multi-line data is joined by `\n`.
pub fn for_each_event(buf: &[u8], mut f: impl FnMut(&str), mut comment: impl FnMut(&str)) -> usize {
    let mut consumed = 0;
    let mut data = String::new();
    while let Some(end) = find_blank_line(&buf[consumed..]) {
        let block = &buf[consumed..consumed + end];
        consumed += end + 2;
        data.clear();
        for line in block.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(c) = line.strip_prefix(b":") {
                comment(String::from_utf8_lossy(c.strip_prefix(b" ").unwrap_or(c)).trim());
            }
            if let Some(v) = line.strip_prefix(b"data:") {
                let v = v.strip_prefix(b" ").unwrap_or(v);
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(&String::from_utf8_lossy(v));
            }
        }
        if !data.is_empty() {
            f(&data);
        }
    }
    consumed
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tally() -> Tally {
        let hops = HopSet::new("source", &["a"], "client", 0, Duration::from_secs(1));
        Tally::new(7, 100, hops)
    }

    fn delivery(run: u64, id: u64, intended: u64) -> String {
        format!(
            r#"{{"run":{run},"id":{id},"session":1,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","intended_ns":{intended},"stamps":"a:200:300","update":{{"text":"x"}}}}"#
        )
    }

    #[test]
    fn ids_the_run_never_sent_are_neither_delivered_nor_a_reason_to_grow() {
        let mut t = tally();
        let sent = Arc::new(AtomicU64::new(100));
        t.bound_by(Arc::clone(&sent));
        t.observe(&delivery(7, 1 << 40, 5), 10);
        assert_eq!((t.delivered, t.unexpected), (0, 1));
        assert!(t.seen.len() < 4096, "no room made for a huge id: {} words", t.seen.len());
        for id in [5, 99, 150] {
            t.observe(&delivery(7, id, 5), 10);
        }
        assert_eq!(t.delivered, 3, "150 is within reach of the live count");
        t.settle(100);
        assert_eq!((t.delivered, t.unexpected), (2, 2), "only ids below the final count were sent");
        assert!(t.has(99) && !t.has(100));
    }

    #[test]
    fn a_share_takes_one_workers_interleaved_ids_and_passes_over_the_rest() {
        let mut t = tally();
        t.share(3, 1);
        for id in [1, 2, 4, 7, 9, 4] {
            t.observe(&delivery(7, id, 150), 1_000);
        }
        // 1, 4 and 7 are the second worker's first, second and third events; 4 came twice.
        assert_eq!((t.delivered, t.others, t.duplicates), (3, 2, 1));
        assert!(t.has(0) && t.has(1) && t.has(2) && !t.has(3));
        t.settle(3);
        assert_eq!(t.delivered, 3, "all three are within the worker's 3 sent");
    }

    #[test]
    fn sse_frames_split_on_blank_lines_and_keep_partial_tails() {
        let buf = b"event: update\ndata: one\n\n: keepalive\n\ndata: two\ndata: lines\n\ndata: part";
        let mut got = Vec::new();
        let n = for_each_event(buf, |d| got.push(d.to_owned()), |_| {});
        assert_eq!(got, ["one", "two\nlines"]);
        assert_eq!(&buf[n..], b"data: part");
    }

    #[test]
    fn counts_each_event_once_and_keeps_warmup_out_of_the_statistics() {
        let mut t = tally();
        t.observe(&delivery(7, 0, 50), 1_000); // warm-up
        t.observe(&delivery(7, 1, 150), 1_000);
        t.observe(&delivery(7, 1, 150), 2_000); // duplicate
        t.observe(&delivery(8, 2, 150), 1_000); // another run's
        t.observe("{not json", 1_000);
        assert_eq!((t.delivered, t.warmup_delivered, t.duplicates, t.foreign, t.unreadable), (2, 1, 1, 1, 1));
        assert!(t.has(0) && t.has(1) && !t.has(2));
        assert_eq!(t.hops.end_to_end.summary().count, 1);
        assert_eq!(t.delivered_counter().load(Ordering::Relaxed), 2);
    }
}
