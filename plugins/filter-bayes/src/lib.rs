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
//!   logged as an error and the message accepted without headers.
//!   The envelope is not used: training sees only messages, so tokens from
//!   it could never be learnt.
//! - `train` adds the messages' tokens to the model file (each message
//!   counts once per distinct token), prunes the rarest tokens when there
//!   are more than `max_tokens`, and writes `<model>.tmp`, then renames it
//!   over the model. Remove the model file to start over. `<model>.tmp`
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

use bayes::{Bayes, Level};
use config::Config;
use exports::poplar::plugin::filter::{self, Action, Envelope, Verdict};
use exports::poplar::plugin::trainer::{self, TrainingReport};
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

    fn classify(_env: Envelope, msg: &Message) -> Verdict {
        match with_bayes(|b, config| b.classify(config, msg, &mut log)) {
            Ok(verdict) => Verdict {
                action: match verdict.action {
                    bayes::Action::Accept => Action::Accept,
                    bayes::Action::FileInto(folder) => Action::FileInto(folder),
                },
                add_headers: verdict
                    .headers
                    .into_iter()
                    .map(|(name, value)| Header { name, value })
                    .collect(),
            },
            // Unreachable after a successful `validate`, unless the
            // configuration changed underneath: accept, as with no model.
            Err(why) => {
                log(Level::Error, &format!("{why}; message accepted unscored"));
                Verdict {
                    action: Action::Accept,
                    add_headers: Vec::new(),
                }
            }
        }
    }
}

impl trainer::Guest for Plugin {
    fn train(spam: Vec<Message>, ham: Vec<Message>) -> Result<TrainingReport, String> {
        let report = with_bayes(|b, config| b.train(config, spam, ham, &mut log))??;
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
