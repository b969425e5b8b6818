//! Which model serves a call, decided in a fixed order: the caller's explicit choice → an
//! A/B test the subject takes part in → the learned selector → the default (promoted A/B
//! winner, configured default, or the largest model the hardware runs well). Every decision
//! carries its reason and a sentence a person can read.

use crate::abtest;
use crate::hardware::SizeClass;
use crate::registry::RegisteredModel;

/// The features of the task a call serves, as numbers of the contract's enums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    pub task_type: i32,
    pub complexity: i32,
    pub language: i32,
    pub context_tokens: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Explicit,
    AbTest,
    Learned,
    Default,
    Fallback,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub model: String,
    pub reason: Reason,
    pub explanation: String,
    pub ab: Option<(String, String)>,
    pub expected_success: Option<f64>,
}

/// A running A/B test as selection needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningTest {
    pub id: String,
    pub name: String,
    /// (variant id, model, weight), control first.
    pub variants: Vec<(String, String, u32)>,
    pub task_types: Vec<i32>,
    pub complexities: Vec<i32>,
    pub languages: Vec<i32>,
}

impl RunningTest {
    fn covers(&self, features: &Features) -> bool {
        let within = |allowed: &[i32], value: i32| allowed.is_empty() || allowed.contains(&value);
        within(&self.task_types, features.task_type)
            && within(&self.complexities, features.complexity)
            && within(&self.languages, features.language)
    }
}

/// Recorded task outcomes of one model in the caller's task bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelHistory {
    pub model: String,
    pub tasks: i64,
    pub successes: i64,
    pub mean_cost_micros: f64,
}

/// Everything selection looks at, gathered by the caller.
#[derive(Debug, Clone, Default)]
pub struct Inputs<'a> {
    pub explicit: Option<&'a str>,
    pub features: Features,
    pub subject: &'a str,
    pub embedding: bool,
    pub tests: Vec<RunningTest>,
    pub history: Vec<ModelHistory>,
    pub learned_min_outcomes: i64,
    pub exploration: f64,
    pub promoted_default: Option<String>,
    pub configured_default: Option<String>,
    pub hardware: Option<SizeClass>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectionError {
    /// The named model is not in the registry; the available ones are listed.
    UnknownModel { model: String, available: Vec<String> },
    /// The registry offers no model for this kind of call.
    NoModel,
}

/// Chooses among `models` (the registry).
pub fn select(models: &[RegisteredModel], inputs: &Inputs<'_>) -> Result<Selection, SelectionError> {
    let usable = |id: &str| {
        models.iter().find(|m| m.id == id).filter(|m| {
            m.info.embedding == inputs.embedding
                && (inputs.features.context_tokens <= 0
                    || m.info.context_length <= 0
                    || i64::from(m.info.context_length) >= inputs.features.context_tokens)
        })
    };
    if let Some(explicit) = inputs.explicit {
        return match models.iter().find(|m| m.id == explicit) {
            Some(model) => Ok(Selection {
                model: model.id.clone(),
                reason: Reason::Explicit,
                explanation: format!("{explicit} was requested"),
                ab: None,
                expected_success: None,
            }),
            None => Err(SelectionError::UnknownModel {
                model: explicit.to_owned(),
                available: models
                    .iter()
                    .filter(|m| m.info.embedding == inputs.embedding)
                    .map(|m| m.id.clone())
                    .collect(),
            }),
        };
    }
    if !inputs.embedding {
        for test in inputs.tests.iter().filter(|t| t.covers(&inputs.features)) {
            let weights: Vec<u32> = test.variants.iter().map(|v| v.2).collect();
            let (variant, model, _) = &test.variants[abtest::assign(&test.id, inputs.subject, &weights)];
            if usable(model).is_some() {
                return Ok(Selection {
                    model: model.clone(),
                    reason: Reason::AbTest,
                    explanation: format!(
                        "A/B test {:?} assigned this subject to variant {variant}",
                        test.name
                    ),
                    ab: Some((test.id.clone(), variant.clone())),
                    expected_success: None,
                });
            }
        }
        if let Some(selection) = learned(inputs, &usable) {
            return Ok(selection);
        }
    }
    default(models, inputs, &usable)
}

