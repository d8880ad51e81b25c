//! The header protocol: `traceparent` (W3C trace context), `tg-intended` (the load
//! generator's intended send time) and `tg-stamps` (each stage's name, ingress and egress).
//!
//! Parsing borrows from the header bytes and allocates nothing; encoding writes into a
//! caller's reused buffer. No input makes the parser panic: foreign bytes come back as a
//! [`HeaderError`] whose text is fit for a dead-letter reason.

use std::fmt;

/// W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// Intended send time, decimal nanoseconds since the Unix epoch.
pub const INTENDED: &str = "tg-intended";
/// Per-stage stamps: `name:ingress_ns:egress_ns` joined by `,`, oldest first.
pub const STAMPS: &str = "tg-stamps";
/// On a dead-lettered message: why it was dead-lettered.
pub const DLQ_REASON: &str = "tg-dlq-reason";
/// On a dead-lettered message: the stage that dead-lettered it.
pub const DLQ_STAGE: &str = "tg-dlq-stage";

/// Longest stage name a stamp may carry.
pub const MAX_STAGE_NAME: usize = 32;

/// What is wrong with an event's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderError {
    /// The header at fault.
    pub header: &'static str,
    /// What is wrong with it.
    pub problem: Problem,
}

/// The ways a header can be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The header is absent (or has no value).
    Missing,
    /// The value is not the format the protocol defines.
    Malformed(&'static str),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            Problem::Missing => write!(f, "header `{}` is missing", self.header),
            Problem::Malformed(why) => write!(f, "header `{}` is malformed: {why}", self.header),
        }
    }
}

impl std::error::Error for HeaderError {}

const fn malformed(header: &'static str, why: &'static str) -> HeaderError {
    HeaderError { header, problem: Problem::Malformed(why) }
}

/// A W3C trace context (`traceparent`, version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// Length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

impl TraceContext {
    /// A new trace with random, valid (non-zero) ids, sampled.
    pub fn new_root() -> Self {
        Self { trace_id: nonzero_bytes(), span_id: nonzero_bytes(), flags: 0x01 }
    }

    /// A new trace whose sampled flag is set for a fraction `ratio` of trace ids (the
    /// OpenTelemetry trace-id-ratio rule on the id's last 8 bytes, so any process deciding
    /// from the same id agrees).
    pub fn root_sampled(ratio: f64) -> Self {
        let mut t = Self::new_root();
        t.flags = u8::from(Self::ratio_keeps(&t.trace_id, ratio));
        t
    }

