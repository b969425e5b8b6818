//! The seed corpus shipped with CodingAgent (`corpus/seed.jsonl.gz`, described in
//! `DATA.md`): real change descriptions from public packages, labelled by rules and author
//! sections, with a held-out split fixed by package so a project's vocabulary never leaks
//! from training into evaluation.

use crate::heuristic::{COMPLEXITIES, TASK_TYPES};
use crate::training::Sample;
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};

/// The corpus as built into the binary, so a fresh install can train without downloads.
pub const SEED: &[u8] = include_bytes!("../corpus/seed.jsonl.gz");

/// The fraction of seed samples in the corpus's `test` split; [`split_mark`] maps them
/// below it, so the default holdout fraction evaluates exactly on the corpus's test split.
pub const SEED_HOLDOUT: f64 = 0.2;

/// One corpus line.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub text: String,
    pub task_type: String,
    pub complexity: String,
    pub source: String,
    pub package: String,
    pub version: String,
    pub rule: String,
    pub split: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read the corpus: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

/// Reads a gzip-compressed JSON-lines corpus.
pub fn read(gzipped: impl Read) -> Result<Vec<Row>, CorpusError> {
    let mut rows = Vec::new();
    for (index, line) in BufReader::new(flate2::read::GzDecoder::new(gzipped)).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(&line)
            .map_err(|e| CorpusError::Line { line: index + 1, message: e.to_string() })?;
        let invalid = |message: String| CorpusError::Line { line: index + 1, message };
        if !TASK_TYPES.contains(&row.task_type.as_str()) {
            return Err(invalid(format!("unknown task type {:?}", row.task_type)));
        }
        if !COMPLEXITIES.contains(&row.complexity.as_str()) {
            return Err(invalid(format!("unknown complexity {:?}", row.complexity)));
        }
        if row.split != "train" && row.split != "test" {
            return Err(invalid(format!("unknown split {:?}", row.split)));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A stable number in [0, 1) for `key` (FNV-1a, so it never changes between builds).
pub fn stable_fraction(key: &str) -> f64 {
    let hash =
        key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// The split mark of a sample: seed samples keep their corpus split (test below
/// [`SEED_HOLDOUT`], train above it); other samples are spread uniformly by `key`.
pub fn split_mark(key: &str, held_out: Option<bool>) -> f64 {
    let fraction = stable_fraction(key);
    match held_out {
        Some(true) => fraction * SEED_HOLDOUT,
        Some(false) => SEED_HOLDOUT + fraction * (1.0 - SEED_HOLDOUT),
        None => fraction,
    }
}

impl Row {
    /// The row as a training sample.
    pub fn sample(&self) -> Sample {
        Sample {
            text: self.text.clone(),
            task_type: TASK_TYPES.iter().position(|t| *t == self.task_type).unwrap_or(TASK_TYPES.len() - 1),
            complexity: COMPLEXITIES.iter().position(|c| *c == self.complexity).unwrap_or(1),
            split: split_mark(&self.text, Some(self.split == "test")),
            weight: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_corpus_reads_and_keeps_its_split() {
        let rows = read(SEED).unwrap();
        assert!(rows.len() > 10_000, "{} rows", rows.len());
        for row in rows.iter().take(2_000) {
            let sample = row.sample();
            assert_eq!(sample.split < SEED_HOLDOUT, row.split == "test", "{row:?}");
            assert_eq!(TASK_TYPES[sample.task_type], row.task_type);
        }
        let test = rows.iter().filter(|r| r.split == "test").count() as f64 / rows.len() as f64;
        assert!((0.1..0.35).contains(&test), "test share {test}");
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(
            &mut gz,
            b"{\"text\":\"fix it now\",\"task_type\":\"bug_fix\",\"complexity\":\"simple\",\"source\":\"s\",\"package\":\"p\",\"version\":\"1\",\"rule\":\"r\",\"split\":\"train\"}\n\
              {\"text\":\"x\",\"task_type\":\"chore\",\"complexity\":\"simple\",\"source\":\"s\",\"package\":\"p\",\"version\":\"1\",\"rule\":\"r\",\"split\":\"train\"}\n",
        )
        .unwrap();
        match read(gz.finish().unwrap().as_slice()) {
            Err(CorpusError::Line { line: 2, message }) => assert!(message.contains("chore")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn split_marks_are_stable_and_in_range() {
        assert_eq!(stable_fraction("abc"), stable_fraction("abc"));
        assert!((0.0..1.0).contains(&stable_fraction("")));
        assert!(split_mark("x", Some(true)) < SEED_HOLDOUT);
        assert!(split_mark("x", Some(false)) >= SEED_HOLDOUT);
    }
}
