//! The plugin configuration, read from the host's flattened key/value list.

use std::path::PathBuf;

/// Largest `max_scan` accepted (64 MiB): more would only cost time.
pub const MAX_SCAN_LIMIT: u64 = 64 * 1024 * 1024;

/// The plugin configuration (see the table in `lib.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The model file, as the plugin sees it (inside a preopened directory).
    pub model: PathBuf,
    /// Messages scoring at least this much are spam.
    pub threshold: f64,
    /// Where spam is filed when `file_spam` is on.
    pub junk_folder: String,
    /// Octets of a message read at most (header block included).
    pub max_scan: u64,
    /// File spam into `junk_folder`; when off, only add the headers.
    pub file_spam: bool,
    /// Largest number of distinct tokens the model keeps.
    pub max_tokens: usize,
    /// Spam and ham messages each that must have been learnt before the
    /// model is used; until then every message scores 0.5.
    pub min_learned: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: PathBuf::from("/data/bayes.model"),
            threshold: 0.9,
            junk_folder: "Junk".to_owned(),
            max_scan: 256 * 1024,
            file_spam: true,
            max_tokens: 200_000,
            min_learned: 10,
        }
    }
}

impl Config {
    /// Reads the flattened config table. Unknown keys are errors, so that a
    /// misspelt option is noticed rather than silently ignored.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Config, String> {
        let mut config = Config::default();
        for (key, value) in pairs {
            let value = value.as_str();
            match key.as_str() {
                "model" => config.model = PathBuf::from(value),
                "threshold" => config.threshold = number(key, value)?,
                "junk_folder" => config.junk_folder = value.to_owned(),
                "max_scan" => config.max_scan = number(key, value)?,
                "file_spam" => config.file_spam = number(key, value)?,
                "max_tokens" => config.max_tokens = number(key, value)?,
                "min_learned" => config.min_learned = number(key, value)?,
                _ => return Err(format!("config: unknown key {key:?}")),
            }
        }
        if !config.model.is_absolute() || config.model.file_name().is_none() {
            return Err(format!(
                "config: model must be the absolute path of a file, not {:?}",
                config.model
            ));
        }
        if !(config.threshold > 0.0 && config.threshold <= 1.0) {
            return Err(format!(
                "config: threshold must be above 0 and at most 1, not {}",
                config.threshold
            ));
        }
        let folder = &config.junk_folder;
        if folder.is_empty()
            || folder.starts_with('.')
            || folder.contains('/')
            || folder.chars().any(char::is_control)
        {
            return Err(format!(
                "config: junk_folder {folder:?} is not a valid folder name"
            ));
        }
        if !(1..=MAX_SCAN_LIMIT).contains(&config.max_scan) {
            return Err(format!(
                "config: max_scan must be between 1 and {MAX_SCAN_LIMIT} octets"
            ));
        }
        if config.max_tokens < 1000 {
            return Err("config: max_tokens must be at least 1000".to_owned());
        }
        Ok(config)
    }
}

/// Parses a value given as TOML text (numbers and booleans arrive so).
fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("config: {key} has an invalid value {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_pairs(&pairs)
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(parse(&[]).unwrap(), Config::default());
        let c = parse(&[
            ("model", "/var/bayes/m"),
            ("threshold", "0.95"),
            ("junk_folder", "Spam"),
            ("max_scan", "65_536"),
            ("file_spam", "false"),
            ("max_tokens", "5000"),
            ("min_learned", "0"),
        ])
        .unwrap();
        assert_eq!(c.model, PathBuf::from("/var/bayes/m"));
        assert_eq!(c.threshold, 0.95);
        assert_eq!(c.junk_folder, "Spam");
        assert_eq!(c.max_scan, 65536);
        assert!(!c.file_spam);
        assert_eq!(c.max_tokens, 5000);
        assert_eq!(c.min_learned, 0);
    }

    #[test]
    fn bad_values_are_named() {
        for (key, value) in [
            ("threshold", "1.5"),
            ("threshold", "0"),
            ("threshold", "high"),
            ("junk_folder", ""),
            ("junk_folder", "a/b"),
            ("junk_folder", ".Junk"),
            ("max_scan", "0"),
            ("max_scan", "-1"),
            ("file_spam", "yes"),
            ("max_tokens", "10"),
            ("model", ""),
            ("model", "bayes.model"),
            ("model", "/data/.."),
            ("colour", "red"),
        ] {
            let err = parse(&[(key, value)]).unwrap_err();
            assert!(err.contains(key), "{key}={value}: {err}");
        }
    }
}
