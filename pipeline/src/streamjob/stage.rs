//! The stream job as a stage of the shared runtime: each beat through the windows and
//! patterns ([`StreamJob::process`]), then, with enrichment, looked up asynchronously
//! ([`super::enrich`]) and produced in order once its lookup is done; without, produced at
//! once. Side records go with the event, and a new assignment first rebuilds the sessions
//! it brings from the changelog.

use super::enrich::{self, ResultOrder};
use super::{NAME, StreamJob};
use crate::event::StoryEvent;
use crate::runtime::{Ack, Carried, From, Out, SideRecord, Stage, Upstream};
use crate::{Error, Result, topics};
use rdkafka::message::{BorrowedMessage, Message};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;

/// How far ahead of the job's own clock an event's time may be: clocks differ by far less,
/// and an event further ahead would push the watermark past every open window.
pub const MAX_AHEAD: Duration = Duration::from_secs(60);

/// What the job knows about the event it is processing besides the event itself.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// The load generator's intended send time (the event time), epoch ns.
    pub intended_ns: u64,
    /// When the job received the event, epoch ns.
    pub ingress_ns: u64,
    /// Where it came from in the input topic.
    pub partition: i32,
    pub offset: i64,
}

impl StreamJob {
    /// Processes one event: its window figures into the event, its decisions (and the
    /// changelog) into `side`; or the reason it cannot be processed.
    pub fn process(&mut self, event: &mut StoryEvent, meta: &Meta, side: &mut Vec<SideRecord>) -> Result<(), String> {
        if event.beat.is_none() {
            return Err("the event has no beat: it did not come through the agent".into());
        }
        let ahead = meta.intended_ns.saturating_sub(meta.ingress_ns);
        if ahead > MAX_AHEAD.as_nanos() as u64 {
            // One such event would push the watermark past every window still open.
            return Err(format!(
                "its event time is {:.0}s ahead of this stage's clock (at most {}s is taken)",
                ahead as f64 / 1e9,
                MAX_AHEAD.as_secs()
            ));
        }
        let mut decisions = Vec::new();
        self.apply_rules(&mut decisions);
        let key = (event.run, event.session);
        if let Some(&upto) = self.restored_upto.get(&key) {
            if meta.offset <= upto {
                // Counted before the restart (its offset was not committed): pass it on only.
                self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            self.restored_upto.remove(&key);
        }
        if self.changelog {
            self.partition_of.insert(key, meta.partition);
            self.last_offset.insert(key, meta.offset);
        }
        event.window = Some(self.observe(key, event.id, &event.action, meta.intended_ns / 1_000_000, &mut decisions));
        for d in &decisions {
            side.extend(d.records());
        }
        if self.changelog {
            side.extend(self.changelog_records());
        }
        self.stats.audit_records.fetch_add(decisions.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn restore_assigned(&mut self, kafka: &crate::KafkaSettings, partitions: &[i32]) -> Result<(), String> {
        if !self.changelog {
            return Ok(());
        }
        let new: std::collections::HashMap<i32, i64> =
            partitions.iter().filter(|p| !self.owned.contains(p)).map(|p| (*p, 0)).collect();
        let records = if new.is_empty() {
            Vec::new()
        } else {
            kafka
                .read_partitions_to_end(topics::STREAMJOB_CHANGELOG, &new, Duration::from_secs(60))
                .await
                .map_err(|e| format!("cannot read the changelog: {e}"))?
        };
        let records = records
            .iter()
            .map(|r| (r.partition, r.key.as_deref().unwrap_or_default(), r.value.as_deref().unwrap_or_default()));
        self.restore(partitions, records);
        Ok(())
    }
}

impl Stage for StreamJob {
    const NAME: &'static str = NAME;

    fn topics(&self) -> Vec<String> {
        vec![topics::BEATS.into()]
    }

    async fn on_assigned(&mut self, out: &Out<'_>, partitions: &[i32]) -> Result<()> {
        self.restore_assigned(&out.ctx.kafka, partitions).await.map_err(|reason| Error::Stage { stage: NAME, reason })
    }

    async fn handle(&mut self, msg: &BorrowedMessage<'_>, out: &mut Out<'_>) -> Result<Ack> {
        let ingress_ns = probes::now_ns();
        let (incoming, mut event) = match out.decode(msg) {
            Ok(d) => d,
            Err(reason) => return out.dead_letter(msg, &reason),
        };
        let from = From { partition: msg.partition(), offset: msg.offset(), ingress_ns };
        let meta =
            Meta { intended_ns: incoming.intended_ns, ingress_ns, partition: from.partition, offset: from.offset };
        let mut side = std::mem::take(&mut self.side);
        side.clear();
        let ack = match self.process(&mut event, &meta, &mut side) {
            Err(reason) => out.dead_letter(msg, &reason),
            Ok(()) => self.emit(msg, out, event, &incoming, from, &side).await,
        };
        self.side = side;
        ack
    }
}

impl StreamJob {
    /// Produces the processed event with its side records: at once, or (enrichment whose
    /// answer is not cached) from a task of its own once the lookup is done.
    async fn emit(
        &mut self,
        msg: &BorrowedMessage<'_>,
        out: &Out<'_>,
        mut event: StoryEvent,
        incoming: &probes::Incoming<'_>,
        from: From,
        side: &[SideRecord],
    ) -> Result<Ack> {
        let emitter = out.emitter()?;
        let later = self.enricher.as_ref().filter(|e| !enrich::enriched_inline(e, &mut event, &mut self.previous));
        if let Some(enricher) = later {
            let order = match enricher.order() {
                ResultOrder::Ordered => {
                    let (done, next) = oneshot::channel();
                    Some((self.previous.replace(next), done))
                }
                ResultOrder::Unordered => None,
            };
            let admission = enricher.admit().await;
            let sides = emitter.side(side)?;
            let carried = Carried::of(msg.headers(), incoming);
            let job = enrich::Later { emitter: emitter.clone(), enricher: enricher.clone(), admission, from, order };
            return Ok(Ack::Later(job.spawn(event, carried, sides)));
        }
        let main = emitter.emit(
            &event,
            Upstream::Message(msg.headers(), incoming),
            from,
            topics::UPDATES,
            &mut self.stamps,
        )?;
        if side.is_empty() {
            return Ok(Ack::from(main));
        }
        let mut all = emitter.side(side)?;
        all.extend(main);
        Ok(Ack::All(all))
    }
}
