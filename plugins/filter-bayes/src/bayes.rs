//! The plugin's three calls (`validate`, `classify`, `train`) on plain Rust
//! types, so that they can be tested natively; `lib.rs` only converts to and
//! from the WIT types. Keeps the model loaded between calls on the same
//! instance and re-reads it when the file changes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::classify;
use crate::config::Config;
use crate::model::{Model, Writer};
use crate::source::{MessageSource, scan};
use crate::tokenize::tokens;

/// Severity of a log line (mapped onto the host's levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Where log lines go.
pub type Log<'a> = &'a mut dyn FnMut(Level, &str);

/// What to do with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    FileInto(String),
}

/// A classification: the action and the header fields to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub headers: Vec<(String, String)>,
}

/// One labelled message for [`Bayes::train`].
pub struct Lesson<M> {
    pub msg: M,
    /// Spam (`true`) or ham.
    pub spam: bool,
    /// Take the message back instead of learning it.
    pub unlearn: bool,
}

/// What a training call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub learned: u32,
    pub summary: String,
}

/// What the cached model was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    path: PathBuf,
    len: u64,
    mtime: Option<SystemTime>,
}

impl Key {
    /// The file's current identity; `None` when it does not exist.
    fn of(path: &Path) -> Result<Option<Key>, String> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(Key {
                path: path.to_owned(),
                len: meta.len(),
                mtime: meta.modified().ok(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read model {}: {e}", path.display())),
        }
    }
}

/// The plugin's state between calls: the loaded model.
#[derive(Debug, Default)]
pub struct Bayes {
    loaded: Option<(Key, Model)>,
}

impl Bayes {
    pub const fn new() -> Self {
        Bayes { loaded: None }
    }

    /// The current model, read again if the file changed since it was
    /// cached; `None` when there is no model file.
    fn model(&mut self, path: &Path, log: Log<'_>) -> Result<Option<&Model>, String> {
        let Some(key) = Key::of(path)? else {
            self.loaded = None;
            return Ok(None);
        };
        // Without a modification time changes cannot be seen: always re-read.
        let fresh = key.mtime.is_some() && self.loaded.as_ref().is_some_and(|(k, _)| *k == key);
        if !fresh {
            self.loaded = None;
            // The key holds the metadata from before the read, so a change
            // racing with the read shows up as a change on the next call.
            if let Some(model) = Model::load(path)? {
                log(
                    Level::Info,
                    &format!(
                        "loaded model {}: {} spam, {} ham, {} tokens",
                        path.display(),
                        model.spam,
                        model.ham,
                        model.tokens.len()
                    ),
                );
                self.loaded = Some((key, model));
            }
        }
        Ok(self.loaded.as_ref().map(|(_, m)| m))
    }

    /// Checks that the model's directory is visible and that the model, if
    /// there is one, can be read.
    pub fn validate(&mut self, config: &Config, log: Log<'_>) -> Result<(), String> {
        let dir = config.model.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            return Err(format!(
                "model directory {} is not visible to the plugin (grant it in `dirs`)",
                dir.display()
            ));
        }
        if self.model(&config.model, log)?.is_none() {
            log(
                Level::Warn,
                &format!(
                    "no model at {} yet: every message scores 0.5 until `poplar filter train` has learnt {} spam and {} ham",
                    config.model.display(),
                    config.min_learned,
                    config.min_learned
                ),
            );
        }
        Ok(())
    }

    /// Classifies one message. Without a model yet (or one that has not
    /// learnt `min_learned` of each kind) the message is accepted, scored
    /// 0.5 and marked untrained. A model that cannot be read is an error:
    /// the filter cannot decide, and the host applies its failure policy.
    pub fn classify(
        &mut self,
        config: &Config,
        msg: &impl MessageSource,
        log: Log<'_>,
    ) -> Result<Verdict, String> {
        let accept = |headers| Verdict {
            action: Action::Accept,
            headers,
        };
        let model = self.model(&config.model, log)?;
        let model = model.filter(|m| m.spam.min(m.ham) >= config.min_learned.max(1));
        let Some(model) = model else {
            return Ok(accept(vec![
                header("X-Spam-Score", "0.500"),
                header("X-Spam-Bayes", "untrained"),
            ]));
        };
        let tokens = tokens(&scan(msg, config.max_scan));
        // Compare what the header shows, so that 0.8996 ("0.900") is spam
        // at threshold 0.9.
        let score = (classify::score(model, &tokens) * 1000.0).round() / 1000.0;
        let mut headers = vec![header("X-Spam-Score", &format!("{score:.3}"))];
        if score < config.threshold {
            return Ok(accept(headers));
        }
        headers.push(header("X-Spam-Flag", "YES"));
        let action = if config.file_spam {
            Action::FileInto(config.junk_folder.clone())
        } else {
            Action::Accept
        };
        Ok(Verdict { action, headers })
    }

