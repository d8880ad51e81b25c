//! Single Message Transforms (Kafka Connect's SMTs): a chain of small steps the connector
//! applies to each record between the source and Kafka, configured in the scenario as
//! `[[connector.transforms]]` tables, in order.
//!
//! | `type` | does |
//! | --- | --- |
//! | `filter` | drops the records whose `field` equals / contains / starts with a value (`negate` flips it) |
//! | `route` | sends the record to `topic` with `{}` replaced by the value of `field` |
//! | `mask` | replaces the values of `fields` (strings by `replacement`, numbers by 0) |
//! | `drop` | removes `fields` from the value |
//! | `insert_header` | adds the header `name` = `value` |
//! | `set_key` | makes the value of `field` the record's key |
//!
//! Each is a type implementing [`Transform`]; [`TransformSpec`] is the configuration, which
//! refuses unknown types and fields when the scenario is read.

use serde::Deserialize;
use serde_json::{Map, Value};

/// A record between the source and Kafka: its topic, key, value (a JSON object) and headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Map<String, Value>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One step of the chain: the record changed, `None` to drop it, or why it cannot be
/// transformed (the record is then dead-lettered with that reason).
pub trait Transform: Send + Sync + std::fmt::Debug {
    fn apply(&self, record: Record) -> Result<Option<Record>, String>;
}

/// Fields of a story event that the stages after the connector need.
pub const REQUIRED_FIELDS: [&str; 4] = ["run", "id", "session", "action"];

/// A transform as written in a scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformSpec {
    Filter {
        field: String,
        equals: Option<Value>,
        contains: Option<String>,
        prefix: Option<String>,
        #[serde(default)]
        negate: bool,
    },
    Route {
        field: String,
        topic: String,
    },
    Mask {
        fields: Vec<String>,
        #[serde(default = "default_replacement")]
        replacement: String,
    },
    Drop {
        fields: Vec<String>,
    },
    InsertHeader {
        name: String,
        value: String,
    },
    SetKey {
        field: String,
    },
}

fn default_replacement() -> String {
    "****".into()
}

impl TransformSpec {
    /// The type name as written.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Filter { .. } => "filter",
            Self::Route { .. } => "route",
            Self::Mask { .. } => "mask",
            Self::Drop { .. } => "drop",
            Self::InsertHeader { .. } => "insert_header",
            Self::SetKey { .. } => "set_key",
        }
    }

    /// Problems a scenario should be refused for (empty when it is fine).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Self::Filter { equals, contains, prefix, .. } => {
                let n = usize::from(equals.is_some()) + usize::from(contains.is_some()) + usize::from(prefix.is_some());
                if n != 1 {
                    out.push("a filter needs exactly one of `equals`, `contains` or `prefix`".into());
                }
            }
            Self::Route { topic, .. } if !topic.contains("{}") => {
                out.push(format!("route topic `{topic}` has no `{{}}` for the field's value"));
            }
            Self::Drop { fields } => {
                for f in fields.iter().filter(|f| REQUIRED_FIELDS.contains(&f.as_str())) {
                    out.push(format!("cannot drop `{f}`: the stages after the connector need it (mask it instead)"));
                }
            }
            Self::Mask { fields, .. } => {
                for f in fields.iter().filter(|f| ["run", "id", "session"].contains(&f.as_str())) {
                    out.push(format!("cannot mask `{f}`: events are identified by it"));
                }
            }
            _ => {}
        }
        out
    }

    /// The transform this spec describes.
    pub fn build(&self) -> Box<dyn Transform> {
        match self.clone() {
            Self::Filter { field, equals, contains, prefix, negate } => {
                let test = match (equals, contains, prefix) {
                    (Some(v), _, _) => Test::Equals(v),
                    (_, Some(s), _) => Test::Contains(s),
                    (_, _, Some(s)) => Test::Prefix(s),
                    _ => Test::Never,
                };
                Box::new(Filter { field, test, negate })
            }
            Self::Route { field, topic } => Box::new(Route { field, topic }),
            Self::Mask { fields, replacement } => Box::new(Mask { fields, replacement }),
            Self::Drop { fields } => Box::new(DropFields { fields }),
            Self::InsertHeader { name, value } => Box::new(InsertHeader { name, value }),
            Self::SetKey { field } => Box::new(SetKey { field }),
        }
    }
}

