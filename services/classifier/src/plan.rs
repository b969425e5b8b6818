//! From a classification to a plan: which strategy the orchestrator should run and roughly how
//! many tokens that costs. These are priors, not learned values: the orchestrator may
//! override the strategy, and the estimate only feeds budget checks before a run starts.

use codingagent_proto::codingagent::common::v1::{Strategy, TokenUsage};

/// Task-type indices (see [`crate::heuristic::TASK_TYPES`]) whose work stays local even when
/// it is labelled complex: documentation and dependency changes rarely need several agents.
const CONTAINED: [usize; 2] = [4, 5];

/// Repositories above this many files make even a simple change a search problem.
const LARGE_REPOSITORY_FILES: i64 = 10_000;

/// The recommended strategy and tokens for a task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub strategy: Strategy,
    pub strategy_confidence: f64,
    pub tokens: (i64, i64),
    pub tokens_confidence: f64,
}

/// Plans a task of `task_type` and `complexity` (indices) for a request of `text_chars`
/// characters in a repository of `file_count` files (0 when unknown).
pub fn plan(
    task_type: usize,
    complexity: usize,
    complexity_confidence: f64,
    text_chars: usize,
    file_count: i64,
) -> Plan {
    let mut strategy = match complexity {
        0 => Strategy::SingleShot,
        1 => Strategy::Iterative,
        _ => Strategy::MultiAgent,
    };
    if strategy == Strategy::MultiAgent && CONTAINED.contains(&task_type) {
        strategy = Strategy::Iterative;
    }
    if strategy == Strategy::SingleShot && file_count > LARGE_REPOSITORY_FILES {
        strategy = Strategy::Iterative;
    }
    let (input, output) = match strategy {
        Strategy::SingleShot => (8_000.0, 2_000.0),
        Strategy::Iterative => (40_000.0, 8_000.0),
        _ => (150_000.0, 30_000.0),
    };
    // Larger repositories mean more context read per step; grows slowly.
    let scale = 1.0 + 0.25 * (1.0 + file_count.max(0) as f64 / 1_000.0).ln();
    let prompt = text_chars as f64 / 4.0;
    Plan {
        strategy,
        strategy_confidence: complexity_confidence,
        tokens: ((input * scale + prompt).round() as i64, (output * scale).round() as i64),
        // The token prior has never been fitted to outcomes; it is right within a factor of
        // two less often than the complexity it follows.
        tokens_confidence: complexity_confidence * 0.5,
    }
}

impl Plan {
    pub fn token_usage(&self) -> TokenUsage {
        TokenUsage { input_tokens: self.tokens.0, output_tokens: self.tokens.1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complexity_picks_the_strategy_adjusted_by_type_and_size() {
        assert_eq!(plan(0, 0, 0.8, 100, 0).strategy, Strategy::SingleShot);
        assert_eq!(plan(1, 1, 0.8, 100, 0).strategy, Strategy::Iterative);
        assert_eq!(plan(1, 2, 0.8, 100, 0).strategy, Strategy::MultiAgent);
        assert_eq!(plan(4, 2, 0.8, 100, 0).strategy, Strategy::Iterative, "docs stay contained");
        assert_eq!(plan(0, 0, 0.8, 100, 50_000).strategy, Strategy::Iterative, "large repository");
    }

    #[test]
    fn estimates_grow_with_strategy_repository_and_request() {
        let simple = plan(0, 0, 0.8, 100, 0).tokens;
        let complex = plan(1, 2, 0.8, 100, 0).tokens;
        assert!(complex.0 > simple.0 * 10 && complex.1 > simple.1 * 10);
        assert!(plan(1, 1, 0.8, 100, 5_000).tokens.0 > plan(1, 1, 0.8, 100, 0).tokens.0);
        assert!(plan(1, 1, 0.8, 8_000, 0).tokens.0 > plan(1, 1, 0.8, 100, 0).tokens.0);
        assert!(plan(1, 1, 0.8, 100, 0).tokens_confidence < 0.8);
    }
}