    /// Whether the trace-id-ratio rule keeps `trace_id` at `ratio` (0 to 1).
    pub fn ratio_keeps(trace_id: &[u8; 16], ratio: f64) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        let x = u64::from_be_bytes(low) >> 1;
        ratio >= 1.0 || (ratio > 0.0 && (x as f64) < ratio * (1u64 << 63) as f64)
    }

    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// A child span in the same trace.
    pub fn child(&self) -> Self {
        Self { span_id: nonzero_bytes(), ..*self }
    }

    /// Parses a `traceparent` value. Versions above 00 are read for their 00 fields, as the
    /// W3C spec asks; version `ff` and all-zero ids are rejected.
    pub fn parse(value: &[u8]) -> Result<Self, HeaderError> {
        let bad = |why| malformed(TRACEPARENT, why);
        if value.len() < TRACEPARENT_LEN {
            return Err(bad("shorter than 55 bytes"));
        }
        let version = hex_byte(value[0], value[1]).ok_or(bad("version is not hex"))?;
        if version == 0xff {
            return Err(bad("version ff is invalid"));
        }
        if version == 0 && value.len() != TRACEPARENT_LEN {
            return Err(bad("version 00 must be exactly 55 bytes"));
        }
        if version != 0 && value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' {
            return Err(bad("trailing data without a `-`"));
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return Err(bad("fields are not separated by `-`"));
        }
        let mut trace_id = [0u8; 16];
        decode_hex(&value[3..35], &mut trace_id).ok_or(bad("trace-id is not 32 lowercase hex digits"))?;
        let mut span_id = [0u8; 8];
        decode_hex(&value[36..52], &mut span_id).ok_or(bad("parent-id is not 16 lowercase hex digits"))?;
        let flags = hex_byte(value[53], value[54]).ok_or(bad("flags are not hex"))?;
        if trace_id == [0; 16] {
            return Err(bad("trace-id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(bad("parent-id is all zeros"));
        }
        Ok(Self { trace_id, span_id, flags })
    }

    /// The version-00 header value.
    pub fn encode(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        encode_hex(&self.trace_id, &mut out[3..35]);
        encode_hex(&self.span_id, &mut out[36..52]);
        encode_hex(&[self.flags], &mut out[53..55]);
        out
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut s = [0u8; 32];
        encode_hex(&self.trace_id, &mut s);
        String::from_utf8_lossy(&s).into_owned()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.encode();
        // encode() writes ASCII only.
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

fn nonzero_bytes<const N: usize>() -> [u8; N] {
    loop {
        let b: [u8; N] = rand::random();
        if b != [0; N] {
            return b;
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

const fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some(nibble(hi)? << 4 | nibble(lo)?)
}

fn decode_hex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, o) in out.iter_mut().enumerate() {
        *o = hex_byte(hex[2 * i], hex[2 * i + 1])?;
    }
    Some(())
}

/// Parses a `tg-intended` value.
pub fn parse_intended(value: &[u8]) -> Result<u64, HeaderError> {
    parse_u64(value).ok_or(malformed(INTENDED, "not a decimal nanosecond count"))
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        if c.is_ascii_digit() { acc.checked_mul(10)?.checked_add(u64::from(c - b'0')) } else { None }
    })
}

/// Appends the decimal digits of `n` to `out`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// One stage's stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp<'a> {
    pub stage: &'a str,
    pub ingress_ns: u64,
    pub egress_ns: u64,
}

impl Stamp<'_> {
    /// Appends this stamp to an existing `tg-stamps` value, writing the result into `out`
    /// (cleared first). Stage names must be 1..=32 bytes of `[a-z0-9_-]`.
    pub fn append_to(&self, existing: &[u8], out: &mut Vec<u8>) {
        debug_assert!(valid_stage_name(self.stage), "stage name {:?}", self.stage);
        out.clear();
        out.extend_from_slice(existing);
        if !existing.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(self.stage.as_bytes());
        out.push(b':');
        push_u64(out, self.ingress_ns);
        out.push(b':');
        push_u64(out, self.egress_ns);
    }
}

/// Whether `name` may be used as a stage name in a stamp.
pub fn valid_stage_name(name: &str) -> bool {
    (1..=MAX_STAGE_NAME).contains(&name.len())
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Iterates the stamps of a `tg-stamps` value without allocating.
#[derive(Debug, Clone)]
pub struct StampIter<'a> {
    rest: Option<&'a str>,
}

impl<'a> StampIter<'a> {
    /// Starts iterating; fails only if the value is not UTF-8. An empty value has no stamps.
    pub fn new(value: &'a [u8]) -> Result<Self, HeaderError> {
        let s = std::str::from_utf8(value).map_err(|_| malformed(STAMPS, "not UTF-8"))?;
        Ok(Self { rest: (!s.is_empty()).then_some(s) })
    }

    /// Checks every stamp, returning how many there are.
    pub fn validate(value: &'a [u8]) -> Result<usize, HeaderError> {
        Self::new(value)?.try_fold(0, |n, s| s.map(|_| n + 1))
    }
}

impl<'a> Iterator for StampIter<'a> {
    type Item = Result<Stamp<'a>, HeaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let (item, tail) = match rest.split_once(',') {
            Some((item, tail)) => (item, Some(tail)),
            None => (rest, None),
        };
        self.rest = tail;
        Some(parse_stamp(item).inspect_err(|_| self.rest = None))
    }
}

