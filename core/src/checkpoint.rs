//! The task checkpoint: how far a task has written every table, and the facts its source needs
//! on restart, in the text form every sink stores at `_inlet/<task>/checkpoint`.

use crate::Position;

/// How far a task has written every table: the source may be acknowledged up to `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: Position,
    /// Free-form facts the source needs on restart (e.g. `slot=inlet_orders`), one per line.
    pub facts: Vec<(String, String)>,
}

impl Checkpoint {
    /// The stored form: `position=<hex>` and then one `key=value` line per fact.
    pub fn encode(&self) -> String {
        let mut s = format!("position={}\n", self.position);
        for (k, v) in &self.facts {
            s.push_str(&format!("{k}={v}\n"));
        }
        s
    }

    /// A checkpoint from its stored form; None if it is not one.
    pub fn decode(stored: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(stored);
        let mut position = None;
        let mut facts = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('=')?;
            if k == "position" {
                position = Position::parse(v);
            } else {
                facts.push((k.to_string(), v.to_string()));
            }
        }
        Some(Self {
            position: position?,
            facts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip() {
        let c = Checkpoint {
            position: Position(42),
            facts: vec![("slot".into(), "inlet_t".into())],
        };
        assert_eq!(Checkpoint::decode(c.encode().as_bytes()), Some(c));
        assert_eq!(Checkpoint::decode(b"nonsense"), None);
    }
}
