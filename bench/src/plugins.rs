//! `poplar-bench plugins`: the plugin path measured in-process, through the
//! `poplar` library, with the default plugins: loading from the compiled
//! cache, instantiation (a fresh instance vs one lent from the warm pool),
//! the auth and storage calls of a POP3 session, and the filters'
//! `classify` by message size.
//!
//! Two wasm runtimes are built from the same `[runtime]` settings: the
//! *warm* one as the server runs it (idle instances kept per plugin), and a
//! *fresh* one with `idle_instances = 0`, on which every call instantiates
//! a new store and instance and drops it afterwards, exactly what a call
//! pays when the pool is empty. The plugins see a generated temporary
//! world: a passwd-file (a `{PLAIN}` and a `{SHA512-CRYPT}` user), a Maildir
//! of 20 messages, one of ~300 KB, and a trained Bayes model.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use poplar::config::{Config, PluginConfig, RuntimeConfig};
use poplar::plugin::auth::{Decision, Login, Peer};
use poplar::plugin::filter::{Envelope, Example, TrainablePlugin, Verdict};
use poplar::plugin::storage::Mailbox;
use poplar::plugin::{AuthPlugin, FilterPlugin, HostMessage, Runtime, StoragePlugin};

use crate::Cli;
use crate::corpus::{Generator, Kind, Rng, SizeModel};
use crate::setup::{self, PasswordScheme, SetupOptions};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Timed calls per measurement (loads from the cache: a tenth, at
    /// least 10). A measurement also stops after `--budget` seconds.
    #[arg(long, short = 'n', default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub iterations: u64,
    /// Most seconds one measurement may take (at least 10 calls are timed
    /// whatever it takes).
    #[arg(long, default_value_t = 10.0)]
    pub budget: f64,
    /// Message sizes for `classify`, octets as generated with LF endings
    /// (comma-separated; default 1 KB, 10 KB, 100 KB, 1 MB, 10 MB).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000,100000,1000000,10000000"
    )]
    pub sizes: Vec<usize>,
    /// Only the measurements whose "section measurement plugin instance"
    /// label contains one of these (comma-separated), e.g.
    /// `list-messages`, `classify filter-bayes` or `filter-rules warm`.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// One measurement.
#[derive(Serialize, Clone)]
pub struct Row {
    pub section: &'static str,
    pub what: String,
    pub plugin: String,
    /// `warm` (pooled instance), `fresh` (a new instance per call) or `-`.
    pub instance: &'static str,
    /// Message size in octets (CRLF), for `classify`.
    pub octets: Option<u64>,
    pub iterations: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub min_us: f64,
}

/// A target from the issue, and whether the measurement meets it.
#[derive(Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    pub median_us: f64,
    pub p99_us: f64,
    pub limit_us: f64,
    /// On the median.
    pub met: bool,
}

#[derive(Serialize)]
pub struct PluginsReport {
    pub iterations: u64,
    pub wall_secs: f64,
    /// CPU of this process over the run, in cores (1.0 = one core busy).
    pub own_cpu_cores: f64,
    /// All CPUs' busy time over the run, in cores, and what others used.
    pub machine_busy_cores: f64,
    pub other_processes_cores: f64,
    pub cpus: usize,
    pub plugins_dir: String,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
}

/// Nearest-rank statistics of samples, in microseconds.
fn row(
    section: &'static str,
    what: impl Into<String>,
    plugin: &str,
    instance: &'static str,
    octets: Option<u64>,
    mut samples: Vec<Duration>,
) -> Row {
    samples.sort_unstable();
    let us = |d: Duration| d.as_nanos() as f64 / 1000.0;
    let n = samples.len().max(1);
    let pct = |p: f64| {
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
        samples.get(rank.min(n) - 1).copied().map_or(0.0, us)
    };
    Row {
        section,
        what: what.into(),
        plugin: plugin.to_string(),
        instance,
        octets,
        iterations: samples.len(),
        median_us: pct(50.0),
        p99_us: pct(99.0),
        mean_us: samples.iter().map(|&d| us(d)).sum::<f64>() / n as f64,
        min_us: samples.first().copied().map_or(0.0, us),
    }
}

/// How many calls, for how long.
#[derive(Clone, Copy)]
struct Plan {
    iterations: usize,
    budget: Duration,
}

