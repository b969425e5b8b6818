//! One training run, shared by the `codingagent classifier train` command and the `Retrain`
//! RPC: split the samples on their fixed held-out marks, fit both heads, evaluate the
//! candidate and the baselines on the held-out part, and decide whether it may replace the
//! serving model. Pure computation: no I/O, so the same run gives the same model anywhere.

use crate::evaluation::Report;
use crate::features::{DIMENSIONS, extract};
use crate::heuristic::{self, COMPLEXITIES, TASK_TYPES};
use crate::linear::{Example, LinearModel, Training, sparse};
use crate::onnx::{Heads, Probabilities};
use std::time::{Duration, Instant};

/// One labelled request.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub text: String,
    /// Index into [`TASK_TYPES`].
    pub task_type: usize,
    /// Index into [`COMPLEXITIES`].
    pub complexity: usize,
    /// A stable number in [0, 1); the sample is held out when it is below the run's holdout
    /// fraction. Stable per sample, so every run and every model is judged on the same set.
    pub split: f64,
    /// How much the sample counts in fitting: 1, less when its user's feedback as a whole
    /// would otherwise weigh more than its bounded share ([`bound_shares`]).
    pub weight: f32,
}

/// Where a run is, for progress bars and job status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Features { done: usize, total: usize },
    Fitting { head: &'static str, epoch: usize, epochs: usize },
    Evaluating,
}

/// Both heads' results on one labelled set.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub task_type: Report,
    pub complexity: Report,
    /// Median time to extract features and compute probabilities for one request.
    pub p50_latency: Duration,
}

impl Evaluation {
    pub fn sample_count(&self) -> u32 {
        self.task_type.total()
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Run {
    pub heads: Heads,
    pub training_count: usize,
    pub holdout_count: usize,
    pub candidate: Evaluation,
    pub heuristic: Evaluation,
    pub majority: Evaluation,
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Splits `samples` into (training, held out).
pub fn split(samples: &[Sample], holdout_fraction: f64) -> (Vec<&Sample>, Vec<&Sample>) {
    samples.iter().partition(|s| s.split >= holdout_fraction)
}

/// Fits both heads on `training`.
pub fn fit(training: &[&Sample], settings: Training, progress: &mut dyn FnMut(Progress)) -> Heads {
    let total = training.len();
    let mut features = Vec::with_capacity(total);
    for (done, sample) in training.iter().enumerate() {
        features.push(sparse(&extract(&sample.text)));
        if done % 1_000 == 0 {
            progress(Progress::Features { done, total });
        }
    }
    progress(Progress::Features { done: total, total });
    let mut head = |name: &'static str, classes: usize, label: fn(&Sample) -> usize| {
        let examples: Vec<Example> = training
            .iter()
            .zip(&features)
            .map(|(sample, features)| Example {
                features: features.clone(),
                label: label(sample),
                weight: sample.weight,
            })
            .collect();
        LinearModel::train_with_progress(&examples, DIMENSIONS, classes, settings, &mut |epoch| {
            progress(Progress::Fitting { head: name, epoch, epochs: settings.epochs });
        })
    };
    let task_type = head("task type", TASK_TYPES.len(), |s| s.task_type);
    let complexity = head("complexity", COMPLEXITIES.len(), |s| s.complexity);
    Heads { task_type, task_types: labels(&TASK_TYPES), complexity, complexities: labels(&COMPLEXITIES) }
}

fn argmax(values: &[f32]) -> usize {
    values.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).map_or(0, |(i, _)| i)
}

/// Evaluates a classifier (text → both heads' probabilities) on `held_out`.
pub fn evaluate<E>(
    held_out: &[&Sample],
    mut classify: impl FnMut(&str) -> Result<Probabilities, E>,
) -> Result<Evaluation, E> {
    let mut latencies = Vec::with_capacity(held_out.len());
    let mut task_type = Vec::with_capacity(held_out.len());
    let mut complexity = Vec::with_capacity(held_out.len());
    for sample in held_out {
        let started = Instant::now();
        let probabilities = classify(&sample.text)?;
        latencies.push(started.elapsed());
        task_type.push((sample.task_type, argmax(&probabilities.task_type)));
        complexity.push((sample.complexity, argmax(&probabilities.complexity)));
    }
    latencies.sort_unstable();
    Ok(Evaluation {
        task_type: Report::new(&labels(&TASK_TYPES), task_type),
        complexity: Report::new(&labels(&COMPLEXITIES), complexity),
        p50_latency: latencies.get(latencies.len() / 2).copied().unwrap_or_default(),
    })
}

/// The heuristic stage alone, as a baseline.
pub fn heuristic_probabilities(text: &str) -> Probabilities {
    let guess = heuristic::classify(text);
    Probabilities {
        task_type: one_hot(TASK_TYPES.len(), guess.task_type),
        complexity: one_hot(COMPLEXITIES.len(), guess.complexity),
    }
}

fn one_hot(n: usize, index: usize) -> Vec<f32> {
    (0..n).map(|i| if i == index { 1.0 } else { 0.0 }).collect()
}

fn majority(training: &[&Sample], n: usize, label: fn(&Sample) -> usize) -> usize {
    let mut counts = vec![0usize; n];
    training.iter().for_each(|s| counts[label(s)] += 1);
    // Ties go to the lower index so the baseline is deterministic.
    counts.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0))).map_or(0, |(i, _)| i)
}

