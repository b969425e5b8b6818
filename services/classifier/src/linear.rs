//! Multinomial logistic regression: the model family tract runs in microseconds. Trained here
//! in Rust (full-batch gradient descent with momentum and L2), evaluated in Rust, and exported
//! to ONNX (`onnx.rs`) so serving runs the exact same arithmetic through tract.

/// Weights laid out `[feature][class]`, the ONNX `MatMul` layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    pub dimensions: usize,
    pub classes: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

/// One training example: its non-zero features (hashed text features are mostly zero), its
/// class index and how much it counts (1 for a whole example).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub features: Vec<(usize, f32)>,
    pub label: usize,
    pub weight: f32,
}

impl Example {
    pub fn new(dense: &[f32], label: usize) -> Self {
        Self { features: sparse(dense), label, weight: 1.0 }
    }
}

/// The non-zero entries of `dense`.
pub fn sparse(dense: &[f32]) -> Vec<(usize, f32)> {
    dense.iter().copied().enumerate().filter(|(_, v)| *v != 0.0).collect()
}

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Training {
    pub epochs: usize,
    pub learning_rate: f32,
    pub l2: f32,
    pub momentum: f32,
}

impl Default for Training {
    fn default() -> Self {
        Self { epochs: 300, learning_rate: 0.5, l2: 1e-4, momentum: 0.9 }
    }
}

impl LinearModel {
    pub fn zeros(dimensions: usize, classes: usize) -> Self {
        Self { dimensions, classes, weights: vec![0.0; dimensions * classes], bias: vec![0.0; classes] }
    }

    /// Class probabilities (softmax of the logits).
    pub fn probabilities(&self, features: &[f32]) -> Vec<f32> {
        let mut logits = self.bias.clone();
        for (feature, value) in features.iter().enumerate().filter(|(_, v)| **v != 0.0) {
            let row = &self.weights[feature * self.classes..(feature + 1) * self.classes];
            for (logit, weight) in logits.iter_mut().zip(row) {
                *logit += value * weight;
            }
        }
        softmax(&mut logits);
        logits
    }

    /// The most probable class and its probability.
    pub fn predict(&self, features: &[f32]) -> (usize, f32) {
        let probabilities = self.probabilities(features);
        probabilities.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((0, 0.0))
    }

    /// Fits the model to `examples`, weighting classes inversely to their (weighted) frequency
    /// so rare classes are not drowned out, and each example by its own weight. With every
    /// weight 1 the arithmetic is exactly the unweighted one.
    pub fn train(examples: &[Example], dimensions: usize, classes: usize, settings: Training) -> Self {
        Self::train_with_progress(examples, dimensions, classes, settings, &mut |_| {})
    }

    /// [`Self::train`], calling `progress` with the number of epochs done after each one.
    pub fn train_with_progress(
        examples: &[Example],
        dimensions: usize,
        classes: usize,
        settings: Training,
        progress: &mut dyn FnMut(usize),
    ) -> Self {
        let mut model = Self::zeros(dimensions, classes);
        if examples.is_empty() {
            return model;
        }
        let mut counts = vec![0.0_f32; classes];
        for example in examples {
            counts[example.label] += example.weight;
        }
        let count: f32 = counts.iter().sum();
        let class_weight: Vec<f32> =
            counts.iter().map(|&c| if c <= 0.0 { 0.0 } else { count / (classes as f32 * c) }).collect();
        let total_weight: f32 = examples.iter().map(|e| e.weight * class_weight[e.label]).sum();
        if total_weight <= 0.0 {
            return model;
        }
        let mut velocity_w = vec![0.0_f32; dimensions * classes];
        let mut velocity_b = vec![0.0_f32; classes];
        let mut gradient_w = vec![0.0_f32; dimensions * classes];
        let mut gradient_b = vec![0.0_f32; classes];
        for epoch in 0..settings.epochs {
            gradient_w.iter_mut().for_each(|g| *g = 0.0);
            gradient_b.iter_mut().for_each(|g| *g = 0.0);
            for example in examples {
                let row = &example.features;
                let mut logits = model.bias.clone();
                for &(feature, value) in row {
                    let weights = &model.weights[feature * classes..(feature + 1) * classes];
                    for (logit, weight) in logits.iter_mut().zip(weights) {
                        *logit += value * weight;
                    }
                }
                softmax(&mut logits);
                let weight = example.weight * class_weight[example.label] / total_weight;
                for (class, probability) in logits.iter().enumerate() {
                    let error = weight * (probability - if class == example.label { 1.0 } else { 0.0 });
                    gradient_b[class] += error;
                    for &(feature, value) in row {
                        gradient_w[feature * classes + class] += error * value;
                    }
                }
            }
            for ((w, v), g) in model.weights.iter_mut().zip(&mut velocity_w).zip(&gradient_w) {
                *v = settings.momentum * *v - settings.learning_rate * (g + settings.l2 * *w);
                *w += *v;
            }
            for ((b, v), g) in model.bias.iter_mut().zip(&mut velocity_b).zip(&gradient_b) {
                *v = settings.momentum * *v - settings.learning_rate * g;
                *b += *v;
            }
            progress(epoch + 1);
        }
        model
    }
}

