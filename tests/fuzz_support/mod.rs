//! Shared pieces of the random-input tests: how many cases, and random edits of a
//! valid input (structure-aware fuzzing starts from something that parses).
#![allow(dead_code)] // each test binary uses a different subset

use proptest::prelude::*;

/// Cases per property: `FUZZ_CASES` or `default`.
pub fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Edit {
    Set(usize, u8),
    Xor(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
}

/// Up to five random edits.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            (any::<usize>(), 1u8..).prop_map(|(i, b)| Edit::Xor(i, b)),
            any::<usize>().prop_map(Edit::Truncate),
            proptest::collection::vec(any::<u8>(), 1..80).prop_map(Edit::Append),
        ],
        0..6,
    )
}

pub fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        match e {
            Edit::Set(i, v) if !b.is_empty() => {
                let n = b.len();
                b[i % n] = *v;
            }
            Edit::Xor(i, v) if !b.is_empty() => {
                let n = b.len();
                b[i % n] ^= *v;
            }
            Edit::Truncate(i) => b.truncate(i % (b.len() + 1)),
            Edit::Append(more) => b.extend_from_slice(more),
            _ => {}
        }
    }
    b
}
