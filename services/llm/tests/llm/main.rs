//! The llm service through its real `serve()` on port 0, against the real PostgreSQL, Redis
//! and Kafka, a real OpenAI-compatible model server (llama.cpp with a small model, started by
//! `./dev`), and an HTTP double that replays Ollama's documented payloads.
#![allow(clippy::unwrap_used)]

mod authorization;
mod budgets;
mod cancellation;
mod catalogue;
mod harness;
mod ollama;
mod openai;
mod routing;
