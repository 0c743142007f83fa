//! `filter-bayes`: a trainable naive-Bayes spam filter for Poplar (world
//! `trainable-filter-plugin`).
//!
//! This file is only glue between the WIT world and the plain Rust in the
//! other modules; copy it as a template for your own filter.
//!
//! # Configuration (`[<plugin>.config]`)
//!
//! | key           | default              | meaning |
//! |---------------|----------------------|---------|
//! | `model`       | `"/data/bayes.model"`| absolute path of the model file, inside a preopened directory (writable for training) |
//! | `threshold`   | `0.9`                | messages scoring at least this are spam (above 0, at most 1) |
//! | `junk_folder` | `"Junk"`             | the folder spam is filed into |
//! | `file_spam`   | `true`               | file spam into `junk_folder`; `false` only adds the headers |
//! | `max_scan`    | `262144`             | octets of a message read at most, header block included (up to 64 MiB) |
//! | `max_tokens`  | `200000`             | tokens the model keeps at most (at least 1000) |
//! | `min_learned` | `10`                 | spam and ham messages each the model must have learnt before it is used |
//!
//! Other keys are refused.
//!
//! # Behaviour
//!
//! - `validate` fails when the model's directory is not visible or the
//!   model file is corrupt; a missing model file is fine (not trained yet).
//! - `classify` reads the header fields and the first `max_scan` octets in
//!   64 KiB reads, finds the text in them (MIME parts, base64,
//!   quoted-printable, HTML; see [`tokenize`]) and scores it with
//!   Robinson's token probabilities and Fisher's chi-square combining (see
//!   [`classify`]). It adds `X-Spam-Score: 0.973` (three decimals); at or
//!   above `threshold` also `X-Spam-Flag: YES`, and the message is filed
//!   into `junk_folder` (if `file_spam`). Without a model, or before it has
//!   learnt `min_learned` spam and ham, it adds `X-Spam-Score: 0.500` and
//!   `X-Spam-Bayes: untrained` and accepts. A model that cannot be read is
//!   an error (`classify` returns `err`): the host applies the chain entry's
//!   `on_failure` policy and logs the reason.
//!   The envelope is not used: the model holds message tokens only.
//! - `train` takes examples of class `spam` or `ham` (any other class is an
//!   error naming it, and nothing of the batch is learnt). It adds each
//!   message's tokens to the model file (each message counts once per
//!   distinct token), or with `unlearn` takes them back (counts never go
//!   below zero; a correction is an `unlearn` of the wrong class plus a
//!   lesson of the right one). There is one global model: an example's
//!   `principal` and `envelope` are ignored. It prunes the rarest tokens
//!   when there are more than `max_tokens`, and writes `<model>.tmp`, then
//!   renames it over the model. Remove the model file to start over.
//!   `<model>.tmp`
//!   exists from the start of a training call to its end and keeps other
//!   trainings out (they fail, saying so); one left behind by an
//!   interrupted training is taken over after 15 minutes.
//! - The model is kept between calls on the same instance and read again
//!   when the file's size or modification time changes. Its format is in
//!   [`model`].

wit_bindgen::generate!({ path: "../../wit", world: "trainable-filter-plugin" });

pub mod bayes;
pub mod classify;
pub mod config;
#[cfg(test)]
mod corpus;
pub mod html;
pub mod mime;
pub mod model;
pub mod source;
#[cfg(test)]
mod test_util;
pub mod tokenize;

use std::sync::Mutex;

use bayes::{Bayes, Lesson, Level};
use config::Config;
use exports::poplar::plugin::filter::{self, Action, Envelope, Verdict};
use exports::poplar::plugin::trainer::{self, Example, TrainingReport};
use poplar::plugin::host;
use poplar::plugin::message::Message;
use poplar::plugin::types::Header;

/// The loaded model survives between calls on the same instance.
static BAYES: Mutex<Bayes> = Mutex::new(Bayes::new());

fn log(level: Level, message: &str) {
    let level = match level {
        Level::Info => host::Level::Info,
        Level::Warn => host::Level::Warn,
        Level::Error => host::Level::Error,
    };
    host::log(level, message);
}

fn with_bayes<T>(f: impl FnOnce(&mut Bayes, &Config) -> T) -> Result<T, String> {
    let config = Config::from_pairs(&host::config())?;
    let mut bayes = BAYES.lock().unwrap_or_else(|e| e.into_inner());
    Ok(f(&mut bayes, &config))
}

impl source::MessageSource for Message {
    fn size(&self) -> u64 {
        Message::size(self)
    }

    fn headers(&self) -> Vec<(String, String)> {
        Message::headers(self)
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect()
    }

    fn read(&self, offset: u64, len: u32) -> Vec<u8> {
        Message::read(self, offset, len)
    }
}

struct Plugin;

impl filter::Guest for Plugin {
    fn validate() -> Result<(), String> {
        with_bayes(|b, config| b.validate(config, &mut log))?
    }

    fn classify(_env: Envelope, msg: &Message) -> Result<Verdict, String> {
        let verdict = with_bayes(|b, config| b.classify(config, msg, &mut log))??;
        Ok(Verdict {
            action: match verdict.action {
                bayes::Action::Accept => Action::Accept,
                bayes::Action::FileInto(folder) => Action::FileInto(folder),
            },
            add_headers: verdict
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
        })
    }
}

impl trainer::Guest for Plugin {
    fn train(examples: Vec<Example>) -> Result<TrainingReport, String> {
        // Every class is checked before anything is learnt, so a batch with
        // a typo changes nothing.
        let mut lessons = Vec::with_capacity(examples.len());
        for (i, example) in examples.into_iter().enumerate() {
            let spam = match example.class.as_str() {
                "spam" => true,
                "ham" => false,
                other => {
                    return Err(format!(
                        "example {}: unknown class {other:?}: this filter learns only \"spam\" and \"ham\"",
                        i + 1
                    ));
                }
            };
            // One global model: `principal` and `envelope` are not used.
            lessons.push(Lesson {
                msg: example.msg,
                spam,
                unlearn: example.unlearn,
            });
        }
        let report = with_bayes(|b, config| b.train(config, lessons, &mut log))??;
        Ok(TrainingReport {
            learned: report.learned,
            summary: report.summary,
        })
    }
}

// Only the wasm build exports the component's functions: their symbol names
// cannot be linked into a native library (which `cargo test` builds).
#[cfg(target_arch = "wasm32")]
export!(Plugin);
