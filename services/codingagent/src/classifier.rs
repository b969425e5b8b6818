//! `codingagent classifier …`: the classifier's offline tools.

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(crate) enum ClassifierCommand {
    /// Train a model from a corpus file and write its ONNX artifact and evaluation report.
    /// To retrain a running classifier on the samples in its database, call its Retrain RPC
    /// (see services/classifier/README.md).
    Train {
        /// JSON-lines corpus, gzip-compressed (DATA.md describes the format).
        #[arg(long, default_value = "services/classifier/corpus/seed.jsonl.gz")]
        corpus: PathBuf,
        /// Where the ONNX model goes.
        #[arg(long, default_value = "services/classifier/model/seed.onnx")]
        model: PathBuf,
        /// Where the Markdown evaluation report goes.
        #[arg(long, default_value = "services/classifier/MODEL.md")]
        report: PathBuf,
        #[arg(long, default_value_t = 300)]
        epochs: usize,
    },
}

pub(crate) fn run(command: ClassifierCommand) -> anyhow::Result<()> {
    match command {
        ClassifierCommand::Train { corpus, model, report, epochs } => {
            let run = codingagent_classifier::train_command::train(&corpus, &model, &report, epochs)?;
            eprintln!(
                "task type: accuracy {:.3}, macro F1 {:.3} (heuristic {:.3}, majority {:.3}) on {} held-out samples; \
                 wrote {} and {}",
                run.candidate.task_type.accuracy(),
                run.candidate.task_type.macro_f1(),
                run.heuristic.task_type.macro_f1(),
                run.majority.task_type.macro_f1(),
                run.holdout_count,
                model.display(),
                report.display()
            );
            Ok(())
        }
    }
}
