//! How good a model is, measured the same way for every candidate: accuracy, per-class
//! precision/recall/F1, macro F1 and the confusion matrix on a fixed held-out split.
//! Promotion compares candidates by macro F1, so a model cannot win by ignoring rare classes.

/// Results on one labelled set.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub labels: Vec<String>,
    /// `confusion[actual][predicted]`.
    pub confusion: Vec<Vec<u32>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u32,
}

impl Report {
    /// Builds the confusion matrix from (actual, predicted) pairs.
    pub fn new(labels: &[String], pairs: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let n = labels.len();
        let mut confusion = vec![vec![0u32; n]; n];
        for (actual, predicted) in pairs {
            confusion[actual][predicted] += 1;
        }
        Self { labels: labels.to_vec(), confusion }
    }

    pub fn total(&self) -> u32 {
        self.confusion.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u32 = (0..self.labels.len()).map(|i| self.confusion[i][i]).sum();
        ratio(correct, self.total())
    }

    pub fn class(&self, index: usize) -> ClassScores {
        let true_positives = self.confusion[index][index];
        let predicted: u32 = self.confusion.iter().map(|row| row[index]).sum();
        let support: u32 = self.confusion[index].iter().sum();
        let precision = ratio(true_positives, predicted);
        let recall = ratio(true_positives, support);
        let f1 =
            if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        ClassScores { precision, recall, f1, support }
    }

    /// Mean F1 over classes that occur in the set.
    pub fn macro_f1(&self) -> f64 {
        let present: Vec<f64> =
            (0..self.labels.len()).map(|i| self.class(i)).filter(|c| c.support > 0).map(|c| c.f1).collect();
        if present.is_empty() { 0.0 } else { present.iter().sum::<f64>() / present.len() as f64 }
    }

    /// A Markdown table of per-class scores and the confusion matrix, for MODEL.md.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "accuracy {:.3}, macro F1 {:.3}, {} examples\n\n| class | precision | recall | F1 | support |\n|---|---|---|---|---|\n",
            self.accuracy(),
            self.macro_f1(),
            self.total()
        );
        for (index, label) in self.labels.iter().enumerate() {
            let c = self.class(index);
            out.push_str(&format!(
                "| {label} | {:.3} | {:.3} | {:.3} | {} |\n",
                c.precision, c.recall, c.f1, c.support
            ));
        }
        out.push_str("\nconfusion (rows: actual, columns: predicted)\n\n| |");
        out.push_str(&self.labels.iter().map(|l| format!(" {l} |")).collect::<String>());
        out.push_str(&format!("\n|---|{}\n", "---|".repeat(self.labels.len())));
        for (label, row) in self.labels.iter().zip(&self.confusion) {
            out.push_str(&format!(
                "| {label} |{}\n",
                row.iter().map(|n| format!(" {n} |")).collect::<String>()
            ));
        }
        out
    }
}

fn ratio(numerator: u32, denominator: u32) -> f64 {
    if denominator == 0 { 0.0 } else { f64::from(numerator) / f64::from(denominator) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["bug", "feature", "docs"].map(String::from).to_vec()
    }

    #[test]
    fn scores_match_a_hand_computed_example() {
        // bug: 8 right, 2 called feature; feature: 5 right, 1 called bug; docs: 2 right, 2 called feature.
        let mut pairs = vec![(0, 0); 8];
        pairs.extend([(0, 1), (0, 1), (1, 0), (2, 1), (2, 1)]);
        pairs.extend(vec![(1, 1); 5]);
        pairs.extend(vec![(2, 2); 2]);
        let report = Report::new(&labels(), pairs);
        assert_eq!(report.total(), 20);
        assert!((report.accuracy() - 15.0 / 20.0).abs() < 1e-12);
        let bug = report.class(0);
        assert!((bug.precision - 8.0 / 9.0).abs() < 1e-12 && (bug.recall - 0.8).abs() < 1e-12);
        let feature = report.class(1);
        assert!((feature.precision - 5.0 / 9.0).abs() < 1e-12 && (feature.recall - 5.0 / 6.0).abs() < 1e-12);
        let docs = report.class(2);
        assert!((docs.precision - 1.0).abs() < 1e-12 && (docs.recall - 0.5).abs() < 1e-12);
        let expected_macro = (bug.f1 + feature.f1 + docs.f1) / 3.0;
        assert!((report.macro_f1() - expected_macro).abs() < 1e-12);
        assert!(report.markdown().contains("| docs | 1.000 | 0.500 | 0.667 | 4 |"), "{}", report.markdown());
    }

    #[test]
    fn always_majority_scores_poorly_on_macro_f1() {
        let pairs = (0..90).map(|_| (0, 0)).chain((0..10).map(|_| (1, 0)));
        let report = Report::new(&labels(), pairs);
        assert!((report.accuracy() - 0.9).abs() < 1e-12);
        assert!(report.macro_f1() < 0.5, "accuracy hides what macro F1 shows");
    }
}