/// A chain of transforms, applied in order.
#[derive(Debug, Default)]
pub struct Chain(Vec<Box<dyn Transform>>);

impl Chain {
    pub fn new(specs: &[TransformSpec]) -> Self {
        Self(specs.iter().map(TransformSpec::build).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Applies every step; stops at the first that drops or refuses the record.
    pub fn apply(&self, mut record: Record) -> Result<Option<Record>, String> {
        for t in &self.0 {
            match t.apply(record)? {
                Some(r) => record = r,
                None => return Ok(None),
            }
        }
        Ok(Some(record))
    }
}

fn field<'r>(record: &'r Record, name: &str) -> Result<&'r Value, String> {
    record.value.get(name).ok_or_else(|| format!("the record has no field `{name}`"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug)]
enum Test {
    Equals(Value),
    Contains(String),
    Prefix(String),
    Never,
}

/// Drops matching records.
#[derive(Debug)]
struct Filter {
    field: String,
    test: Test,
    negate: bool,
}

impl Transform for Filter {
    fn apply(&self, record: Record) -> Result<Option<Record>, String> {
        let matched = match (record.value.get(&self.field), &self.test) {
            (None, _) | (_, Test::Never) => false,
            (Some(v), Test::Equals(want)) => v == want || text(v) == text(want),
            (Some(v), Test::Contains(s)) => text(v).contains(s.as_str()),
            (Some(v), Test::Prefix(s)) => text(v).starts_with(s.as_str()),
        };
        Ok(if matched != self.negate { None } else { Some(record) })
    }
}

/// Topic from a field.
#[derive(Debug)]
struct Route {
    field: String,
    topic: String,
}

impl Transform for Route {
    fn apply(&self, mut record: Record) -> Result<Option<Record>, String> {
        let v = text(field(&record, &self.field)?);
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(format!("route: `{v}` (field `{}`) cannot be part of a topic name", self.field));
        }
        record.topic = self.topic.replace("{}", &v);
        Ok(Some(record))
    }
}

#[derive(Debug)]
struct Mask {
    fields: Vec<String>,
    replacement: String,
}

impl Transform for Mask {
    fn apply(&self, mut record: Record) -> Result<Option<Record>, String> {
        for f in &self.fields {
            if let Some(v) = record.value.get_mut(f) {
                *v = match v {
                    Value::Number(_) => Value::from(0),
                    Value::Bool(_) => Value::Bool(false),
                    Value::Null => Value::Null,
                    _ => Value::String(self.replacement.clone()),
                };
            }
        }
        Ok(Some(record))
    }
}

#[derive(Debug)]
struct DropFields {
    fields: Vec<String>,
}

impl Transform for DropFields {
    fn apply(&self, mut record: Record) -> Result<Option<Record>, String> {
        for f in &self.fields {
            record.value.remove(f);
        }
        Ok(Some(record))
    }
}

#[derive(Debug)]
struct InsertHeader {
    name: String,
    value: String,
}

impl Transform for InsertHeader {
    fn apply(&self, mut record: Record) -> Result<Option<Record>, String> {
        record.headers.push((self.name.clone(), self.value.clone().into_bytes()));
        Ok(Some(record))
    }
}

/// The key from a field: an unsigned integer as 8 big-endian bytes (the session key's
/// form), anything else as its UTF-8 text.
#[derive(Debug)]
struct SetKey {
    field: String,
}

