//! The server's world: a temporary folder with a passwd-file, a
//! self-signed certificate, a Maildir corpus per user and a `poplar.toml`,
//! like `tests/e2e/harness.rs` prepares for the end-to-end tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::corpus::{Generator, Kind, Rng, SizeModel};

/// The password of user `u<N>`.
pub fn password(user: &str) -> String {
    format!("pw-{user}")
}

/// The domain recipients are addressed in over LMTP.
pub const DOMAIN: &str = "bench.test";

/// How the passwd-file stores the passwords. Both servers verify both
/// (Poplar's auth-passwd and Dovecot's passwd-file passdb).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum PasswordScheme {
    /// `{PLAIN}pw-u0`: the cost of logging in without the hash.
    #[value(name = "plain")]
    #[serde(rename = "PLAIN")]
    Plain,
    /// `{SHA512-CRYPT}$6$...` (5000 rounds, hashed with `openssl passwd
    /// -6`): what a production passwd-file holds; each login costs a few
    /// ms of CPU in either server.
    #[value(name = "sha512-crypt")]
    #[serde(rename = "SHA512-CRYPT")]
    Sha512Crypt,
}

impl PasswordScheme {
    pub fn name(self) -> &'static str {
        match self {
            PasswordScheme::Plain => "PLAIN",
            PasswordScheme::Sha512Crypt => "SHA512-CRYPT",
        }
    }
}

pub struct SetupOptions {
    pub users: usize,
    pub scheme: PasswordScheme,
    pub messages: usize,
    /// 0: no filter; 1: filter-rules; 2: filter-rules and a second filter.
    pub filters: u8,
    pub sizes: SizeModel,
    pub seed: u64,
    pub plugins: PathBuf,
    pub cache_dir: PathBuf,
    pub poplar: PathBuf,
}

/// Statistics of the generated Maildir corpus (CRLF sizes, as LIST
/// reports them).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CorpusStats {
    pub messages: u64,
    pub total_octets: u64,
    pub median_octets: u64,
    pub max_octets: u64,
}

pub struct Prepared {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub corpus: CorpusStats,
    /// The filter chain, by name, e.g. `["rules", "bayes"]`.
    pub chain: Vec<String>,
}