    /// Adds labelled messages to the stored model, or takes them back
    /// (`unlearn`). Each message is read (at most `max_scan` octets) and
    /// dropped before the next one. The model is written atomically, and
    /// only one training at a time can change it (see [`Writer`]).
    pub fn train<M: MessageSource>(
        &mut self,
        config: &Config,
        lessons: Vec<Lesson<M>>,
        log: Log<'_>,
    ) -> Result<Report, String> {
        let path = &config.model;
        // Held until the new model is in place, so that trainings running
        // at the same time cannot lose each other's additions.
        let writer = Writer::lock(path)?;
        self.model(path, log)
            .map_err(|e| format!("{e}; remove it to start over"))?;
        let mut model = self.loaded.take().map(|(_, m)| m).unwrap_or_default();
        // [learnt, unlearnt] x [spam, ham]
        let mut done = [[0u32; 2]; 2];
        for lesson in lessons {
            let tokens = tokens(&scan(&lesson.msg, config.max_scan));
            if lesson.unlearn {
                model.unlearn(&tokens, lesson.spam);
            } else {
                model.learn(&tokens, lesson.spam);
            }
            done[usize::from(lesson.unlearn)][usize::from(!lesson.spam)] += 1;
        }
        let changed: u32 = done.iter().flatten().sum();
        let pruned = model.prune(config.max_tokens);
        if changed > 0 || pruned > 0 {
            writer.commit(&model)?;
        }
        let [[new_spam, new_ham], [old_spam, old_ham]] = done;
        let unlearnt = if old_spam + old_ham > 0 {
            format!(", unlearnt {old_spam} spam and {old_ham} ham")
        } else {
            String::new()
        };
        let summary = format!(
            "learnt {new_spam} spam and {new_ham} ham{unlearnt}; {} now holds {} spam, {} ham, {} tokens{}",
            path.display(),
            model.spam,
            model.ham,
            model.tokens.len(),
            if pruned > 0 {
                format!(" ({pruned} rare tokens pruned)")
            } else {
                String::new()
            }
        );
        log(Level::Info, &summary);
        self.loaded = Key::of(path)?.map(|key| (key, model));
        Ok(Report {
            learned: changed,
            summary,
        })
    }
}