impl Transform for SetKey {
    fn apply(&self, mut record: Record) -> Result<Option<Record>, String> {
        let v = field(&record, &self.field)?;
        record.key = match v.as_u64() {
            Some(n) => n.to_be_bytes().to_vec(),
            None => text(v).into_bytes(),
        };
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> Record {
        let value = json!({"run": 1, "id": 9, "session": 3, "action": "open the door", "player": "ann@example.com", "region": "eu"});
        let Value::Object(value) = value else { unreachable!() };
        Record { topic: "story.actions".into(), key: 3u64.to_be_bytes().to_vec(), value, headers: vec![] }
    }

    fn spec(toml_text: &str) -> TransformSpec {
        toml::from_str(toml_text).unwrap()
    }

    fn one(toml_text: &str, r: Record) -> Result<Option<Record>, String> {
        Chain::new(&[spec(toml_text)]).apply(r)
    }

    #[test]
    fn filter_drops_what_matches_and_negate_keeps_only_that() {
        assert_eq!(
            one(
                r#"type = "filter"
field = "action"
contains = "door""#,
                record()
            ),
            Ok(None)
        );
        assert!(one("type = \"filter\"\nfield = \"region\"\nequals = \"us\"", record()).unwrap().is_some());
        assert_eq!(one("type = \"filter\"\nfield = \"region\"\nequals = \"us\"\nnegate = true", record()), Ok(None));
        assert_eq!(one("type = \"filter\"\nfield = \"session\"\nequals = 3", record()), Ok(None));
        assert_eq!(one("type = \"filter\"\nfield = \"action\"\nprefix = \"open\"", record()), Ok(None));
        // A record without the field does not match.
        assert!(one("type = \"filter\"\nfield = \"nope\"\nprefix = \"x\"", record()).unwrap().is_some());
    }

    #[test]
    fn route_takes_the_topic_from_a_field_and_refuses_bad_names() {
        let r = one("type = \"route\"\nfield = \"region\"\ntopic = \"story.actions.{}\"", record()).unwrap().unwrap();
        assert_eq!(r.topic, "story.actions.eu");
        let e = one("type = \"route\"\nfield = \"player\"\ntopic = \"t.{}\"", record()).unwrap_err();
        assert!(e.contains("cannot be part of a topic name"), "{e}");
        let e = one("type = \"route\"\nfield = \"missing\"\ntopic = \"t.{}\"", record()).unwrap_err();
        assert!(e.contains("no field `missing`"), "{e}");
    }

    #[test]
    fn mask_and_drop_change_only_the_named_fields() {
        let r = one("type = \"mask\"\nfields = [\"player\", \"nope\"]", record()).unwrap().unwrap();
        assert_eq!(r.value["player"], json!("****"));
        assert_eq!(r.value["action"], json!("open the door"));
        let r = one("type = \"drop\"\nfields = [\"player\", \"region\"]", record()).unwrap().unwrap();
        assert!(!r.value.contains_key("player") && !r.value.contains_key("region"));
        assert_eq!(r.value.len(), 4);
    }

    #[test]
    fn insert_header_and_set_key() {
        let r = one("type = \"insert_header\"\nname = \"source\"\nvalue = \"cdc\"", record()).unwrap().unwrap();
        assert_eq!(r.headers, vec![("source".to_owned(), b"cdc".to_vec())]);
        let r = one("type = \"set_key\"\nfield = \"region\"", record()).unwrap().unwrap();
        assert_eq!(r.key, b"eu");
        let r = one("type = \"set_key\"\nfield = \"id\"", record()).unwrap().unwrap();
        assert_eq!(r.key, 9u64.to_be_bytes());
    }

    #[test]
    fn a_chain_applies_in_order_and_stops_at_a_drop() {
        let specs = [
            spec("type = \"mask\"\nfields = [\"player\"]"),
            spec("type = \"filter\"\nfield = \"player\"\nequals = \"****\"\nnegate = true"),
            spec("type = \"insert_header\"\nname = \"h\"\nvalue = \"v\""),
        ];
        let r = Chain::new(&specs).apply(record()).unwrap().unwrap();
        assert_eq!((r.value["player"].as_str(), r.headers.len()), (Some("****"), 1));
        let specs = [spec("type = \"filter\"\nfield = \"region\"\nequals = \"eu\""), specs[2].clone()];
        assert_eq!(Chain::new(&specs).apply(record()), Ok(None));
    }

    #[test]
    fn unknown_types_and_fields_and_bad_settings_are_refused() {
        let e = toml::from_str::<TransformSpec>("type = \"upcase\"\nfield = \"a\"").unwrap_err().to_string();
        assert!(e.contains("unknown variant `upcase`") && e.contains("set_key"), "{e}");
        let e = toml::from_str::<TransformSpec>("type = \"mask\"\nfield = [\"a\"]").unwrap_err().to_string();
        assert!(e.contains("unknown field `field`"), "{e}");
        assert!(!spec("type = \"filter\"\nfield = \"a\"").problems().is_empty());
        assert!(!spec("type = \"route\"\nfield = \"a\"\ntopic = \"t\"").problems().is_empty());
        assert!(spec("type = \"drop\"\nfields = [\"action\"]").problems()[0].contains("cannot drop `action`"));
        assert!(spec("type = \"mask\"\nfields = [\"action\"]").problems().is_empty());
    }
}