impl Prepared {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

pub fn prepare(opts: &SetupOptions) -> Result<Prepared> {
    let dir = tempfile::Builder::new()
        .prefix("poplar-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let root = dir.path();
    for d in ["etc", "mail", "bayes"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(
        root.join("etc/passwd"),
        passwd_file(opts.users, opts.scheme)?,
    )?;
    poplar::net::tls::ensure_self_signed(&root.join("cert.pem"), &root.join("key.pem"))?;
    let corpus = write_corpus(root, opts)?;

    let mut chain = Vec::new();
    let mut filters = String::new();
    let rules_wasm = opts.plugins.join("filter_rules.wasm");
    let bayes_wasm = opts.plugins.join("filter_bayes.wasm");
    if opts.filters >= 1 {
        chain.push("rules".to_string());
        filters.push_str(&rules_filter("rules", &rules_wasm, RULES));
    }
    if opts.filters >= 2 {
        if bayes_wasm.is_file() {
            chain.push("bayes".to_string());
            filters.push_str(&bayes_filter(&bayes_wasm));
        } else {
            chain.push("rules2".to_string());
            filters.push_str(&rules_filter("rules2", &rules_wasm, RULES2));
        }
    }
    let chain_toml: Vec<String> = chain
        .iter()
        .map(|f| format!("{{ filter = \"{f}\", on_failure = \"tempfail\" }}"))
        .collect();
    let config = format!(
        r#"# Written by poplar-bench.
[server]
hostname = "mail.{DOMAIN}"
max_connections = 100000
max_connections_per_ip = 100000

[[listener]]
address = "127.0.0.1:0"
tls = "starttls"

[[listener]]
address = "127.0.0.1:0"
tls = "implicit"

[tls]
cert = "cert.pem"
key = "key.pem"

[pop3]
plaintext_auth = "always"

[runtime]
cache_dir = "{cache}"

[auth]
path = "{plugins}/auth_passwd.wasm"
dirs = [{{ host = "etc", guest = "/etc/poplar" }}]
[auth.config]
file = "/etc/poplar/passwd"

[storage]
path = "{plugins}/storage_maildir.wasm"
dirs = [{{ host = "mail", guest = "/mail", writable = true }}]
[storage.config]
root = "/mail"

[lmtp]
listen = ["127.0.0.1:0"]

[delivery]
chain = [{chain}]
{filters}"#,
        cache = toml_path(&opts.cache_dir),
        plugins = toml_path(&opts.plugins),
        chain = chain_toml.join(", "),
    );
    let config_path = root.join("poplar.toml");
    std::fs::write(&config_path, config)?;
    if chain.iter().any(|f| f == "bayes") {
        train_bayes(root, &config_path, opts)?;
    }
    Ok(Prepared {
        dir,
        config: config_path,
        corpus,
        chain,
    })
}

/// The passwd-file of users u0..u<users-1>, Dovecot's format, which
/// Poplar's auth-passwd reads too.
fn passwd_file(users: usize, scheme: PasswordScheme) -> Result<String> {
    let names: Vec<String> = (0..users).map(|u| format!("u{u}")).collect();
    let secrets: Vec<String> = match scheme {
        PasswordScheme::Plain => names.iter().map(|u| password(u)).collect(),
        PasswordScheme::Sha512Crypt => sha512_crypt(&names)?,
    };
    let mut passwd = String::from("# poplar-bench users\n");
    for (user, secret) in names.iter().zip(&secrets) {
        writeln!(passwd, "{user}:{{{}}}{secret}", scheme.name())?;
    }
    Ok(passwd)
}

/// SHA-512 crypt hashes of the users' passwords (random salts, the
/// default 5000 rounds), from one `openssl passwd -6 -stdin`.
pub fn sha512_crypt(users: &[String]) -> Result<Vec<String>> {
    use std::io::Write as _;
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running `openssl passwd -6` to hash the passwords")?;
    let mut input = String::new();
    for u in users {
        input.push_str(&password(u));
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written from a thread: openssl answers while it reads.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writing to openssl panicked"))??;
    if !out.status.success() {
        bail!(
            "openssl passwd -6 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let hashes: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_string)
        .collect();
    if hashes.len() != users.len() || hashes.iter().any(|h| !h.starts_with("$6$")) {
        bail!(
            "openssl passwd -6 gave {} hashes for {} users",
            hashes.len(),
            users.len()
        );
    }
    Ok(hashes)
}

/// Paths go into TOML basic strings.
fn toml_path(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// The `[filter.bayes]` table: its model in `<root>/bayes/`.
pub fn bayes_filter(wasm: &Path) -> String {
    format!(
        r#"
[filter.bayes]
path = "{}"
dirs = [{{ host = "bayes", guest = "/data", writable = true }}]
[filter.bayes.config]
model = "/data/bayes.model"
threshold = "0.9"
junk_folder = "Junk"
"#,
        toml_path(wasm)
    )
}

fn rules_filter(name: &str, wasm: &Path, rules: &str) -> String {
    format!(
        "\n[filter.{name}]\npath = \"{}\"\n[filter.{name}.config]\nbody_limit = 65536\n{}",
        toml_path(wasm),
        rules.replace("[[rules]]", &format!("[[filter.{name}.config.rules]]"))
    )
}

/// The first filter: what a small site might configure. Header, body
/// regex, size and envelope conditions; none rejects the generated mail.
const RULES: &str = r#"
[[rules]]
name = "huge"
size_over = 3000000
action = "add-headers"
add_headers = { "X-Large-Message" = "yes" }
continue = true

[[rules]]
name = "newsletter"
header = "List-Id"
regex = '<news\.example\.org>$'
action = "add-headers"
add_headers = { "X-Category" = "newsletter" }
continue = true

[[rules]]
name = "spam-body"
any = true
header = "Subject"
contains = "claim your prize"
body_regex = '^Click here to (claim|unsubscribe)'
action = "file-into"
folder = "Junk"
add_headers = { "X-Spam" = "yes" }

[[rules]]
name = "spam-sender"
from_regex = '@(promo|deals)\.spam\.example$'
action = "file-into"
folder = "Junk"

[[rules]]
name = "no-date"
header = "Date"
exists = false
action = "temp-fail"
reason = "Missing Date header"
"#;

/// The second filter when filter-bayes is not built: other rules.
const RULES2: &str = r#"
[[rules]]
name = "mailer"
header = "X-Mailer"
regex = '^Bench Mail [0-9.]+$'
action = "add-headers"
add_headers = { "X-Mailer-Seen" = "bench" }
continue = true

[[rules]]
name = "invoices"
header = "Subject"
regex = 'invoice [0-9]{4}-[0-9]+'
action = "file-into"
folder = "Invoices"

[[rules]]
name = "bank-phish"
body_contains = "verify your bank account"
action = "file-into"
folder = "Junk"

[[rules]]
name = "bulk"
header = "Precedence"
contains = "bulk"
action = "add-headers"
add_headers = { "X-Bulk" = "yes" }
"#;

/// Writes `messages` messages into `mail/u<N>/cur/` for every user, named
/// like Dovecot names them (with `S=` and `W=` sizes).
fn write_corpus(root: &Path, opts: &SetupOptions) -> Result<CorpusStats> {
    let generator = Generator::new(opts.seed);
    let mut sizes = Vec::with_capacity(opts.users * opts.messages);
    let pid = std::process::id();
    for u in 0..opts.users {
        let user = format!("u{u}");
        let maildir = root.join("mail").join(&user);
        for d in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(d))?;
        }
        let mut rng = Rng::derive(opts.seed, u as u64);
        for i in 0..opts.messages {
            let target = opts.sizes.sample(&mut rng);
            let kind = Kind::sample(&mut rng);
            let seq = (u * opts.messages + i) as u64;
            let to = format!("{user}@{DOMAIN}");
            let m = generator.message(&mut rng, kind, &to, seq, target, true);
            let crlf = m.crlf_size();
            let name = format!(
                "{}.M{i}P{pid}.bench,S={},W={crlf}:2,S",
                1_700_000_000 + i,
                m.lf.len()
            );
            std::fs::write(maildir.join("cur").join(name), &m.lf)?;
            sizes.push(crlf);
        }
    }
    sizes.sort_unstable();
    Ok(CorpusStats {
        messages: sizes.len() as u64,
        total_octets: sizes.iter().sum(),
        median_octets: sizes.get(sizes.len() / 2).copied().unwrap_or(0),
        max_octets: sizes.last().copied().unwrap_or(0),
    })
}

/// Trains filter-bayes on generated spam and ham (with `poplar filter
/// train`), so that it classifies instead of answering "untrained".
fn train_bayes(root: &Path, config: &Path, opts: &SetupOptions) -> Result<()> {
    write_training_set(root, opts.seed)?;
    let out = Command::new(&opts.poplar)
        .args(["filter", "train", "--config"])
        .arg(config)
        .args(["--plugin", "bayes", "--spam"])
        .arg(root.join("train/spam"))
        .arg("--ham")
        .arg(root.join("train/ham"))
        .env("POPLAR_LOG", "warn")
        .output()
        .context("running poplar filter train")?;
    if !out.status.success() {
        bail!(
            "poplar filter train failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The Bayes training set: 40 spam in `<root>/train/spam/`, 40 ham
/// (a third of them newsletters) in `<root>/train/ham/`, LF endings.
pub fn write_training_set(root: &Path, seed: u64) -> Result<()> {
    let generator = Generator::new(seed ^ 0xBA7E5);
    let mut rng = Rng::derive(seed, 0xBA7E5);
    for (dir, kind) in [("train/spam", Kind::Spam), ("train/ham", Kind::Personal)] {
        std::fs::create_dir_all(root.join(dir))?;
        for i in 0..40u64 {
            // Newsletters are ham too.
            let kind = if kind == Kind::Personal && i % 3 == 0 {
                Kind::Newsletter
            } else {
                kind
            };
            let size = 2_000 + rng.below(20_000);
            let m = generator.message(&mut rng, kind, "train@bench.test", i, size, true);
            std::fs::write(root.join(dir).join(format!("{i}.eml")), &m.lf)?;
        }
    }
    Ok(())
}