fn header(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{Raw, TempDir};

    struct Fixture {
        _dir: TempDir,
        config: Config,
        bayes: Bayes,
        logs: Vec<(Level, String)>,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = TempDir::new();
            let config = Config {
                model: dir.path().join("bayes.model"),
                min_learned: 2,
                ..Config::default()
            };
            Fixture {
                _dir: dir,
                config,
                bayes: Bayes::new(),
                logs: Vec::new(),
            }
        }

        fn try_classify(&mut self, text: &str) -> Result<Verdict, String> {
            let logs = &mut self.logs;
            self.bayes
                .classify(&self.config, &Raw::new(text.as_bytes()), &mut |l, m| {
                    logs.push((l, m.to_owned()))
                })
        }

        fn classify(&mut self, text: &str) -> Verdict {
            self.try_classify(text).unwrap()
        }

        fn train(&mut self, spam: &[&str], ham: &[&str]) -> Result<Report, String> {
            self.lessons(&lessons(spam, ham, false))
        }

        fn lessons(&mut self, lessons: &[(&str, bool, bool)]) -> Result<Report, String> {
            let lessons = lessons
                .iter()
                .map(|&(text, spam, unlearn)| Lesson {
                    msg: Raw::new(text.as_bytes()),
                    spam,
                    unlearn,
                })
                .collect();
            let logs = &mut self.logs;
            self.bayes.train(&self.config, lessons, &mut |l, m| {
                logs.push((l, m.to_owned()))
            })
        }

        fn validate(&mut self) -> Result<(), String> {
            let logs = &mut self.logs;
            self.bayes
                .validate(&self.config, &mut |l, m| logs.push((l, m.to_owned())))
        }
    }

    /// (text, spam, unlearn) for every message of `spam` and `ham`.
    fn lessons<'a>(spam: &[&'a str], ham: &[&'a str], unlearn: bool) -> Vec<(&'a str, bool, bool)> {
        let spam = spam.iter().map(|&t| (t, true, unlearn));
        spam.chain(ham.iter().map(|&t| (t, false, unlearn)))
            .collect()
    }

    const SPAM: &[&str] = &[
        "Subject: cheap pills\n\nbuy cheap pills online pharmacy\n",
        "Subject: pharmacy deal\n\ncheap pharmacy pills discount\n",
    ];
    const HAM: &[&str] = &[
        "Subject: meeting\n\nagenda for the project meeting\n",
        "Subject: project\n\nthe project review meeting moved\n",
    ];

    #[test]
    fn missing_model_scores_neutral() {
        let mut f = Fixture::new();
        f.validate().unwrap();
        assert!(f.logs[0].1.contains("no model"), "{:?}", f.logs);
        let verdict = f.classify(SPAM[0]);
        assert_eq!(verdict.action, Action::Accept);
        assert_eq!(
            verdict.headers,
            [
                header("X-Spam-Score", "0.500"),
                header("X-Spam-Bayes", "untrained")
            ]
        );
    }

    #[test]
    fn corrupt_model_fails_validate_and_is_not_trained_over() {
        let mut f = Fixture::new();
        std::fs::write(&f.config.model, "poplar-bayes 1 1 1 5\ncheap\t1\t0\n").unwrap();
        let err = f.validate().unwrap_err();
        assert!(
            err.contains("corrupt model") && err.contains("truncated"),
            "{err}"
        );
        // The filter cannot decide: the host applies its failure policy.
        let err = f.try_classify(SPAM[0]).unwrap_err();
        assert!(err.contains("corrupt model"), "{err}");
        let err = f.train(SPAM, HAM).unwrap_err();
        assert!(err.contains("remove it to start over"), "{err}");
    }

    #[test]
    fn one_training_at_a_time() {
        let mut f = Fixture::new();
        let other = Writer::lock(&f.config.model).unwrap();
        let err = f.train(SPAM, HAM).unwrap_err();
        assert!(err.contains("another training is running"), "{err}");
        drop(other);
        f.train(SPAM, HAM).unwrap();
    }

    #[test]
    fn missing_directory_fails_validate() {
        let mut f = Fixture::new();
        f.config.model = f.config.model.join("nowhere/bayes.model");
        let err = f.validate().unwrap_err();
        assert!(err.contains("not visible"), "{err}");
    }

    #[test]
    fn training_accumulates_and_classifies() {
        let mut f = Fixture::new();
        let report = f.train(&SPAM[..1], &HAM[..1]).unwrap();
        assert_eq!(report.learned, 2);
        // Below min_learned (2 of each): still untrained.
        assert!(
            f.classify(SPAM[1])
                .headers
                .contains(&header("X-Spam-Bayes", "untrained"))
        );

        let report = f.train(&SPAM[1..], &HAM[1..]).unwrap();
        assert_eq!(report.learned, 2);
        assert!(
            report.summary.contains("2 spam, 2 ham"),
            "{}",
            report.summary
        );
        let model = Model::load(&f.config.model).unwrap().unwrap();
        assert_eq!((model.spam, model.ham), (2, 2));
        assert_eq!(model.counts("pharmacy").spam, 2);
        assert_eq!(model.counts("subject:meeting").ham, 1);

        let verdict = f.classify("Subject: cheap pharmacy\n\npills pills discount\n");
        assert_eq!(verdict.action, Action::FileInto("Junk".into()));
        assert_eq!(verdict.headers[1], header("X-Spam-Flag", "YES"));
        let score: f64 = verdict.headers[0].1.parse().unwrap();
        assert!(score >= 0.9, "{score}");

        let verdict = f.classify("Subject: project agenda\n\nreview meeting\n");
        assert_eq!(verdict.action, Action::Accept);
        assert_eq!(verdict.headers.len(), 1);
        let score: f64 = verdict.headers[0].1.parse().unwrap();
        assert!(score < 0.1, "{score}");

        f.config.file_spam = false;
        let verdict = f.classify(SPAM[0]);
        assert_eq!(verdict.action, Action::Accept);
        assert_eq!(verdict.headers[1], header("X-Spam-Flag", "YES"));
    }

    #[test]
    fn unlearning_takes_a_lesson_back() {
        let mut f = Fixture::new();
        f.train(SPAM, HAM).unwrap();
        let before = Model::load(&f.config.model).unwrap().unwrap();
        // A ham message filed as spam by mistake, then corrected.
        let mistake = "Subject: meeting pills\n\nproject pharmacy agenda\n";
        f.lessons(&[(mistake, true, false)]).unwrap();
        let report = f
            .lessons(&[(mistake, true, true), (mistake, false, false)])
            .unwrap();
        assert_eq!(report.learned, 2);
        assert!(
            report
                .summary
                .contains("learnt 0 spam and 1 ham, unlearnt 1 spam and 0 ham"),
            "{}",
            report.summary
        );
        let after = Model::load(&f.config.model).unwrap().unwrap();
        assert_eq!((after.spam, after.ham), (2, 3));
        // The spam side is as before the mistake; the ham side learnt it.
        assert_eq!(
            after.counts("pharmacy").spam,
            before.counts("pharmacy").spam
        );
        assert_eq!(
            after.counts("pharmacy").ham,
            before.counts("pharmacy").ham + 1
        );
        assert_eq!(after.counts("agenda").spam, 0);
        assert_eq!(after.counts("agenda").ham, 2);

        // Taking back what was never learnt stops at zero and leaves a
        // model the file format accepts.
        let never = "Subject: unseen\n\nzebra quokka\n";
        let many: Vec<_> = (0..5).map(|_| (never, true, true)).collect();
        f.lessons(&many).unwrap();
        let model = Model::load(&f.config.model).unwrap().unwrap();
        assert_eq!(model.spam, 0);
        assert!(model.tokens.values().all(|c| c.spam == 0));
        assert_eq!(model.counts("zebra"), Default::default());
        f.lessons(&lessons(SPAM, HAM, true)).unwrap();
        let model = Model::load(&f.config.model).unwrap().unwrap();
        assert_eq!((model.spam, model.ham), (0, 1));
    }

    #[test]
    fn cache_follows_the_file() {
        let mut f = Fixture::new();
        f.train(SPAM, HAM).unwrap();
        let loads = |f: &Fixture| {
            f.logs
                .iter()
                .filter(|(_, m)| m.starts_with("loaded"))
                .count()
        };
        // Training left its result in the cache: no re-read.
        f.classify(SPAM[0]);
        assert_eq!(loads(&f), 0);
        // Another writer (a second instance training) replaces the file.
        let mut other = Model::load(&f.config.model).unwrap().unwrap();
        other.learn(&["brand-new".to_owned()], false);
        other.save(&f.config.model).unwrap();
        f.classify(SPAM[0]);
        assert_eq!(loads(&f), 1);
        f.classify(SPAM[0]);
        assert_eq!(loads(&f), 1);
        // Removed: back to untrained.
        std::fs::remove_file(&f.config.model).unwrap();
        assert_eq!(
            f.classify(SPAM[0]).headers[1],
            header("X-Spam-Bayes", "untrained")
        );
    }

    #[test]
    fn pruning_caps_the_stored_model() {
        let mut f = Fixture::new();
        f.config.max_tokens = 1000;
        let spam: Vec<String> = (0..30)
            .map(|i| {
                let words: Vec<String> = (0..100).map(|j| format!("w{i}x{j}")).collect();
                format!("Subject: s\n\ncommon {}\n", words.join(" "))
            })
            .collect();
        let spam: Vec<&str> = spam.iter().map(String::as_str).collect();
        let report = f.train(&spam, HAM).unwrap();
        assert!(
            report.summary.contains("rare tokens pruned"),
            "{}",
            report.summary
        );
        let model = Model::load(&f.config.model).unwrap().unwrap();
        assert!(model.tokens.len() <= 1000);
        assert_eq!(model.counts("common").spam, 30);
        assert_eq!(model.spam, 30);
    }
}
