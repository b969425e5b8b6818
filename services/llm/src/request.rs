//! Generation requests validated into domain types at the edge: every limit the contract
//! documents is checked here, and all violations are reported together.

use codingagent_kernel::error::FieldViolation;
use codingagent_kernel::validate;
use codingagent_proto::codingagent::llm::v1 as pb;
use serde::Serialize;

pub const MAX_MESSAGES: usize = 256;
pub const MAX_CONTENT_CHARS: usize = 1_000_000;
pub const MAX_STOP_SEQUENCES: usize = 4;
pub const MAX_STOP_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Sampling options after validation. Unset values are left to the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Options {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub json: bool,
}

impl Options {
    /// Only an explicit temperature of 0 is deterministic; a model's default is not.
    pub fn is_deterministic(&self) -> bool {
        self.temperature == Some(0.0)
    }
}

/// A chat prompt ready for a provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prompt {
    pub messages: Vec<Message>,
    pub options: Options,
}

/// Validates the prompt and options of `Generate`/`GenerateOnce`.
pub fn prompt(
    messages: &[pb::ChatMessage],
    options: Option<&pb::GenerationOptions>,
) -> Result<Prompt, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if messages.is_empty() {
        violations.push(FieldViolation::new("messages", "at least one message is required"));
    }
    if messages.len() > MAX_MESSAGES {
        violations.push(FieldViolation::new("messages", format!("at most {MAX_MESSAGES} messages")));
    }
    let mut validated = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let field = |name: &str| format!("messages[{index}].{name}");
        let role = match pb::Role::try_from(message.role) {
            Ok(pb::Role::System) => Some(Role::System),
            Ok(pb::Role::User) => Some(Role::User),
            Ok(pb::Role::Assistant) => Some(Role::Assistant),
            Ok(pb::Role::Tool) => Some(Role::Tool),
            Ok(pb::Role::Unspecified) | Err(_) => {
                violations.push(FieldViolation::new(field("role"), "a role is required"));
                None
            }
        };
        if role == Some(Role::System) && index != 0 {
            violations.push(FieldViolation::new(field("role"), "the system message must come first"));
        }
        if message.content.trim().is_empty() && role != Some(Role::Assistant) {
            violations.push(FieldViolation::new(field("content"), "must not be empty"));
        }
        if message.content.chars().count() > MAX_CONTENT_CHARS {
            violations.push(FieldViolation::new(
                field("content"),
                format!("at most {MAX_CONTENT_CHARS} characters"),
            ));
        } else if let Err(violation) = validate::text(&field("content"), &message.content) {
            violations.push(violation);
        }
        if role == Some(Role::Tool) && message.name.is_empty() {
            violations.push(FieldViolation::new(field("name"), "tool messages name their tool"));
        }
        if let Err(violation) = validate::text(&field("name"), &message.name) {
            violations.push(violation);
        }
        if let Some(role) = role {
            let name = (!message.name.is_empty()).then(|| message.name.clone());
            validated.push(Message { role, content: message.content.clone(), name });
        }
    }
    let options = match options {
        Some(options) => validate_options(options, &mut violations),
        None => Options::default(),
    };
    if violations.is_empty() { Ok(Prompt { messages: validated, options }) } else { Err(violations) }
}

fn validate_options(options: &pb::GenerationOptions, violations: &mut Vec<FieldViolation>) -> Options {
    if let Some(t) = options.temperature
        && !(0.0..=2.0).contains(&t)
    {
        violations.push(FieldViolation::new("options.temperature", "must be between 0 and 2"));
    }
    if let Some(p) = options.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        violations.push(FieldViolation::new("options.top_p", "must be greater than 0 and at most 1"));
    }
    if let Some(m) = options.max_tokens
        && m < 1
    {
        violations.push(FieldViolation::new("options.max_tokens", "must be at least 1"));
    }
    if options.stop.len() > MAX_STOP_SEQUENCES {
        violations
            .push(FieldViolation::new("options.stop", format!("at most {MAX_STOP_SEQUENCES} sequences")));
    }
    for (index, stop) in options.stop.iter().enumerate() {
        let length = stop.chars().count();
        if length == 0 || length > MAX_STOP_CHARS {
            violations.push(FieldViolation::new(
                format!("options.stop[{index}]"),
                format!("must be 1..{MAX_STOP_CHARS} characters"),
            ));
        } else if let Err(violation) = validate::text(&format!("options.stop[{index}]"), stop) {
            violations.push(violation);
        }
    }
    let json = match pb::ResponseFormat::try_from(options.response_format) {
        Ok(pb::ResponseFormat::Json) => true,
        Ok(pb::ResponseFormat::Text | pb::ResponseFormat::Unspecified) => false,
        Err(_) => {
            violations.push(FieldViolation::new("options.response_format", "unknown response format"));
            false
        }
    };
    Options {
        temperature: options.temperature,
        top_p: options.top_p,
        max_tokens: options.max_tokens.and_then(|m| u32::try_from(m).ok()),
        stop: options.stop.clone(),
        seed: options.seed,
        json,
    }
}

