//! Conversions between the classifier's own types and the contract's messages.

use crate::cascade::{Decision, Stage, StageRun};
use crate::evaluation::Report;
use crate::training::Evaluation;
use codingagent_proto::codingagent::classifier::v1 as pb;
use codingagent_proto::codingagent::common::v1::Actor;

pub(crate) use codingagent_proto::helpers::{duration, timestamp};

/// An actor as stored (kind and id columns).
pub(crate) fn actor(kind: i16, id: String) -> Actor {
    Actor { kind: i32::from(kind), id, via: String::new() }
}

/// The contract's enum number for a task-type or complexity index (the contract is 1-based).
pub(crate) fn label(index: usize) -> i32 {
    index as i32 + 1
}

pub(crate) fn stage(stage: Stage) -> pb::ClassificationStage {
    match stage {
        Stage::Heuristic => pb::ClassificationStage::Heuristic,
        Stage::Model => pb::ClassificationStage::Model,
        Stage::Llm => pb::ClassificationStage::Llm,
    }
}

fn stage_outcome(run: &StageRun) -> pb::StageOutcome {
    pb::StageOutcome {
        stage: stage(run.stage) as i32,
        task_type: run.guess.map_or(0, |g| label(g.task_type)),
        complexity: run.guess.map_or(0, |g| label(g.complexity)),
        confidence: run.guess.map_or(0.0, |g| f64::from(g.type_confidence.min(g.complexity_confidence))),
        threshold: f64::from(run.threshold),
        accepted: run.accepted,
        duration: Some(duration(run.duration)),
        error: run.error.clone().unwrap_or_default(),
    }
}

/// Fills the decision's parts of a classification.
pub(crate) fn decision(classification: &mut pb::Classification, decision: &Decision) {
    let guess = decision.guess;
    classification.task_type = label(guess.task_type);
    classification.task_type_confidence = f64::from(guess.type_confidence);
    classification.complexity = label(guess.complexity);
    classification.complexity_confidence = f64::from(guess.complexity_confidence);
    classification.decided_by = stage(decision.stage) as i32;
    classification.model_version = decision.model_version.clone().unwrap_or_default();
    classification.llm_model = decision.llm_model.clone().unwrap_or_default();
    classification.task_type_probabilities = decision
        .probabilities
        .task_type
        .iter()
        .enumerate()
        .map(|(i, p)| pb::TaskTypeProbability { task_type: label(i), probability: f64::from(*p) })
        .collect();
    classification.complexity_probabilities = decision
        .probabilities
        .complexity
        .iter()
        .enumerate()
        .map(|(i, p)| pb::ComplexityProbability { complexity: label(i), probability: f64::from(*p) })
        .collect();
    classification.stages = decision.stages.iter().map(stage_outcome).collect();
}

fn head(report: &Report, task_type: bool) -> pb::HeadMetrics {
    pb::HeadMetrics {
        accuracy: report.accuracy(),
        macro_f1: report.macro_f1(),
        classes: (0..report.labels.len())
            .map(|i| report.class(i))
            .enumerate()
            .filter(|(_, c)| c.support > 0)
            .map(|(i, c)| pb::ClassMetrics {
                label: Some(if task_type {
                    pb::class_metrics::Label::TaskType(label(i))
                } else {
                    pb::class_metrics::Label::Complexity(label(i))
                }),
                precision: c.precision,
                recall: c.recall,
                f1: c.f1,
                support: i64::from(c.support),
            })
            .collect(),
    }
}

pub(crate) fn metrics(evaluation: &Evaluation) -> pb::ModelMetrics {
    pb::ModelMetrics {
        task_type: Some(head(&evaluation.task_type, true)),
        complexity: Some(head(&evaluation.complexity, false)),
        evaluation_sample_count: i64::from(evaluation.sample_count()),
        p50_latency: Some(duration(evaluation.p50_latency)),
    }
}
