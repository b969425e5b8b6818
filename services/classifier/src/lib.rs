//! CodingAgent's classifier: decides what kind of work a request is and how hard it is. This
//! crate holds its model pipeline — the versioned feature extractor, a multinomial logistic
//! regression trained in Rust, the ONNX graph it is exported as, and serving through tract —
//! which the classifier service (issue 4) builds on.

pub mod cascade;
pub mod evaluation;
pub mod features;
pub mod heuristic;
pub mod linear;
pub mod onnx;
pub mod slot;
