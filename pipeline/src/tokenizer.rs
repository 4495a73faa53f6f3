//! Tokenizer and chat template of a checkpoint: `tokenizer.json` through the `tokenizers` crate,
//! the Jinja chat template (`chat_template.jinja`, `chat_template.json` or
//! `tokenizer_config.json`'s `chat_template`) through minijinja with Python-compatible string
//! methods, as transformers renders it.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("chat template of {path} is invalid: {reason}")]
    Template { path: PathBuf, reason: String },
    #[error("tokenizing failed: {0}")]
    Encode(String),
    #[error("decoding failed: {0}")]
    Decode(String),
}

/// One chat message, in the shape chat templates expect: plain text, or a list of typed parts
/// (`{"type": "image"}`, `{"type": "text", "text": ...}`) that the template turns into placeholders.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Image,
    Text { text: String },
}

impl Message {
    pub fn user(content: impl Into<String>) -> Message {
        Message {
            role: "user".into(),
            content: Content::Text(content.into()),
        }
    }

    /// A user turn with one image before the text, as the reference processor's examples put it.
    pub fn user_with_image(text: impl Into<String>) -> Message {
        Message {
            role: "user".into(),
            content: Content::Parts(vec![Part::Image, Part::Text { text: text.into() }]),
        }
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    template_source: PathBuf,
    /// The chat template, parsed once at load.
    templates: Environment<'static>,
    /// Tokens that end generation: the config's eos ids and the template's end-of-turn marker.
    stop_tokens: Vec<u32>,
}

impl Tokenizer {
    /// Loads the tokenizer of checkpoint `dir`. `config_eos` are the model config's eos ids.
    pub fn open(dir: &Path, config_eos: &[u32]) -> Result<Tokenizer, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| TokenizerError::Load {
            path: path.clone(),
            reason: e.to_string(),
        })?;

        let config_path = dir.join("tokenizer_config.json");
        let tokenizer_config: Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| TokenizerError::Load {
                path: config_path.clone(),
                reason: e.to_string(),
            })?,
            Err(_) => Value::Null,
        };
        let jinja_path = dir.join("chat_template.jinja");
        // transformers' order: chat_template.jinja, then the processor's chat_template.json,
        // then the tokenizer config's field.
        let json_path = dir.join("chat_template.json");
        let json_template = match std::fs::read_to_string(&json_path) {
            Ok(text) => {
                let value: Value =
                    serde_json::from_str(&text).map_err(|e| TokenizerError::Load {
                        path: json_path.clone(),
                        reason: e.to_string(),
                    })?;
                let template = value.get("chat_template").and_then(Value::as_str);
                Some(
                    template
                        .map(str::to_string)
                        .ok_or_else(|| TokenizerError::Template {
                            path: json_path.clone(),
                            reason: "no `chat_template` string".into(),
                        })?,
                )
            }
            Err(_) => None,
        };
        let (template_source, template) = if let Ok(t) = std::fs::read_to_string(&jinja_path) {
            (jinja_path, t)
        } else if let Some(t) = json_template {
            (json_path, t)
        } else if let Some(t) = tokenizer_config
            .get("chat_template")
            .and_then(Value::as_str)
        {
            (config_path.clone(), t.to_string())
        } else {
            return Err(TokenizerError::Template {
                path: config_path,
                reason:
                    "no chat template (neither chat_template.jinja, chat_template.json nor a `chat_template` field)"
                        .into(),
            });
        };

        let mut stop_tokens: Vec<u32> = config_eos.to_vec();
        let eos_text = tokenizer_config.get("eos_token").and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.get("content").and_then(Value::as_str).map(str::to_string))
        });
        for text in eos_text
            .iter()
            .map(String::as_str)
            .chain(["<|im_end|>", "<|endoftext|>"])
        {
            if let Some(id) = inner.token_to_id(text) {
                stop_tokens.push(id);
            }
        }
        stop_tokens.sort_unstable();
        stop_tokens.dedup();

        let mut templates = Environment::new();
        minijinja_contrib::add_to_environment(&mut templates);
        templates.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        templates.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        templates
            .add_template_owned("chat", template)
            .map_err(|e| TokenizerError::Template {
                path: template_source.clone(),
                reason: format!("{e:#}"),
            })?;
        let tokenizer = Tokenizer {
            inner,
            template_source,
            templates,
            stop_tokens,
        };
        // Render once now so a broken template is reported at load, not at the first request.
        tokenizer.render_chat(&[Message::user("test")], true)?;
        Ok(tokenizer)
    }

    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Renders the chat template the way transformers' `apply_chat_template` does.
    pub fn render_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template_error = |e: minijinja::Error| TokenizerError::Template {
            path: self.template_source.clone(),
            reason: format!("{e:#}"),
        };
        self.templates
            .get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => "",
                    eos_token => "<|im_end|>",
                })
            })
            .map_err(template_error)
    }

    /// Encodes text that already contains special-token markup; no extra tokens are added, as
    /// with transformers' chat-template tokenization.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// A streaming decoder that yields text only once it forms complete UTF-8 characters.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream {
            inner: self.inner.decode_stream(true),
        }
    }
}

/// Turns generated token ids into text pieces as they arrive; a multi-byte character split over
/// several byte-level tokens is held back until it is complete.
pub struct TextStream<'a> {
    inner: tokenizers::tokenizer::DecodeStream<
        'a,
        tokenizers::ModelWrapper,
        tokenizers::NormalizerWrapper,
        tokenizers::PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        tokenizers::DecoderWrapper,
    >,
}

impl TextStream<'_> {
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.inner
            .step(id)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }
}