fn parse_stamp(item: &str) -> Result<Stamp<'_>, HeaderError> {
    let mut parts = item.splitn(3, ':');
    let stage = parts.next().unwrap_or_default();
    if !valid_stage_name(stage) {
        return Err(malformed(STAMPS, "stage name is not 1-32 of [a-z0-9_-]"));
    }
    let num = |p: Option<&str>| p.and_then(|p| parse_u64(p.as_bytes()));
    let ingress_ns = num(parts.next()).ok_or(malformed(STAMPS, "ingress is not a decimal ns count"))?;
    let egress_ns = num(parts.next()).ok_or(malformed(STAMPS, "egress is not a decimal ns count"))?;
    if egress_ns < ingress_ns {
        return Err(malformed(STAMPS, "egress before ingress"));
    }
    Ok(Stamp { stage, ingress_ns, egress_ns })
}

/// The tailgate headers of an incoming event, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming<'a> {
    pub trace: TraceContext,
    pub intended_ns: u64,
    /// The raw `tg-stamps` value (checked); empty when no stage has stamped yet.
    pub stamps: &'a [u8],
}

impl<'a> Incoming<'a> {
    /// Reads the protocol headers from `(name, value)` pairs, ignoring any others. A missing
    /// `tg-stamps` is an event no stage has seen yet; the other two are required.
    pub fn from_headers<I>(headers: I) -> Result<Self, HeaderError>
    where
        I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    {
        let (mut trace, mut intended, mut stamps) = (None, None, None);
        for (name, value) in headers {
            match name {
                TRACEPARENT => trace = value,
                INTENDED => intended = value,
                STAMPS => stamps = value,
                _ => {}
            }
        }
        let missing = |header| HeaderError { header, problem: Problem::Missing };
        let trace = TraceContext::parse(trace.ok_or(missing(TRACEPARENT))?)?;
        let intended_ns = parse_intended(intended.ok_or(missing(INTENDED))?)?;
        let stamps = stamps.unwrap_or_default();
        StampIter::validate(stamps)?;
        Ok(Self { trace, intended_ns, stamps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn traceparent_round_trips_and_children_keep_the_trace() {
        let root = TraceContext::new_root();
        let parsed = TraceContext::parse(&root.encode()).unwrap();
        assert_eq!(parsed, root);
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }

    #[test]
    fn parses_the_spec_example() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::parse(v).unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.flags, 1);
        assert_eq!(&t.encode(), v);
    }

    #[test]
    fn ratio_sampling_keeps_about_the_ratio_and_the_extremes_exactly() {
        let kept = (0..20_000).filter(|_| TraceContext::root_sampled(0.25).is_sampled()).count();
        assert!((4_000..6_000).contains(&kept), "{kept} of 20000 at 0.25");
        assert!((0..100).all(|_| TraceContext::root_sampled(1.0).is_sampled()));
        assert!((0..100).all(|_| !TraceContext::root_sampled(0.0).is_sampled()));
        let t = TraceContext::root_sampled(0.5);
        assert_eq!(t.child().is_sampled(), t.is_sampled(), "children keep the decision");
    }

    #[test]
    fn rejects_what_the_spec_rejects() {
        for (v, why) in [
            (&b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..], "trace-id is all zeros"),
            (b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent-id is all zeros"),
            (b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff is invalid"),
            (b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "trace-id is not 32 lowercase hex digits"),
            (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", "version 00 must be exactly 55 bytes"),
            (b"00-4bf9", "shorter than 55 bytes"),
        ] {
            assert_eq!(TraceContext::parse(v), Err(malformed(TRACEPARENT, why)), "{}", String::from_utf8_lossy(v));
        }
        // A later version with extra fields is read for its 00 fields.
        assert!(TraceContext::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_ok());
    }

    #[test]
    fn stamps_append_in_order() {
        let mut a = Vec::new();
        Stamp { stage: "connector", ingress_ns: 1, egress_ns: 2 }.append_to(b"", &mut a);
        let mut b = Vec::new();
        Stamp { stage: "agent", ingress_ns: 3, egress_ns: 40 }.append_to(&a, &mut b);
        assert_eq!(b, b"connector:1:2,agent:3:40");
        let stages: Vec<_> = StampIter::new(&b).unwrap().map(|s| s.unwrap().stage).collect();
        assert_eq!(stages, ["connector", "agent"]);
    }

    #[test]
    fn missing_headers_are_named() {
        let err = Incoming::from_headers([("other", Some(&b"x"[..]))]).unwrap_err();
        assert_eq!(err.to_string(), "header `traceparent` is missing");
        let tp = TraceContext::new_root().encode();
        let err = Incoming::from_headers([(TRACEPARENT, Some(&tp[..]))]).unwrap_err();
        assert_eq!(err.to_string(), "header `tg-intended` is missing");
        let err = Incoming::from_headers([(TRACEPARENT, Some(&tp[..])), (INTENDED, Some(&b"12x"[..]))]).unwrap_err();
        assert_eq!(err.to_string(), "header `tg-intended` is malformed: not a decimal nanosecond count");
    }

    fn stage_name() -> impl Strategy<Value = String> {
        "[a-z0-9_-]{1,32}"
    }

    proptest! {
        #[test]
        fn stamps_round_trip(stamps in proptest::collection::vec((stage_name(), any::<u64>(), any::<u64>()), 0..8)) {
            let mut value = Vec::new();
            let mut next = Vec::new();
            for (stage, a, b) in &stamps {
                let (ingress_ns, egress_ns) = ((*a).min(*b), (*a).max(*b));
                Stamp { stage, ingress_ns, egress_ns }.append_to(&value, &mut next);
                std::mem::swap(&mut value, &mut next);
            }
            let parsed: Vec<_> = StampIter::new(&value).unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(parsed.len(), stamps.len());
            for (p, (stage, a, b)) in parsed.iter().zip(&stamps) {
                prop_assert_eq!(p.stage, stage.as_str());
                prop_assert_eq!(p.ingress_ns, (*a).min(*b));
                prop_assert_eq!(p.egress_ns, (*a).max(*b));
            }
        }

        #[test]
        fn traceparent_round_trips(trace_id in any::<[u8; 16]>(), span_id in any::<[u8; 8]>(), flags in any::<u8>()) {
            prop_assume!(trace_id != [0; 16] && span_id != [0; 8]);
            let t = TraceContext { trace_id, span_id, flags };
            prop_assert_eq!(TraceContext::parse(&t.encode()), Ok(t));
        }

        #[test]
        fn intended_round_trips(n in any::<u64>()) {
            let mut v = Vec::new();
            push_u64(&mut v, n);
            prop_assert_eq!(parse_intended(&v), Ok(n));
        }

        #[test]
        fn parsers_never_panic_on_foreign_bytes(
            tp in proptest::collection::vec(any::<u8>(), 0..80),
            intended in proptest::collection::vec(any::<u8>(), 0..30),
            stamps in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = TraceContext::parse(&tp);
            let _ = parse_intended(&intended);
            if let Ok(it) = StampIter::new(&stamps) {
                for s in it { let _ = s; }
            }
            let _ = Incoming::from_headers([
                (TRACEPARENT, Some(&tp[..])), (INTENDED, Some(&intended[..])), (STAMPS, Some(&stamps[..])),
            ]);
        }

        #[test]
        fn near_miss_stamps_never_panic(s in "[a-z0-9:,_-]{0,80}") {
            if let Ok(it) = StampIter::new(s.as_bytes()) {
                for r in it { let _ = r; }
            }
        }
    }
}
