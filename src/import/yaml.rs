//! The YAML an import writes: an ordered tree of scalars, lists and mappings,
//! serialized by `serde-saphyr` (the crate the config is read with). Keys keep
//! the order they were inserted in, so the output reads in the order of the
//! service model (listener, handler, forwarder) rather than alphabetically.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Bool(bool),
    Number(i64),
    Sequence(Vec<Value>),
    Mapping(Mapping),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Number(n)
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::Number(i64::from(n))
    }
}

/// A mapping that keeps insertion order; inserting a key again replaces its
/// value in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping(Vec<(Value, Value)>);

impl Mapping {
    pub fn new() -> Mapping {
        Mapping::default()
    }

    pub fn insert(&mut self, key: Value, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl IntoIterator for Mapping {
    type Item = (Value, Value);
    type IntoIter = std::vec::IntoIter<(Value, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::String(v) => s.serialize_str(v),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Number(v) => s.serialize_i64(*v),
            Value::Sequence(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Value::Mapping(m) => m.serialize(s),
        }
    }
}

impl Serialize for Mapping {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The document as YAML text.
pub fn to_string(v: &Value) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the importer writes reads back as the same values, in order.
    #[test]
    fn ordered_and_readable() {
        let mut m = Mapping::new();
        m.insert("services".into(), Value::Sequence(vec!["a:1".into()]));
        m.insert("addr".into(), "127.0.0.1:3000".into());
        m.insert("weight".into(), Value::Number(2));
        m.insert("secure".into(), true.into());
        m.insert("addr".into(), ":80".into());
        let text = to_string(&Value::Mapping(m)).unwrap();
        let services = text.find("services").unwrap();
        assert!(services < text.find("addr").unwrap(), "{text}");
        let back: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
            crate::config::from_yaml(&text).unwrap();
        assert_eq!(back.len(), 4, "{text}");
        assert!(text.contains("weight: 2"), "{text}");
    }
}
