//! The cascade: the heuristic answers when it is sure; otherwise the ONNX model; otherwise a
//! language model, asked for a constrained JSON answer that is validated before use. When the
//! language model is unavailable or answers badly, the model's answer stands: the cascade
//! always answers, and says which stage decided.

use crate::heuristic::{self, COMPLEXITIES, Guess, TASK_TYPES};
use serde::Deserialize;

/// Which stage decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Heuristic,
    Model,
    Llm,
}

/// Confidence a stage needs for its answer to stand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub heuristic: f32,
    pub model: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { heuristic: 0.75, model: 0.6 }
    }
}

/// The cascade's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub guess: Guess,
    pub stage: Stage,
}

/// The model stage: probabilities over task types and over complexities.
pub trait ModelStage {
    fn classify(&self, text: &str) -> Option<(Vec<f32>, Vec<f32>)>;
}

/// The language-model stage: the raw text of a JSON answer, or `None` when unavailable.
pub trait LlmStage {
    fn ask(&self, prompt: &str) -> impl Future<Output = Option<String>> + Send;
}

/// The instruction sent to the language model; the answer must match [`parse_llm_answer`].
pub fn llm_prompt(text: &str) -> String {
    format!(
        "Classify this software change request. Answer with JSON only: \
         {{\"task_type\": one of {types:?}, \"complexity\": one of {complexities:?}, \"confidence\": a number from 0 to 1}}.\n\n\
         Request:\n{text}",
        types = TASK_TYPES,
        complexities = COMPLEXITIES,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmAnswer {
    task_type: String,
    complexity: String,
    confidence: f32,
}

/// Validates a language model's answer: JSON of exactly the requested shape, known labels,
/// a confidence in [0, 1]. Surrounding prose or a Markdown fence is tolerated; anything else
/// is rejected.
pub fn parse_llm_answer(answer: &str) -> Option<Guess> {
    let start = answer.find('{')?;
    let end = answer.rfind('}')?;
    let parsed: LlmAnswer = serde_json::from_str(answer.get(start..=end)?).ok()?;
    let task_type = TASK_TYPES.iter().position(|t| *t == parsed.task_type)?;
    let complexity = COMPLEXITIES.iter().position(|c| *c == parsed.complexity)?;
    if !(0.0..=1.0).contains(&parsed.confidence) {
        return None;
    }
    Some(Guess {
        task_type,
        type_confidence: parsed.confidence,
        complexity,
        complexity_confidence: parsed.confidence,
    })
}

fn argmax(values: &[f32]) -> (usize, f32) {
    values.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((0, 0.0))
}

/// Runs the cascade on `text`.
pub async fn decide(
    text: &str,
    thresholds: Thresholds,
    model: &impl ModelStage,
    llm: &impl LlmStage,
) -> Decision {
    let guess = heuristic::classify(text);
    if guess.type_confidence >= thresholds.heuristic {
        return Decision { guess, stage: Stage::Heuristic };
    }
    let modelled = model.classify(text).map(|(types, complexities)| {
        let (task_type, type_confidence) = argmax(&types);
        let (complexity, complexity_confidence) = argmax(&complexities);
        Guess { task_type, type_confidence, complexity, complexity_confidence }
    });
    if let Some(guess) = modelled
        && guess.type_confidence >= thresholds.model
    {
        return Decision { guess, stage: Stage::Model };
    }
    if let Some(guess) = llm.ask(&llm_prompt(text)).await.as_deref().and_then(parse_llm_answer) {
        return Decision { guess, stage: Stage::Llm };
    }
    // The language model is down or answered badly: the more confident earlier answer stands.
    match modelled {
        Some(modelled) if modelled.type_confidence >= guess.type_confidence => {
            Decision { guess: modelled, stage: Stage::Model }
        }
        _ => Decision { guess, stage: Stage::Heuristic },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedModel(Option<(Vec<f32>, Vec<f32>)>);

    impl ModelStage for FixedModel {
        fn classify(&self, _: &str) -> Option<(Vec<f32>, Vec<f32>)> {
            self.0.clone()
        }
    }

    struct FixedLlm(Option<&'static str>);

    impl LlmStage for FixedLlm {
        async fn ask(&self, _: &str) -> Option<String> {
            self.0.map(str::to_owned)
        }
    }

    fn probabilities(top: usize, confidence: f32, n: usize) -> Vec<f32> {
        (0..n).map(|i| if i == top { confidence } else { (1.0 - confidence) / (n - 1) as f32 }).collect()
    }

    const VAGUE: &str = "the thing on the settings page needs some love";

    #[tokio::test]
    async fn each_stage_decides_when_the_earlier_ones_are_unsure() {
        let sure_model = FixedModel(Some((probabilities(1, 0.9, 9), probabilities(1, 0.7, 3))));
        let unsure_model = FixedModel(Some((probabilities(2, 0.4, 9), probabilities(0, 0.5, 3))));
        let llm = FixedLlm(Some(r#"{"task_type": "refactor", "complexity": "medium", "confidence": 0.7}"#));

        let obvious = decide(
            "Security fix: XSS vulnerability, CVE-2024-1234",
            Thresholds::default(),
            &unsure_model,
            &llm,
        )
        .await;
        assert_eq!((obvious.stage, TASK_TYPES[obvious.guess.task_type]), (Stage::Heuristic, "security"));

        let modelled = decide(VAGUE, Thresholds::default(), &sure_model, &llm).await;
        assert_eq!((modelled.stage, TASK_TYPES[modelled.guess.task_type]), (Stage::Model, "feature"));

        let asked = decide(VAGUE, Thresholds::default(), &unsure_model, &llm).await;
        assert_eq!((asked.stage, TASK_TYPES[asked.guess.task_type]), (Stage::Llm, "refactor"));
        assert_eq!(COMPLEXITIES[asked.guess.complexity], "medium");
    }

    #[tokio::test]
    async fn a_missing_or_malformed_llm_answer_falls_back_to_the_best_earlier_answer() {
        let unsure_model = FixedModel(Some((probabilities(2, 0.45, 9), probabilities(0, 0.5, 3))));
        for llm in [
            FixedLlm(None),
            FixedLlm(Some("I think it is a refactor")),
            FixedLlm(Some(r#"{"task_type": "chores", "complexity": "medium", "confidence": 0.9}"#)),
        ] {
            let decision = decide(VAGUE, Thresholds::default(), &unsure_model, &llm).await;
            assert_eq!((decision.stage, TASK_TYPES[decision.guess.task_type]), (Stage::Model, "refactor"));
        }
        let decision = decide(VAGUE, Thresholds::default(), &FixedModel(None), &FixedLlm(None)).await;
        assert_eq!(decision.stage, Stage::Heuristic, "without a model the heuristic still answers");
    }

    #[test]
    fn llm_answers_are_validated_strictly() {
        let good = parse_llm_answer(
            "```json\n{\"task_type\": \"bug_fix\", \"complexity\": \"simple\", \"confidence\": 0.8}\n```",
        )
        .unwrap();
        assert_eq!((TASK_TYPES[good.task_type], COMPLEXITIES[good.complexity]), ("bug_fix", "simple"));
        for bad in [
            "",
            "bug_fix",
            r#"{"task_type": "bug_fix", "complexity": "simple"}"#,
            r#"{"task_type": "bug_fix", "complexity": "huge", "confidence": 0.5}"#,
            r#"{"task_type": "bug_fix", "complexity": "simple", "confidence": 1.5}"#,
            r#"{"task_type": "bug_fix", "complexity": "simple", "confidence": 0.5, "why": "x"}"#,
        ] {
            assert!(parse_llm_answer(bad).is_none(), "{bad}");
        }
        assert!(llm_prompt("fix it").contains("\"bug_fix\""));
    }
}