fn softmax(logits: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for logit in logits.iter_mut() {
        *logit = (*logit - max).exp();
        sum += *logit;
    }
    logits.iter_mut().for_each(|l| *l /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two well-separated clusters per class in 4 dimensions.
    fn toy() -> Vec<Example> {
        let mut examples = Vec::new();
        for i in 0..60 {
            let jitter = (i % 7) as f32 * 0.01;
            examples.push(Example::new(&[1.0 + jitter, 0.0, 0.1, 0.0], 0));
            examples.push(Example::new(&[0.0, 1.0 - jitter, 0.0, 0.1], 1));
            if i % 3 == 0 {
                examples.push(Example::new(&[0.0, 0.1, 1.0, jitter], 2));
            }
        }
        examples
    }

    #[test]
    fn probabilities_sum_to_one() {
        let model = LinearModel {
            dimensions: 2,
            classes: 3,
            weights: vec![1.0, -1.0, 0.5, 0.0, 2.0, -2.0],
            bias: vec![0.1, 0.2, 0.3],
        };
        let p = model.probabilities(&[0.3, 0.7]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p.iter().all(|x| *x > 0.0));
    }

    #[test]
    fn training_separates_separable_classes_including_a_rare_one() {
        let examples = toy();
        let model = LinearModel::train(&examples, 4, 3, Training::default());
        let dense = |e: &Example| {
            let mut v = vec![0.0; 4];
            e.features.iter().for_each(|&(i, x)| v[i] = x);
            v
        };
        let correct = examples.iter().filter(|e| model.predict(&dense(e)).0 == e.label).count();
        assert_eq!(correct, examples.len());
        let (class, confidence) = model.predict(&[0.0, 0.0, 1.0, 0.0]);
        assert_eq!(class, 2, "the rare class is learned too");
        assert!(confidence > 0.8);
    }

    #[test]
    fn an_example_counts_by_its_weight() {
        let base = LinearModel::train(&toy(), 4, 3, Training { epochs: 20, ..Training::default() });
        let mut with_ignored = toy();
        with_ignored.push(Example { weight: 0.0, ..Example::new(&[5.0, 0.0, 0.0, 5.0], 2) });
        let ignored = LinearModel::train(&with_ignored, 4, 3, Training { epochs: 20, ..Training::default() });
        assert_eq!(ignored, base, "a weightless example changes nothing");
        let mut with_counted = toy();
        with_counted.push(Example::new(&[5.0, 0.0, 0.0, 5.0], 2));
        let counted = LinearModel::train(&with_counted, 4, 3, Training { epochs: 20, ..Training::default() });
        assert_ne!(counted, base);
    }

    #[test]
    fn training_is_deterministic() {
        let a = LinearModel::train(&toy(), 4, 3, Training { epochs: 20, ..Training::default() });
        let b = LinearModel::train(&toy(), 4, 3, Training { epochs: 20, ..Training::default() });
        assert_eq!(a, b);
    }
}