/// Runs training and evaluation end to end.
pub fn run(
    samples: &[Sample],
    holdout_fraction: f64,
    settings: Training,
    progress: &mut dyn FnMut(Progress),
) -> Run {
    let (training, held_out) = split(samples, holdout_fraction);
    let heads = fit(&training, settings, progress);
    progress(Progress::Evaluating);
    let never_fails = |r: Result<Evaluation, std::convert::Infallible>| match r {
        Ok(evaluation) => evaluation,
        Err(never) => match never {},
    };
    let candidate = never_fails(evaluate(&held_out, |text| {
        let features = extract(text);
        Ok(Probabilities {
            task_type: heads.task_type.probabilities(&features),
            complexity: heads.complexity.probabilities(&features),
        })
    }));
    let heuristic = never_fails(evaluate(&held_out, |text| Ok(heuristic_probabilities(text))));
    let (top_type, top_complexity) = (
        majority(&training, TASK_TYPES.len(), |s| s.task_type),
        majority(&training, COMPLEXITIES.len(), |s| s.complexity),
    );
    let majority = never_fails(evaluate(&held_out, |_| {
        Ok(Probabilities {
            task_type: one_hot(TASK_TYPES.len(), top_type),
            complexity: one_hot(COMPLEXITIES.len(), top_complexity),
        })
    }));
    Run {
        heads,
        training_count: training.len(),
        holdout_count: held_out.len(),
        candidate,
        heuristic,
        majority,
    }
}

/// The promotion rule: a candidate replaces the serving model only if it is no worse on the
/// same held-out set by macro F1 of either head (`tolerance` absorbs float noise). `Err` says
/// why not.
pub fn no_worse(candidate: &Evaluation, serving: &Evaluation, tolerance: f64) -> Result<(), String> {
    for (head, new, old) in [
        ("task type", candidate.task_type.macro_f1(), serving.task_type.macro_f1()),
        ("complexity", candidate.complexity.macro_f1(), serving.complexity.macro_f1()),
    ] {
        if new + tolerance < old {
            return Err(format!("{head} macro F1 {new:.4} is below the serving model's {old:.4}"));
        }
    }
    Ok(())
}

/// Bounds each user's share of a training set: the samples of one `owners` entry (`None`: no
/// user's, e.g. seed rows) together weigh at most `share` × the number of samples, so one
/// user's flood of corrections cannot outweigh everyone else. `owners` runs beside `samples`.
pub fn bound_shares(samples: &mut [Sample], owners: &[Option<String>], share: f64) {
    let mut per_user = std::collections::HashMap::<&str, usize>::new();
    for owner in owners.iter().flatten() {
        *per_user.entry(owner.as_str()).or_default() += 1;
    }
    let allowed = share * samples.len() as f64;
    for (sample, owner) in samples.iter_mut().zip(owners) {
        if let Some(count) = owner.as_deref().and_then(|o| per_user.get(o)) {
            sample.weight = (allowed / *count as f64).min(1.0) as f32;
        }
    }
}