/// A model id is `<provider>/<name>`; the name may itself contain slashes and colons.
pub fn model_id(field: &str, id: &str) -> Result<(String, String), FieldViolation> {
    validate::text(field, id)?;
    match id.split_once('/') {
        Some((provider, name)) if !provider.is_empty() && !name.is_empty() && id.len() <= 256 => {
            Ok((provider.to_owned(), name.to_owned()))
        }
        _ => Err(FieldViolation::new(
            field,
            "must be `<provider>/<model name>`, e.g. `ollama/qwen2.5-coder:7b`",
        )),
    }
}

/// Violations of the free-text rule (no NUL or other control characters) among `fields`.
pub fn texts(fields: &[(&str, &str)]) -> Vec<FieldViolation> {
    fields.iter().filter_map(|(field, value)| validate::text(field, value).err()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> pb::ChatMessage {
        pb::ChatMessage { role: pb::Role::User as i32, content: text.into(), name: String::new() }
    }

    fn fields(result: Result<Prompt, Vec<FieldViolation>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_plain_prompt_passes() {
        let prompt = prompt(&[user("hello")], None).unwrap();
        assert_eq!(prompt.messages[0].role, Role::User);
        assert!(!prompt.options.is_deterministic());
    }

    #[test]
    fn empty_and_malformed_messages_are_named() {
        assert_eq!(fields(prompt(&[], None)), ["messages"]);
        let unspecified = pb::ChatMessage { role: 0, content: "x".into(), name: String::new() };
        let late_system =
            pb::ChatMessage { role: pb::Role::System as i32, content: "x".into(), name: String::new() };
        assert_eq!(
            fields(prompt(&[user("  "), unspecified, late_system], None)),
            ["messages[0].content", "messages[1].role", "messages[2].role"]
        );
    }

    #[test]
    fn absurd_options_are_rejected_together() {
        let options = pb::GenerationOptions {
            temperature: Some(2.5),
            top_p: Some(0.0),
            max_tokens: Some(-5),
            stop: vec![String::new(), "a".into(), "b".into(), "c".into(), "d".into()],
            ..Default::default()
        };
        assert_eq!(
            fields(prompt(&[user("hi")], Some(&options))),
            ["options.temperature", "options.top_p", "options.max_tokens", "options.stop", "options.stop[0]"]
        );
    }

    #[test]
    fn only_explicit_zero_temperature_is_deterministic() {
        let zero = pb::GenerationOptions { temperature: Some(0.0), ..Default::default() };
        assert!(prompt(&[user("hi")], Some(&zero)).unwrap().options.is_deterministic());
        let warm = pb::GenerationOptions { temperature: Some(0.7), ..Default::default() };
        assert!(!prompt(&[user("hi")], Some(&warm)).unwrap().options.is_deterministic());
    }

    #[test]
    fn control_characters_are_refused_in_every_text_field() {
        let tool =
            pb::ChatMessage { role: pb::Role::Tool as i32, content: "4\u{1}2".into(), name: "calc\0".into() };
        let options = pb::GenerationOptions { stop: vec!["\0".into()], ..Default::default() };
        assert_eq!(
            fields(prompt(&[user("hi\0"), tool], Some(&options))),
            ["messages[0].content", "messages[1].content", "messages[1].name", "options.stop[0]"]
        );
        assert!(prompt(&[user("tabs\tand\nnewlines\r\n are text")], None).is_ok());
        assert!(model_id("model", "ollama/qwen\0").is_err());
    }

    #[test]
    fn model_ids_name_their_provider() {
        assert_eq!(
            model_id("model", "ollama/qwen2.5-coder:7b").unwrap(),
            ("ollama".into(), "qwen2.5-coder:7b".into())
        );
        assert_eq!(model_id("model", "openai/org/model").unwrap().1, "org/model");
        for bad in ["", "qwen", "/x", "ollama/"] {
            assert!(model_id("model", bad).is_err(), "{bad}");
        }
    }
}