impl Plan {
    /// Runs `f` a few times untimed (first-call work inside the guest:
    /// reading its config, the passwd-file, the model), then times up to
    /// `iterations` calls within the budget (at least 10).
    async fn time(&self, mut f: impl AsyncFnMut() -> Result<()>) -> Result<Vec<Duration>> {
        for _ in 0..(self.iterations / 50).clamp(3, 20) {
            f().await?;
        }
        let mut samples = Vec::with_capacity(self.iterations);
        let started = Instant::now();
        while samples.len() < self.iterations
            && (samples.len() < 10 || started.elapsed() < self.budget)
        {
            let t = Instant::now();
            f().await?;
            samples.push(t.elapsed());
        }
        Ok(samples)
    }
}

/// The world the plugins see, and their configuration.
struct World {
    /// Removed when dropped, unless `--keep`.
    _dir: Option<tempfile::TempDir>,
    config: Config,
    /// The 20-message mailbox, and one message of ~300 KB in another.
    mailbox: Mailbox,
    big: Mailbox,
}

fn prepare(cli: &Cli, plugins: &Path) -> Result<World> {
    let cache_dir = crate::cache_dir(cli)?;
    // The bench's usual world (passwd-file, Maildirs, filter-rules as the
    // deliver mode configures it), for one user with 20 messages.
    let prepared = setup::prepare(&SetupOptions {
        users: 1,
        scheme: PasswordScheme::Plain,
        messages: 20,
        filters: 1,
        sizes: SizeModel {
            max: cli.max_message_size,
        },
        seed: cli.seed,
        plugins: plugins.to_path_buf(),
        cache_dir,
        // Not run: the Bayes model is trained in-process below.
        poplar: "poplar".into(),
    })?;
    let root = prepared.root().to_path_buf();
    // A second user whose password is stored as SHA512-CRYPT.
    let hash = setup::sha512_crypt(&["s0".to_string()])?;
    let mut passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    writeln!(passwd, "s0:{{SHA512-CRYPT}}{}", hash[0])?;
    std::fs::write(root.join("etc/passwd"), passwd)?;
    // A maildrop with one message larger than the 256 KiB read.
    let generator = Generator::new(cli.seed ^ 0xB16);
    let mut rng = Rng::derive(cli.seed, 0xB16);
    let m = generator.message(&mut rng, Kind::Personal, "big@bench.test", 1, 300_000, true);
    let cur = root.join("mail/big/cur");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(root.join("mail/big").join(d))?;
    }
    std::fs::write(
        cur.join(format!(
            "1700000000.M1P1.bench,S={},W={}:2,S",
            m.lf.len(),
            m.crlf_size()
        )),
        &m.lf,
    )?;
    // filter-bayes, trained as the deliver mode trains it.
    let bayes_wasm = plugins.join("filter_bayes.wasm");
    if !bayes_wasm.is_file() {
        bail!("{} has no filter_bayes.wasm", plugins.display());
    }
    let mut text = std::fs::read_to_string(&prepared.config)?;
    text.push_str(&setup::bayes_filter(&bayes_wasm));
    std::fs::write(&prepared.config, text)?;
    setup::write_training_set(&root, cli.seed)?;
    let config = Config::load(&prepared.config)?;
    let dir = if cli.keep {
        eprintln!("poplar-bench: keeping {}", prepared.dir.keep().display());
        None
    } else {
        Some(prepared.dir)
    };
    Ok(World {
        _dir: dir,
        config,
        mailbox: Mailbox {
            user: "u0".into(),
            folder: None,
        },
        big: Mailbox {
            user: "big".into(),
            folder: None,
        },
    })
}

async fn train_bayes(runtime: &Arc<Runtime>, config: &PluginConfig, root: &Path) -> Result<()> {
    let mut config = config.clone();
    config.timeout_ms = config.timeout_ms.max(600_000);
    let trainer = TrainablePlugin::load(runtime, "bayes", &config).await?;
    let read = |dir: &str, class: &str| -> Result<Vec<Example>> {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        files
            .iter()
            .map(|f| {
                Ok(Example {
                    msg: HostMessage::new(std::fs::read(f)?),
                    class: class.to_string(),
                    principal: None,
                    envelope: None,
                    unlearn: false,
                })
            })
            .collect()
    };
    let mut examples = read("train/spam", "spam")?;
    examples.extend(read("train/ham", "ham")?);
    trainer
        .train(&examples)
        .await?
        .map_err(|e| anyhow::anyhow!("filter-bayes refused to train: {e}"))?;
    Ok(())
}