/// Labels with fewer than `minimum` samples: `(head, label, count)`. Labels with no samples
/// at all are not short — a head simply never predicts what it never saw — unless nothing
/// at all is there to train on.
pub fn shortfalls(samples: &[Sample], minimum: usize) -> Vec<(&'static str, &'static str, usize)> {
    let mut types = [0usize; TASK_TYPES.len()];
    let mut complexities = [0usize; COMPLEXITIES.len()];
    for sample in samples {
        types[sample.task_type] += 1;
        complexities[sample.complexity] += 1;
    }
    let short = |head: &'static str, names: &'static [&'static str], counts: &[usize]| {
        names
            .iter()
            .zip(counts)
            .filter(|(_, c)| (samples.is_empty() || **c > 0) && **c < minimum)
            .map(|(name, c)| (head, *name, *c))
            .collect::<Vec<_>>()
    };
    let mut out = short("task_type", &TASK_TYPES, &types);
    out.extend(short("complexity", &COMPLEXITIES, &complexities));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, task_type: usize, complexity: usize, split: f64) -> Sample {
        Sample { text: text.into(), task_type, complexity, split, weight: 1.0 }
    }

    /// Requests of three kinds, with variations, a quarter held out.
    fn samples() -> Vec<Sample> {
        let subjects = ["login", "parser", "billing", "search", "upload", "settings", "export", "cache"];
        let mut out = Vec::new();
        for (i, subject) in subjects.iter().enumerate() {
            let split = (i as f64 + 0.5) / subjects.len() as f64;
            out.push(sample(&format!("fix the crash in the {subject} module"), 0, 0, split));
            out.push(sample(&format!("the {subject} page throws an exception on save"), 0, 1, split));
            out.push(sample(&format!("implement a new {subject} api with pagination"), 1, 1, split));
            out.push(sample(&format!("add support for {subject} webhooks across services"), 1, 2, split));
            out.push(sample(&format!("document how the {subject} flow works in the readme"), 4, 0, split));
            out.push(sample(&format!("write docs for the {subject} configuration options"), 4, 0, split));
        }
        out
    }

    fn fast() -> Training {
        Training { epochs: 60, ..Training::default() }
    }

    #[test]
    fn the_split_is_fixed_by_each_samples_mark() {
        let all = samples();
        let (training, held_out) = split(&all, 0.25);
        assert_eq!((training.len(), held_out.len()), (36, 12));
        assert!(held_out.iter().all(|s| s.text.contains("login") || s.text.contains("parser")));
    }

    #[test]
    fn a_run_learns_beats_the_majority_baseline_and_is_deterministic() {
        let all = samples();
        let first = run(&all, 0.25, fast(), &mut |_| {});
        assert_eq!((first.training_count, first.holdout_count), (36, 12));
        assert!(first.candidate.task_type.accuracy() > 0.9, "{}", first.candidate.task_type.markdown());
        assert!(first.candidate.task_type.macro_f1() > first.majority.task_type.macro_f1());
        assert_eq!(first.candidate.sample_count(), 12);
        let second = run(&all, 0.25, fast(), &mut |_| {});
        assert_eq!(first.heads, second.heads);
    }

    #[test]
    fn progress_is_reported_through_every_phase() {
        let mut seen = Vec::new();
        run(&samples(), 0.25, Training { epochs: 3, ..Training::default() }, &mut |p| seen.push(p));
        assert!(seen.contains(&Progress::Features { done: 36, total: 36 }));
        assert!(seen.contains(&Progress::Fitting { head: "complexity", epoch: 3, epochs: 3 }));
        assert_eq!(seen.last(), Some(&Progress::Evaluating));
    }

    #[test]
    fn promotion_refuses_a_worse_model_on_either_head() {
        let trained = run(&samples(), 0.25, fast(), &mut |_| {});
        let (good, majority) = (trained.candidate, trained.majority);
        assert!(no_worse(&good, &good, 0.0).is_ok(), "an equal model may replace the serving one");
        assert!(no_worse(&good, &majority, 0.0).is_ok());
        let refusal = no_worse(&majority, &good, 0.0).unwrap_err();
        assert!(refusal.starts_with("task type macro F1"), "{refusal}");
        let mut worse_complexity = good.clone();
        worse_complexity.complexity = majority.complexity;
        assert!(no_worse(&worse_complexity, &good, 0.0).unwrap_err().starts_with("complexity"));
    }

    #[test]
    fn one_users_samples_weigh_at_most_their_share() {
        let mut all = samples();
        let n = all.len();
        let owners: Vec<Option<String>> = (0..n)
            .map(|i| match i {
                0..20 => Some("flood".to_owned()),
                20..22 => Some("alice".to_owned()),
                _ => None,
            })
            .collect();
        bound_shares(&mut all, &owners, 0.1);
        let weight = |who: Option<&str>| -> f32 {
            all.iter().zip(&owners).filter(|(_, o)| o.as_deref() == who).map(|(s, _)| s.weight).sum()
        };
        assert!((weight(Some("flood")) - 0.1 * n as f32).abs() < 1e-4, "{}", weight(Some("flood")));
        assert_eq!(weight(Some("alice")), 2.0, "a user within the share keeps full weight");
        assert_eq!(weight(None), (n - 22) as f32, "samples of no user are untouched");
    }

    #[test]
    fn shortfalls_name_each_thin_label() {
        let all = samples();
        assert!(shortfalls(&all, 8).is_empty());
        let short = shortfalls(&all, 17);
        assert!(short.contains(&("task_type", "bug_fix", 16)), "{short:?}");
        assert!(short.contains(&("complexity", "complex", 8)), "{short:?}");
        assert!(!short.iter().any(|s| s.1 == "security"), "absent labels are not short");
        assert_eq!(shortfalls(&[], 1).len(), TASK_TYPES.len() + COMPLEXITIES.len());
    }
}
