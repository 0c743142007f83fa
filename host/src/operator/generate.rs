//! `poplar generate`: files a package installs, made from the program
//! itself so they cannot drift from it: a manual page per command (from
//! the clap definition) and `poplar.toml(5)` (from the annotated example,
//! see [`crate::config_doc`]), shell completions, and at installation a
//! self-signed certificate for the host. Hidden from `--help`: packagers
//! and maintainer scripts use it, operators need not.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use clap_complete::Shell;

use crate::config_doc::{Documentation, EXAMPLE, render_man};

#[derive(Subcommand)]
pub enum GenerateCmd {
    /// Write poplar.1, a poplar-COMMAND.1 per command and poplar.toml.5
    /// into DIR.
    Man { dir: PathBuf },
    /// Write completions for bash (poplar.bash), zsh (_poplar) and fish
    /// (poplar.fish) into DIR.
    Completions { dir: PathBuf },
    /// Write a self-signed certificate for HOSTNAME (and localhost) to
    /// CERT and its key to KEY (mode 0600), unless both exist.
    TlsCert {
        cert: PathBuf,
        key: PathBuf,
        #[arg(long)]
        hostname: String,
    },
}

/// Runs one `poplar generate` command for the program `cli` describes.
pub fn run(cmd: GenerateCmd, cli: clap::Command) -> Result<()> {
    match cmd {
        GenerateCmd::Man { dir } => {
            for page in man_pages(cli, &dir)? {
                println!("{}", page.display());
            }
        }
        GenerateCmd::Completions { dir } => {
            for file in completions(cli, &dir)? {
                println!("{}", file.display());
            }
        }
        GenerateCmd::TlsCert {
            cert,
            key,
            hostname,
        } => tls_cert(&cert, &key, &hostname)?,
    }
    Ok(())
}

/// The manual pages of every visible command, and `poplar.toml.5`.
pub fn man_pages(cli: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let version = cli.get_version().unwrap_or("").to_string();
    clap_mangen::generate_to(cli, dir)
        .with_context(|| format!("writing manual pages into {}", dir.display()))?;
    let doc =
        Documentation::parse(EXAMPLE).map_err(|e| anyhow::anyhow!("examples/poplar.toml: {e}"))?;
    let config_page = dir.join("poplar.toml.5");
    std::fs::write(&config_page, render_man(&doc, &version))
        .with_context(|| format!("writing {}", config_page.display()))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1" || x == "5"))
        .collect();
    pages.sort();
    Ok(pages)
}

/// Completion scripts for bash, zsh and fish.
pub fn completions(cli: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = cli.get_name().to_string();
    // clap names are `&'static str` here (no "string" feature): keep the
    // original alive for this short command's life to borrow its names.
    let cli: &'static clap::Command = Box::leak(Box::new(cli));
    let mut cli = without_hidden(cli);
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            clap_complete::generate_to(shell, &mut cli, &name, dir)
                .with_context(|| format!("writing {shell} completions into {}", dir.display()))
        })
        .collect()
}

/// The command without its hidden subcommands (`generate`), which
/// clap_complete would otherwise offer.
fn without_hidden(cmd: &'static clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(version);
    }
    for arg in cmd.get_arguments() {
        out = out.arg(arg.clone());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(without_hidden(sub));
    }
    out
}

/// A self-signed certificate for `hostname` and loopback, for a server
/// that must serve TLS before the operator installs a real certificate.
pub fn tls_cert(cert: &Path, key: &Path, hostname: &str) -> Result<()> {
    if cert.exists() && key.exists() {
        println!("{} and {} exist: kept", cert.display(), key.display());
        return Ok(());
    }
    let mut names = vec![hostname.to_string()];
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|have| have == n) {
            names.push(n.to_string());
        }
    }
    let made = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    write_new(key, made.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert, made.cert.pem().as_bytes(), 0o644)?;
    println!("wrote {} and {}", cert.display(), key.display());
    Ok(())
}

/// Writes `bytes` to a file created with `mode`, so a key is never
/// readable by others, not even for a moment.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_loads_and_its_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        tls_cert(&cert, &key, "mail.example.org").unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        crate::net::tls::acceptor(&crate::config::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        })
        .unwrap();
        // A second run keeps the pair (an operator's certificate too).
        let before = std::fs::read(&cert).unwrap();
        tls_cert(&cert, &key, "other.example.org").unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), before);
    }
}