/// Upper-confidence-bound choice of the best success per cost: a model's value is its
/// smoothed success rate divided by (1 + its mean cost in dollars), plus an exploration
/// bonus that shrinks as it is tried, scaled by the configured exploration rate.
fn learned<'m>(
    inputs: &Inputs<'_>,
    usable: &dyn Fn(&str) -> Option<&'m RegisteredModel>,
) -> Option<Selection> {
    let candidates: Vec<&ModelHistory> =
        inputs.history.iter().filter(|h| h.tasks > 0 && usable(&h.model).is_some()).collect();
    let total: i64 = candidates.iter().map(|h| h.tasks).sum();
    if total < inputs.learned_min_outcomes || candidates.is_empty() {
        return None;
    }
    let score = |h: &ModelHistory| {
        let success = (h.successes as f64 + 1.0) / (h.tasks as f64 + 2.0);
        let value = success / (1.0 + h.mean_cost_micros / 1_000_000.0);
        let bonus = inputs.exploration * (2.0 * (total as f64).ln() / h.tasks as f64).sqrt();
        (value + bonus, success)
    };
    let best = candidates.iter().max_by(|a, b| score(a).0.total_cmp(&score(b).0))?;
    let (_, success) = score(best);
    Some(Selection {
        model: best.model.clone(),
        reason: Reason::Learned,
        explanation: format!(
            "best success per cost for this kind of task: {} of {} tasks succeeded, mean cost ${:.4}",
            best.successes,
            best.tasks,
            best.mean_cost_micros / 1_000_000.0
        ),
        ab: None,
        expected_success: Some(success),
    })
}

