//! [`Entry`]: what an evaluation reports on — one network, a student, a BYOT exit, an OKDDip
//! peer or leader, the ensemble of the students, FFL/MFEF's fused logits. Named in
//! `metrics.csv` (`test_acc_<entry>`), `summary.json` and the report as `net`, `student0`,
//! `exit1` (1-based, shallow → deepest), `peer0`, `leader`, `ensemble`, `fused`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// One evaluated set of logits of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    /// The only network of a one-network method.
    Net,
    /// Student `i` of an online method (0-based).
    Student(usize),
    /// BYOT's exit `i`, 1-based, shallow → deepest.
    Exit(usize),
    /// OKDDip's peer `i` (0-based).
    Peer(usize),
    /// OKDDip's leader.
    Leader,
    /// The students' ensemble (the mean of their logits; ONE's gated sum).
    Ensemble,
    /// FFL/MFEF's fused logits.
    Fused,
}

impl Entry {
    /// `n` students named as `first(i)` gives, e.g. `Entry::Student`.
    pub fn list(n: usize, first: fn(usize) -> Entry) -> Vec<Entry> {
        (0..n).map(first).collect()
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Net => write!(f, "net"),
            Entry::Student(i) => write!(f, "student{i}"),
            Entry::Exit(i) => write!(f, "exit{i}"),
            Entry::Peer(i) => write!(f, "peer{i}"),
            Entry::Leader => write!(f, "leader"),
            Entry::Ensemble => write!(f, "ensemble"),
            Entry::Fused => write!(f, "fused"),
        }
    }
}

/// The name of an entry that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEntry(pub String);

impl fmt::Display for UnknownEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown entry `{}`; entries are net, student<i>, exit<i>, peer<i>, leader, ensemble, fused",
            self.0
        )
    }
}

impl std::error::Error for UnknownEntry {}

impl FromStr for Entry {
    type Err = UnknownEntry;
    fn from_str(s: &str) -> Result<Self, UnknownEntry> {
        let numbered = |prefix: &str| s.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
        Ok(match s {
            "net" => Entry::Net,
            "leader" => Entry::Leader,
            "ensemble" => Entry::Ensemble,
            "fused" => Entry::Fused,
            _ => {
                if let Some(i) = numbered("student") {
                    Entry::Student(i)
                } else if let Some(i) = numbered("exit") {
                    Entry::Exit(i)
                } else if let Some(i) = numbered("peer") {
                    Entry::Peer(i)
                } else {
                    return Err(UnknownEntry(s.to_string()));
                }
            }
        })
    }
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The entry a user deploys, among `entries`: the only network, BYOT's deepest exit, OKDDip's
/// leader, or the first student of an online method.
pub fn headline(entries: &[Entry]) -> usize {
    if let Some(i) = entries.iter().position(|e| *e == Entry::Leader) {
        return i;
    }
    let exits: Vec<usize> = (0..entries.len())
        .filter(|&i| matches!(entries[i], Entry::Exit(_)))
        .collect();
    exits.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in [
            Entry::Net,
            Entry::Student(3),
            Entry::Exit(1),
            Entry::Peer(0),
            Entry::Leader,
            Entry::Ensemble,
            Entry::Fused,
        ] {
            assert_eq!(e.to_string().parse::<Entry>(), Ok(e));
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), e);
        }
        assert_eq!("student12".parse(), Ok(Entry::Student(12)));
        let e = "studentx".parse::<Entry>().unwrap_err().to_string();
        assert!(e.contains("studentx") && e.contains("ensemble"), "{e}");
    }

    #[test]
    fn headline_entries() {
        use Entry::*;
        assert_eq!(headline(&[Net]), 0);
        assert_eq!(headline(&[Exit(1), Exit(2), Exit(3), Ensemble]), 2);
        assert_eq!(headline(&[Peer(0), Peer(1), Leader, Ensemble]), 2);
        assert_eq!(headline(&[Student(0), Student(1), Ensemble, Fused]), 0);
    }
}