/// LF to CRLF, as a message arrives over LMTP (after dot-unstuffing).
fn crlf(lf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 30);
    for line in lf.split_inclusive(|&b| b == b'\n') {
        match line.strip_suffix(b"\n") {
            Some(text) => {
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// The plugins of one runtime.
struct Loaded {
    auth: Arc<AuthPlugin>,
    storage: Arc<StoragePlugin>,
    rules: Arc<FilterPlugin>,
    bayes: Arc<FilterPlugin>,
}

async fn load_all(runtime: &Arc<Runtime>, config: &Config) -> Result<Loaded> {
    Ok(Loaded {
        auth: AuthPlugin::load(runtime, "auth", &config.auth).await?,
        storage: StoragePlugin::load(runtime, "storage", &config.storage).await?,
        rules: FilterPlugin::load(runtime, "rules", &config.filter["rules"]).await?,
        bayes: FilterPlugin::load(runtime, "bayes", &config.filter["bayes"]).await?,
    })
}

fn login(user: &str) -> Login {
    Login {
        user: user.to_string(),
        mechanism: "USER".into(),
        credential: setup::password(user),
        authzid: String::new(),
        peer: Peer {
            address: "127.0.0.1:50000".into(),
            tls: false,
        },
    }
}

async fn verify(auth: &AuthPlugin, login: &Login) -> Result<()> {
    match auth.verify(login).await? {
        Decision::Allow(_) => Ok(()),
        other => bail!("auth verify of {} did not allow: {other:?}", login.user),
    }
}

async fn list(storage: &StoragePlugin, mbox: &Mailbox, expect: usize) -> Result<Vec<String>> {
    let entries = storage
        .list(mbox)
        .await
        .map_err(|e| anyhow::anyhow!("list-messages {}: {e}", mbox.user))?;
    if entries.len() != expect {
        bail!(
            "list-messages {}: {} messages, expected {expect}",
            mbox.user,
            entries.len()
        );
    }
    Ok(entries.into_iter().map(|e| e.key).collect())
}

async fn read(storage: &StoragePlugin, mbox: &Mailbox, key: &str, len: u32) -> Result<()> {
    let bytes = storage
        .read(mbox, key, 0, len)
        .await
        .map_err(|e| anyhow::anyhow!("read {key}: {e}"))?;
    if bytes.len() != len as usize {
        bail!("read {key}: {} octets, expected {len}", bytes.len());
    }
    Ok(())
}

async fn classify(filter: &FilterPlugin, env: &Envelope, msg: &HostMessage) -> Result<Verdict> {
    filter
        .classify(env, msg)
        .await?
        .map_err(|why| anyhow::anyhow!("classify could not decide: {why}"))
}

/// Lends an instance and gives it back without a call: on the fresh
/// runtime a new store and instance, dropped again; on the warm one the
/// pool's.
async fn lend_and_return<W: poplar::plugin::pool::World>(
    plugin: &poplar::plugin::pool::Plugin<W>,
) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    let lent = plugin.lend("bench").await?;
    let lend = t.elapsed();
    let t = Instant::now();
    plugin.settle(lent, Ok(()))?;
    Ok((lend, t.elapsed()))
}

pub fn run(cli: &Cli, args: &Args, rt: &tokio::runtime::Runtime) -> Result<ExitCode> {
    if !(args.budget.is_finite() && args.budget >= 0.1) {
        bail!("--budget must be at least 0.1 seconds");
    }
    if args.sizes.is_empty() || args.sizes.iter().any(|&s| s == 0 || s > 64_000_000) {
        bail!("--sizes must be between 1 and 64000000 octets");
    }
    let plugins = crate::find_plugins(cli)?;
    let world = prepare(cli, &plugins)?;
    let (busy0, own0, wall0) = (
        crate::server::system_busy(),
        crate::server::own_cpu(),
        Instant::now(),
    );
    let report = rt.block_on(measure(args, &world, &plugins))?;
    let wall = wall0.elapsed().as_secs_f64();
    let busy = (crate::server::system_busy() - busy0) / wall;
    let own = (crate::server::own_cpu() - own0) / wall;
    let report = PluginsReport {
        wall_secs: wall,
        own_cpu_cores: own,
        machine_busy_cores: busy,
        other_processes_cores: (busy - own).max(0.0),
        ..report
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Collects the rows, printing each as it comes; skips what `--only`
/// leaves out.
struct Bench<'a> {
    only: &'a [String],
    rows: Vec<Row>,
}

impl Bench<'_> {
    fn wanted(&self, section: &str, what: &str, plugin: &str, instance: &str) -> bool {
        let label = format!("{section} {what} {plugin} {instance}");
        self.only.is_empty() || self.only.iter().any(|o| label.contains(o.as_str()))
    }

    fn push(&mut self, r: Row) {
        eprintln!(
            "  {:<11} {:<44} {:<15} {:<5} n={:<5} median {:>9.1} us  p99 {:>9.1} us",
            r.section,
            format!(
                "{}{}",
                r.what,
                r.octets.map(|o| format!(" ({o} B)")).unwrap_or_default()
            ),
            r.plugin,
            r.instance,
            r.iterations,
            r.median_us,
            r.p99_us
        );
        self.rows.push(r);
    }

    /// Times `f` with `plan` and adds the row, if wanted.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &mut self,
        plan: Plan,
        section: &'static str,
        what: &str,
        plugin: &str,
        instance: &'static str,
        octets: Option<u64>,
        f: impl AsyncFnMut() -> Result<()>,
    ) -> Result<()> {
        if self.wanted(section, what, plugin, instance) {
            let samples = plan.time(f).await?;
            self.push(row(section, what, plugin, instance, octets, samples));
        }
        Ok(())
    }

    /// A fresh instance without a call: new store + instance, then drop,
    /// timed apart and together; and the warm pool's lend + give back.
    async fn instantiation<W: poplar::plugin::pool::World>(
        &mut self,
        plan: Plan,
        name: &str,
        warm: &poplar::plugin::pool::Plugin<W>,
        fresh: &poplar::plugin::pool::Plugin<W>,
    ) -> Result<()> {
        if self.wanted("instantiate", "new + drop", name, "fresh") {
            let (mut lend, mut give) = (Vec::new(), Vec::new());
            let both = plan
                .time(async || {
                    let (l, g) = lend_and_return(fresh).await?;
                    lend.push(l);
                    give.push(g);
                    Ok(())
                })
                .await?;
            // Keep the timed calls, not the warm-up's.
            let skip = lend.len() - both.len();
            let section = "instantiate";
            let (lend, give) = (lend.split_off(skip), give.split_off(skip));
            self.push(row(
                section,
                "new store + instance",
                name,
                "fresh",
                None,
                lend,
            ));
            self.push(row(section, "drop it", name, "fresh", None, give));
            self.push(row(section, "new + drop", name, "fresh", None, both));
        }
        self.run(
            plan,
            "instantiate",
            "lend from the pool + give back",
            name,
            "warm",
            None,
            async || lend_and_return(warm).await.map(drop),
        )
        .await
    }
}

async fn measure(args: &Args, world: &World, plugins: &Path) -> Result<PluginsReport> {
    let config = &world.config;
    let warm_rt = Runtime::new(&config.runtime)?;
    let fresh_rt = Runtime::new(&RuntimeConfig {
        idle_instances: 0,
        ..config.runtime.clone()
    })?;
    let root = config.filter["bayes"].dirs[0]
        .host
        .parent()
        .context("bayes dir has a parent")?
        .to_path_buf();
    eprintln!("poplar-bench: training filter-bayes");
    train_bayes(&warm_rt, &config.filter["bayes"], &root).await?;
    eprintln!("poplar-bench: loading the plugins (compiling them into the cache if needed)");
    let warm = load_all(&warm_rt, config).await?;
    let fresh = load_all(&fresh_rt, config).await?;

    let plan = Plan {
        iterations: args.iterations as usize,
        budget: Duration::from_secs_f64(args.budget),
    };
    let slow = Plan {
        iterations: (plan.iterations / 10).max(10),
        ..plan
    };
    let mut b = Bench {
        only: &args.only,
        rows: Vec::new(),
    };

    // Loading: the compiled component from the cache, then the whole
    // `load` (cache, link, instantiate, `validate`).
    let files = [
        ("auth-passwd", &config.auth),
        ("storage-maildir", &config.storage),
        ("filter-rules", &config.filter["rules"]),
        ("filter-bayes", &config.filter["bayes"]),
    ];
    for (name, pc) in files {
        let what = "compile from cache (deserialize)";
        b.run(slow, "load", what, name, "-", None, async || {
            let rt = warm_rt.clone();
            let path = pc.path.clone();
            tokio::task::spawn_blocking(move || rt.compile(&path).map(drop)).await??;
            Ok(())
        })
        .await?;
        let what = "load (cache + link + instantiate + validate)";
        b.run(slow, "load", what, name, "-", None, async || {
            match name {
                "auth-passwd" => drop(AuthPlugin::load(&fresh_rt, "auth", pc).await?),
                "storage-maildir" => drop(StoragePlugin::load(&fresh_rt, "storage", pc).await?),
                _ => drop(FilterPlugin::load(&fresh_rt, name, pc).await?),
            }
            Ok(())
        })
        .await?;
    }

    // Instantiation without a call.
    b.instantiation(plan, "auth-passwd", &warm.auth, &fresh.auth)
        .await?;
    b.instantiation(plan, "storage-maildir", &warm.storage, &fresh.storage)
        .await?;
    b.instantiation(plan, "filter-rules", &warm.rules, &fresh.rules)
        .await?;
    b.instantiation(plan, "filter-bayes", &warm.bayes, &fresh.bayes)
        .await?;

    // The calls of a session.
    let plain = login("u0");
    let crypt = login("s0");
    list(&warm.storage, &world.mailbox, 20).await?;
    let big_key = list(&warm.storage, &world.big, 1).await?.remove(0);
    let (auth, storage) = ("auth-passwd", "storage-maildir");
    for (instance, p) in [("warm", &warm), ("fresh", &fresh)] {
        let what = "verify, {PLAIN}";
        b.run(plan, "calls", what, auth, instance, None, async || {
            verify(&p.auth, &plain).await
        })
        .await?;
        let what = "verify, {SHA512-CRYPT} (5000 rounds)";
        b.run(plan, "calls", what, auth, instance, None, async || {
            verify(&p.auth, &crypt).await
        })
        .await?;
        let what = "list-messages, 20 messages";
        b.run(plan, "calls", what, storage, instance, None, async || {
            list(&p.storage, &world.mailbox, 20).await.map(drop)
        })
        .await?;
        let what = "read 256 KiB";
        b.run(plan, "calls", what, storage, instance, None, async || {
            read(&p.storage, &world.big, &big_key, 256 * 1024).await
        })
        .await?;
        for (what, login) in [
            ("verify {PLAIN} + list-messages (20)", &plain),
            ("verify {SHA512-CRYPT} + list-messages (20)", &crypt),
        ] {
            b.run(
                plan,
                "session",
                what,
                "auth+storage",
                instance,
                None,
                async || {
                    verify(&p.auth, login).await?;
                    list(&p.storage, &world.mailbox, 20).await.map(drop)
                },
            )
            .await?;
        }
    }

    // The filters, by message size.
    let generator = Generator::new(0xF17E5);
    for (i, &size) in args.sizes.iter().enumerate() {
        let mut rng = Rng::derive(0xF17E5, i as u64);
        let m = generator.message(
            &mut rng,
            Kind::Personal,
            "u0@bench.test",
            i as u64,
            size,
            false,
        );
        let msg = HostMessage::new(crlf(&m.lf));
        let octets = msg.size();
        let env = Envelope {
            mail_from: m.from.clone(),
            rcpt_to: "u0@bench.test".into(),
            target: world.mailbox.clone(),
            client_address: "127.0.0.1".into(),
        };
        // filter-bayes must score, not answer "untrained".
        let v = classify(&warm.bayes, &env, &msg).await?;
        if v.add_headers.iter().any(|h| h.name == "X-Spam-Bayes") {
            bail!("filter-bayes is untrained: {:?}", v.add_headers);
        }
        for (name, w, f) in [
            ("filter-rules", &warm.rules, &fresh.rules),
            ("filter-bayes", &warm.bayes, &fresh.bayes),
        ] {
            let o = Some(octets);
            b.run(plan, "classify", "classify", name, "warm", o, async || {
                classify(w, &env, &msg).await.map(drop)
            })
            .await?;
            b.run(plan, "classify", "classify", name, "fresh", o, async || {
                classify(f, &env, &msg).await.map(drop)
            })
            .await?;
        }
    }
    drop((warm, fresh));

    let rows = b.rows;
    let targets = targets(&rows);
    Ok(PluginsReport {
        iterations: args.iterations,
        wall_secs: 0.0,
        own_cpu_cores: 0.0,
        machine_busy_cores: 0.0,
        other_processes_cores: 0.0,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        plugins_dir: plugins.display().to_string(),
        rows,
        targets,
    })
}

/// The targets against the rows that measure them.
fn targets(rows: &[Row]) -> Vec<Target> {
    let find = |section: &str, what: &str, plugin: &str, instance: &str, octets: Option<u64>| {
        rows.iter().find(|r| {
            r.section == section
                && r.what == what
                && r.plugin == plugin
                && r.instance == instance
                && match octets {
                    // The size nearest to 100 KB.
                    Some(o) => r.octets.is_some_and(|x| x.abs_diff(o) < o / 5),
                    None => true,
                }
        })
    };
    let mut out = Vec::new();
    let mut add = |target: &str, r: Option<&Row>, limit_us: f64| {
        if let Some(r) = r {
            out.push(Target {
                target: target.to_string(),
                measured: format!(
                    "{} {}{} ({})",
                    r.plugin,
                    r.what,
                    r.octets
                        .map(|o| format!(", {o} octets"))
                        .unwrap_or_default(),
                    r.instance
                ),
                median_us: r.median_us,
                p99_us: r.p99_us,
                limit_us,
                met: r.median_us <= limit_us,
            });
        }
    };
    let session = "verify {PLAIN} + list-messages (20)";
    add(
        "per-session plugin overhead <= 100 us",
        find("session", session, "auth+storage", "warm", None),
        100.0,
    );
    add(
        "per-session plugin overhead <= 100 us",
        find("session", session, "auth+storage", "fresh", None),
        100.0,
    );
    for f in ["filter-rules", "filter-bayes"] {
        add(
            "Rust filter, 100 KB message, incl. instantiation <= 100 us",
            find("classify", "classify", f, "fresh", Some(102_500)),
            100.0,
        );
    }
    out
}

fn markdown(r: &PluginsReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "poplar-bench plugins: {} iterations per measurement, {:.1} s; CPU: this process \
         {:.2} cores, machine {:.2} of {} cores, other processes {:.2}\n",
        r.iterations,
        r.wall_secs,
        r.own_cpu_cores,
        r.machine_busy_cores,
        r.cpus,
        r.other_processes_cores
    );
    let _ = writeln!(
        s,
        "| section | measurement | plugin | instance | n | median (us) | p99 (us) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---:|---:|");
    for row in r.rows.iter().filter(|x| x.section != "classify") {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} |",
            row.section,
            row.what,
            row.plugin,
            row.instance,
            row.iterations,
            row.median_us,
            row.p99_us
        );
    }
    let _ = writeln!(
        s,
        "\n`classify`, median / p99 in us (warm: a pooled instance; fresh: a new \
         instance per call, instantiation and drop included)\n"
    );
    let _ = writeln!(
        s,
        "| message (octets, CRLF) | filter-rules warm | filter-rules fresh | filter-bayes warm | filter-bayes fresh |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
    let mut sizes: Vec<u64> = r.rows.iter().filter_map(|x| x.octets).collect();
    sizes.dedup();
    for o in sizes {
        let cell = |plugin: &str, instance: &str| {
            r.rows
                .iter()
                .find(|x| x.octets == Some(o) && x.plugin == plugin && x.instance == instance)
                .map_or("-".to_string(), |x| {
                    format!("{:.1} / {:.1}", x.median_us, x.p99_us)
                })
        };
        let _ = writeln!(
            s,
            "| {o} | {} | {} | {} | {} |",
            cell("filter-rules", "warm"),
            cell("filter-rules", "fresh"),
            cell("filter-bayes", "warm"),
            cell("filter-bayes", "fresh")
        );
    }
    let _ = writeln!(
        s,
        "\n| target | measured | median (us) | p99 (us) | met (median) |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---|");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} | {} |",
            t.target,
            t.measured,
            t.median_us,
            t.p99_us,
            if t.met { "yes" } else { "NO" }
        );
    }
    s
}
