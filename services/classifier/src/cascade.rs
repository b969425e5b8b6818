//! The cascade: the heuristic answers when it is sure; otherwise the ONNX model; otherwise a
//! language model, asked for a constrained JSON answer that is validated before use. When the
//! language model is unavailable or answers badly, the model's answer stands: the cascade
//! always answers, and says which stage decided.

use crate::heuristic::{self, COMPLEXITIES, Guess, TASK_TYPES};
use crate::onnx::Probabilities;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Which stage decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Heuristic,
    Model,
    Llm,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Self::Heuristic => "heuristic",
            Self::Model => "model",
            Self::Llm => "llm",
        }
    }
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

/// What one stage concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRun {
    pub stage: Stage,
    /// The stage's answer; `None` when it failed (see `error`).
    pub guess: Option<Guess>,
    /// The confidence the stage needed.
    pub threshold: f32,
    pub accepted: bool,
    pub duration: Duration,
    pub error: Option<String>,
}

/// The cascade's answer, with every stage that ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub guess: Guess,
    pub stage: Stage,
    /// The deciding stage's distributions.
    pub probabilities: Probabilities,
    pub stages: Vec<StageRun>,
    /// The model consulted, when the model stage ran and had one.
    pub model_version: Option<String>,
    /// The language model that answered, when the LLM stage answered.
    pub llm_model: Option<String>,
}

/// The model stage: both heads' probabilities and the model's version, or why there are none.
pub trait ModelStage {
    fn classify(&self, text: &str) -> Result<(Probabilities, String), String>;
}

/// What the language model said, and which model said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmAnswer {
    pub text: String,
    pub model: String,
}