fn default<'m>(
    models: &'m [RegisteredModel],
    inputs: &Inputs<'_>,
    usable: &dyn Fn(&str) -> Option<&'m RegisteredModel>,
) -> Result<Selection, SelectionError> {
    for (candidate, why) in [
        (&inputs.promoted_default, "promoted as the winner of an A/B test"),
        (&inputs.configured_default, "the configured default"),
    ] {
        if let Some(model) = candidate.as_deref().and_then(usable) {
            return Ok(Selection {
                model: model.id.clone(),
                reason: Reason::Default,
                explanation: format!("{} is {why}", model.id),
                ab: None,
                expected_success: None,
            });
        }
    }
    // Local models first (they cost nothing), the largest that the hardware runs well; then
    // anything usable.
    let limit = inputs.hardware.map(|size| (size.max_billions() * 1e9) as i64);
    let fits = |m: &&RegisteredModel| limit.is_none_or(|limit| m.info.parameter_count <= limit);
    let mut local: Vec<&RegisteredModel> =
        models.iter().filter(|m| !m.cloud && usable(&m.id).is_some()).filter(fits).collect();
    local.sort_by_key(|m| (m.info.parameter_count, std::cmp::Reverse(m.id.clone())));
    let chosen = local.last().copied().or_else(|| models.iter().find(|m| usable(&m.id).is_some()));
    let model = chosen.ok_or(SelectionError::NoModel)?;
    let explanation = match inputs.hardware {
        Some(size) if !model.cloud => {
            format!("the largest local model within the {} class this hardware runs well", size.label())
        }
        _ => "the only kind of model available".to_owned(),
    };
    Ok(Selection {
        model: model.id.clone(),
        reason: Reason::Default,
        explanation,
        ab: None,
        expected_success: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderModel;

    fn model(id: &str, billions: f64, cloud: bool) -> RegisteredModel {
        RegisteredModel {
            id: id.into(),
            provider: id.split('/').next().unwrap_or_default().into(),
            cloud,
            ollama: !cloud,
            info: ProviderModel {
                name: id.into(),
                parameter_count: (billions * 1e9) as i64,
                context_length: 8192,
                ..Default::default()
            },
            synced_at: chrono::Utc::now(),
        }
    }

    fn registry() -> Vec<RegisteredModel> {
        vec![
            model("ollama/small:1b", 1.0, false),
            model("ollama/coder:7b", 7.0, false),
            model("ollama/big:70b", 70.0, false),
            model("openai/gpt", 0.0, true),
        ]
    }

    fn test(id: &str) -> RunningTest {
        RunningTest {
            id: id.into(),
            name: "coder vs small".into(),
            variants: vec![
                ("control".into(), "ollama/coder:7b".into(), 50),
                ("candidate".into(), "ollama/small:1b".into(), 50),
            ],
            task_types: vec![1],
            complexities: vec![],
            languages: vec![],
        }
    }

    fn history(model: &str, tasks: i64, successes: i64) -> ModelHistory {
        ModelHistory { model: model.into(), tasks, successes, mean_cost_micros: 0.0 }
    }

    #[test]
    fn the_order_is_explicit_then_ab_then_learned_then_default() {
        let models = registry();
        let mut inputs = Inputs {
            explicit: Some("ollama/big:70b"),
            features: Features { task_type: 1, ..Default::default() },
            subject: "task-1",
            tests: vec![test("t1")],
            history: vec![history("ollama/small:1b", 40, 30), history("ollama/coder:7b", 40, 20)],
            learned_min_outcomes: 20,
            hardware: Some(SizeClass::B13),
            ..Default::default()
        };
        assert_eq!(select(&models, &inputs).unwrap().reason, Reason::Explicit);

        inputs.explicit = None;
        let chosen = select(&models, &inputs).unwrap();
        assert_eq!(chosen.reason, Reason::AbTest);
        assert_eq!(chosen.ab.as_ref().unwrap().0, "t1");

        inputs.features.task_type = 2; // outside the test's scope
        let chosen = select(&models, &inputs).unwrap();
        assert_eq!((chosen.reason, chosen.model.as_str()), (Reason::Learned, "ollama/small:1b"));
        assert!(chosen.explanation.contains("30 of 40"), "{}", chosen.explanation);

        inputs.history.clear();
        let chosen = select(&models, &inputs).unwrap();
        assert_eq!(
            (chosen.reason, chosen.model.as_str()),
            (Reason::Default, "ollama/coder:7b"),
            "largest within 13B"
        );
    }

    #[test]
    fn unknown_explicit_models_list_the_alternatives() {
        let inputs = Inputs { explicit: Some("ollama/nope"), ..Default::default() };
        match select(&registry(), &inputs) {
            Err(SelectionError::UnknownModel { available, .. }) => {
                assert!(available.contains(&"ollama/coder:7b".to_owned()))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_little_history_falls_through_to_the_default() {
        let inputs = Inputs {
            history: vec![history("ollama/small:1b", 5, 5)],
            learned_min_outcomes: 20,
            hardware: Some(SizeClass::B1),
            ..Default::default()
        };
        let chosen = select(&registry(), &inputs).unwrap();
        assert_eq!((chosen.reason, chosen.model.as_str()), (Reason::Default, "ollama/small:1b"));
    }

    #[test]
    fn exploration_favours_the_less_tried_model_when_results_are_close() {
        let mut inputs = Inputs {
            history: vec![history("ollama/small:1b", 200, 120), history("ollama/coder:7b", 5, 3)],
            learned_min_outcomes: 20,
            ..Default::default()
        };
        inputs.exploration = 0.0;
        assert_eq!(select(&registry(), &inputs).unwrap().model, "ollama/small:1b");
        inputs.exploration = 0.5;
        assert_eq!(select(&registry(), &inputs).unwrap().model, "ollama/coder:7b");
    }

    #[test]
    fn promoted_and_configured_defaults_come_before_hardware() {
        let mut inputs = Inputs {
            configured_default: Some("openai/gpt".into()),
            hardware: Some(SizeClass::B70),
            ..Default::default()
        };
        assert_eq!(select(&registry(), &inputs).unwrap().model, "openai/gpt");
        inputs.promoted_default = Some("ollama/small:1b".into());
        assert_eq!(select(&registry(), &inputs).unwrap().model, "ollama/small:1b");
    }

    #[test]
    fn models_too_small_for_the_context_are_skipped() {
        let mut models = registry();
        models[2].info.context_length = 2048;
        let inputs = Inputs {
            features: Features { context_tokens: 4000, ..Default::default() },
            hardware: Some(SizeClass::B70),
            ..Default::default()
        };
        assert_eq!(select(&models, &inputs).unwrap().model, "ollama/coder:7b");
    }

    #[test]
    fn nothing_usable_is_an_error() {
        assert_eq!(select(&[], &Inputs::default()), Err(SelectionError::NoModel));
    }
}
