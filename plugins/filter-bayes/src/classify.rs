//! Scoring a message's tokens against the model: Gary Robinson's token
//! probabilities combined with Fisher's chi-square method, as SpamBayes
//! does.
//!
//! - A token seen in `s` of `S` spam and `h` of `H` ham messages has the
//!   raw probability `p = (s/S) / (s/S + h/H)`, which is pulled towards 0.5
//!   when the token is rare: `f = (0.45 * 0.5 + n * p) / (0.45 + n)` with
//!   `n = s + h`.
//! - Only the [`MAX_CLUES`] tokens furthest from 0.5 count, and only those
//!   at least [`MIN_STRENGTH`] away from it.
//! - Spamminess `S = 1 - Q(-2 Σ ln(1-f), 2k)` and hamminess
//!   `H = 1 - Q(-2 Σ ln f, 2k)` (Q is the chi-square survival function with
//!   `2k` degrees of freedom for `k` clues); the score is `(1 + S - H) / 2`.
//!   It is near 1 for spam, near 0 for ham, and near 0.5 when the evidence
//!   is weak or points both ways.

use crate::model::{Counts, Model};

/// How strongly the prior (0.5) weighs against a token's own counts.
const PRIOR_STRENGTH: f64 = 0.45;
/// Probability given to a token never seen.
const PRIOR: f64 = 0.5;
/// Tokens closer to 0.5 than this are ignored.
pub const MIN_STRENGTH: f64 = 0.1;
/// Most tokens taken into account.
pub const MAX_CLUES: usize = 150;

/// The spam probability of one token.
pub fn token_probability(model: &Model, counts: Counts) -> f64 {
    let spam_ratio = f64::from(counts.spam) / f64::from(model.spam.max(1));
    let ham_ratio = f64::from(counts.ham) / f64::from(model.ham.max(1));
    let n = f64::from(counts.spam) + f64::from(counts.ham);
    if spam_ratio + ham_ratio == 0.0 {
        return PRIOR;
    }
    let p = spam_ratio / (spam_ratio + ham_ratio);
    (PRIOR_STRENGTH * PRIOR + n * p) / (PRIOR_STRENGTH + n)
}

/// The score of a message's distinct tokens: 0 (ham) to 1 (spam).
pub fn score(model: &Model, tokens: &[String]) -> f64 {
    let mut clues: Vec<(f64, &str)> = tokens
        .iter()
        .map(|t| (token_probability(model, model.counts(t)), t.as_str()))
        .filter(|(p, _)| (p - 0.5).abs() >= MIN_STRENGTH)
        .collect();
    // Strongest first; ties in token order, so that scores are repeatable.
    clues.sort_unstable_by(|a, b| {
        (b.0 - 0.5)
            .abs()
            .total_cmp(&(a.0 - 0.5).abs())
            .then(a.1.cmp(b.1))
    });
    clues.truncate(MAX_CLUES);
    if clues.is_empty() {
        return 0.5;
    }
    let (mut ln_ham, mut ln_spam) = (0.0, 0.0);
    for (p, _) in &clues {
        ln_ham += p.ln();
        ln_spam += (1.0 - p).ln();
    }
    let dof = 2 * clues.len();
    let spam = 1.0 - chi2_survival(-2.0 * ln_spam, dof);
    let ham = 1.0 - chi2_survival(-2.0 * ln_ham, dof);
    ((1.0 + spam - ham) / 2.0).clamp(0.0, 1.0)
}

/// P(X ≥ x2) for a chi-square variable with an even number of degrees of
/// freedom `dof`: `e^-m Σ_{i<dof/2} m^i / i!` with `m = x2 / 2`.
fn chi2_survival(x2: f64, dof: usize) -> f64 {
    let m = x2 / 2.0;
    let mut term = (-m).exp();
    let mut sum = term;
    for i in 1..dof / 2 {
        term *= m / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let mut m = Model::default();
        for i in 0..20 {
            let spam = i % 2 == 0;
            let mut tokens: Vec<String> = if spam {
                vec!["pills".into(), "cheap".into(), "hello".into()]
            } else {
                vec!["meeting".into(), "agenda".into(), "hello".into()]
            };
            if i < 4 {
                tokens.push("cheap".into());
                tokens.dedup();
                tokens.push("lunch".into());
            }
            m.learn(&tokens, spam);
        }
        m
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn token_probabilities() {
        let m = model();
        let p = |t: &str| token_probability(&m, m.counts(t));
        assert!(p("pills") > 0.95);
        assert!(p("meeting") < 0.05);
        assert_eq!(p("hello"), 0.5);
        assert_eq!(p("never-seen"), 0.5);
        // Rare tokens stay closer to 0.5 than frequent ones.
        let mut rare = m.clone();
        rare.learn(&words("once"), true);
        assert!(token_probability(&rare, rare.counts("once")) < p("pills"));
    }

    #[test]
    fn scores() {
        let m = model();
        assert!(score(&m, &words("pills cheap hello")) > 0.95);
        assert!(score(&m, &words("meeting agenda hello")) < 0.01);
        assert_eq!(score(&m, &words("hello unknown")), 0.5);
        assert_eq!(score(&m, &[]), 0.5);
        let mixed = score(&m, &words("pills meeting"));
        assert!((0.3..0.7).contains(&mixed), "{mixed}");
    }

    #[test]
    fn chi2_known_values() {
        // With 2 degrees of freedom Q(x) = e^(-x/2).
        assert!((chi2_survival(2.0, 2) - (-1.0f64).exp()).abs() < 1e-12);
        // Q(4, 4) = e^-2 (1 + 2).
        assert!((chi2_survival(4.0, 4) - 3.0 * (-2.0f64).exp()).abs() < 1e-12);
        assert_eq!(chi2_survival(0.0, 10), 1.0);
    }
}