/// The language-model stage: the raw text of a JSON answer, or why there is none.
pub trait LlmStage {
    fn ask(&self, prompt: &str) -> impl Future<Output = Result<LlmAnswer, String>> + Send;
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
struct Answer {
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
    let parsed: Answer = serde_json::from_str(answer.get(start..=end)?).ok()?;
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

/// A stage that names one label with some confidence reports the rest spread evenly.
fn tempered(n: usize, index: usize, confidence: f32) -> Vec<f32> {
    let rest = (1.0 - confidence).max(0.0) / (n - 1) as f32;
    (0..n).map(|i| if i == index { confidence } else { rest }).collect()
}

fn guess_probabilities(guess: &Guess) -> Probabilities {
    Probabilities {
        task_type: tempered(TASK_TYPES.len(), guess.task_type, guess.type_confidence),
        complexity: tempered(COMPLEXITIES.len(), guess.complexity, guess.complexity_confidence),
    }
}

/// Runs the cascade on `text`. `use_llm` false stops before the language model (it is
/// disabled in config, or the caller asked for an answer in microseconds).
pub async fn decide(
    text: &str,
    thresholds: Thresholds,
    model: &impl ModelStage,
    llm: &impl LlmStage,
    use_llm: bool,
) -> Decision {
    let mut stages = Vec::with_capacity(3);
    let started = Instant::now();
    let heuristic = heuristic::classify(text);
    let heuristic_sure = heuristic.type_confidence >= thresholds.heuristic;
    stages.push(StageRun {
        stage: Stage::Heuristic,
        guess: Some(heuristic),
        threshold: thresholds.heuristic,
        accepted: heuristic_sure,
        duration: started.elapsed(),
        error: None,
    });
    let mut best = (heuristic, Stage::Heuristic, guess_probabilities(&heuristic));
    let mut model_version = None;
    if !heuristic_sure {
        let started = Instant::now();
        let modelled = model.classify(text).map(|(probabilities, version)| {
            let (task_type, type_confidence) = argmax(&probabilities.task_type);
            let (complexity, complexity_confidence) = argmax(&probabilities.complexity);
            (Guess { task_type, type_confidence, complexity, complexity_confidence }, probabilities, version)
        });
        let (guess, error) = match modelled {
            Ok((guess, probabilities, version)) => {
                model_version = Some(version);
                // The model's calibrated probabilities beat the heuristic's tempered ones when
                // both are unsure and nothing later answers.
                if guess.type_confidence >= best.0.type_confidence {
                    best = (guess, Stage::Model, probabilities);
                }
                (Some(guess), None)
            }
            Err(error) => (None, Some(error)),
        };
        let sure = guess.is_some_and(|g| g.type_confidence >= thresholds.model);
        stages.push(StageRun {
            stage: Stage::Model,
            guess,
            threshold: thresholds.model,
            accepted: false,
            duration: started.elapsed(),
            error,
        });
        if !sure && use_llm {
            let started = Instant::now();
            let answer = llm.ask(&llm_prompt(text)).await;
            let parsed = answer.and_then(|a| {
                parse_llm_answer(&a.text)
                    .map(|guess| (guess, a.model))
                    .ok_or_else(|| "the language model's answer was not the requested JSON".to_owned())
            });
            let (guess, error, llm_model) = match parsed {
                Ok((guess, model)) => (Some(guess), None, Some(model)),
                Err(error) => (None, Some(error), None),
            };
            stages.push(StageRun {
                stage: Stage::Llm,
                guess,
                threshold: 0.0,
                accepted: false,
                duration: started.elapsed(),
                error,
            });
            if let Some(guess) = guess {
                best = (guess, Stage::Llm, guess_probabilities(&guess));
                return finish(best, stages, model_version, llm_model);
            }
        }
    }
    finish(best, stages, model_version, None)
}

fn finish(
    (guess, stage, probabilities): (Guess, Stage, Probabilities),
    mut stages: Vec<StageRun>,
    model_version: Option<String>,
    llm_model: Option<String>,
) -> Decision {
    stages.iter_mut().for_each(|s| s.accepted = s.stage == stage);
    Decision { guess, stage, probabilities, stages, model_version, llm_model }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedModel(Option<Probabilities>);

    impl ModelStage for FixedModel {
        fn classify(&self, _: &str) -> Result<(Probabilities, String), String> {
            self.0.clone().map(|p| (p, "model-7".to_owned())).ok_or_else(|| "no serving model".to_owned())
        }
    }

    struct FixedLlm(Option<&'static str>);

    impl LlmStage for FixedLlm {
        async fn ask(&self, _: &str) -> Result<LlmAnswer, String> {
            self.0
                .map(|text| LlmAnswer { text: text.to_owned(), model: "local/gemma".to_owned() })
                .ok_or_else(|| "llm unavailable".to_owned())
        }
    }

    fn model(task_type: usize, confidence: f32, complexity: usize) -> FixedModel {
        FixedModel(Some(Probabilities {
            task_type: tempered(9, task_type, confidence),
            complexity: tempered(3, complexity, 0.6),
        }))
    }

    const VAGUE: &str = "the thing on the settings page needs some love";
    const REFACTOR: &str = r#"{"task_type": "refactor", "complexity": "medium", "confidence": 0.7}"#;

    fn stages(decision: &Decision) -> Vec<(Stage, bool)> {
        decision.stages.iter().map(|s| (s.stage, s.accepted)).collect()
    }

    #[tokio::test]
    async fn each_stage_decides_when_the_earlier_ones_are_unsure() {
        let llm = FixedLlm(Some(REFACTOR));
        let t = Thresholds::default();

        let obvious =
            decide("Security fix: XSS vulnerability, CVE-2024-1234", t, &model(2, 0.4, 0), &llm, true).await;
        assert_eq!((obvious.stage, TASK_TYPES[obvious.guess.task_type]), (Stage::Heuristic, "security"));
        assert_eq!(stages(&obvious), [(Stage::Heuristic, true)]);
        assert_eq!(obvious.model_version, None, "the model was not consulted");

        let modelled = decide(VAGUE, t, &model(1, 0.9, 1), &llm, true).await;
        assert_eq!((modelled.stage, TASK_TYPES[modelled.guess.task_type]), (Stage::Model, "feature"));
        assert_eq!(stages(&modelled), [(Stage::Heuristic, false), (Stage::Model, true)]);
        assert_eq!(modelled.model_version.as_deref(), Some("model-7"));
        assert!((modelled.probabilities.task_type[1] - 0.9).abs() < 1e-6);

        let asked = decide(VAGUE, t, &model(2, 0.4, 0), &llm, true).await;
        assert_eq!((asked.stage, TASK_TYPES[asked.guess.task_type]), (Stage::Llm, "refactor"));
        assert_eq!(COMPLEXITIES[asked.guess.complexity], "medium");
        assert_eq!(stages(&asked), [(Stage::Heuristic, false), (Stage::Model, false), (Stage::Llm, true)]);
        assert_eq!(asked.llm_model.as_deref(), Some("local/gemma"));
    }

    #[tokio::test]
    async fn thresholds_and_the_llm_switch_choose_the_stages() {
        let llm = FixedLlm(Some(REFACTOR));
        let obvious = "Fix the crash when the config file is missing";
        let never = Thresholds { heuristic: 1.1, model: 1.1 };
        let always = Thresholds { heuristic: 0.0, model: 0.0 };
        assert_eq!(decide(obvious, never, &model(1, 0.9, 1), &llm, true).await.stage, Stage::Llm);
        assert_eq!(decide(VAGUE, always, &model(1, 0.9, 1), &llm, true).await.stage, Stage::Heuristic);
        let no_llm = decide(obvious, never, &model(1, 0.9, 1), &llm, false).await;
        assert_eq!(no_llm.stage, Stage::Model);
        assert_eq!(no_llm.stages.len(), 2, "the LLM stage did not run");
    }

    #[tokio::test]
    async fn a_missing_or_malformed_llm_answer_falls_back_to_the_best_earlier_answer() {
        for (llm, error) in [
            (FixedLlm(None), "llm unavailable"),
            (FixedLlm(Some("I think it is a refactor")), "not the requested JSON"),
            (
                FixedLlm(Some(r#"{"task_type": "chores", "complexity": "medium", "confidence": 0.9}"#)),
                "not the requested JSON",
            ),
        ] {
            let decision = decide(VAGUE, Thresholds::default(), &model(2, 0.45, 0), &llm, true).await;
            assert_eq!((decision.stage, TASK_TYPES[decision.guess.task_type]), (Stage::Model, "refactor"));
            let llm_stage = decision.stages.last().unwrap();
            assert!(llm_stage.error.as_deref().unwrap().contains(error), "{llm_stage:?}");
            assert!(!llm_stage.accepted);
        }
        let decision = decide(VAGUE, Thresholds::default(), &FixedModel(None), &FixedLlm(None), true).await;
        assert_eq!(decision.stage, Stage::Heuristic, "without a model the heuristic still answers");
        assert_eq!(decision.stages[1].error.as_deref(), Some("no serving model"));
        let sum: f32 = decision.probabilities.task_type.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "tempered probabilities still sum to one");
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
