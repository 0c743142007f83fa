//! `poplar generate`: a manual page for every command `poplar --help`
//! lists (and none for hidden ones), `poplar.toml(5)`, all of them
//! rendered by man(1) without a warning, and completion scripts that real
//! bash, fish and zsh load and that offer every command.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::harness::POPLAR;

/// The command names of a `--help` output's "Commands:" section.
fn commands_in_help(path: &[String]) -> Vec<String> {
    let out = Command::new(POPLAR)
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "poplar {path:?} --help");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|c| c != "help")
        .collect()
}

/// Every command path as `--help` shows it: `["mailbox", "list"]`, ...
fn command_paths() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        for c in commands_in_help(&path) {
            let mut sub = path.clone();
            sub.push(c);
            todo.push(sub.clone());
            out.push(sub);
        }
    }
    out.sort();
    out
}

fn generate(what: &str, dir: &Path) {
    let out = Command::new(POPLAR)
        .args(["generate", what])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "poplar generate {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_manual_page_for_every_command_and_the_config_file_without_warnings() {
    let paths = command_paths();
    assert!(paths.contains(&vec!["mailbox".to_string(), "expunge".to_string()]));
    let dir = tempfile::tempdir().unwrap();
    generate("man", dir.path());
    let mut expected: BTreeSet<String> = paths
        .iter()
        .map(|p| format!("poplar-{}.1", p.join("-")))
        .collect();
    expected.insert("poplar.1".into());
    expected.insert("poplar.toml.5".into());
    assert_eq!(files(dir.path()), expected, "no page for hidden commands");

    for page in &expected {
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(dir.path().join(page))
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_STDERR", "1")
            .output()
            .expect("man (Debian package man-db)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "man {page}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "{page}: groff warnings"
        );
        let name = page.rsplit_once('.').unwrap().0;
        assert!(text.contains(name), "{page} does not name {name}:\n{text}");
    }
    // The configuration page carries the example's explanations.
    let out = Command::new("man")
        .args(["-l"])
        .arg(dir.path().join("poplar.toml.5"))
        .env("MANWIDTH", "200")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "folder_separator = \"+\"",
        "proxy_protocol = true (commented out)",
        "[[listener]]",
        "[quota.users.alice]",
        "RFC 1939 requires at least 600",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} not in poplar.toml(5):\n{text}"
        );
    }
}

/// Runs `script` in a shell and returns its standard output.
fn shell(program: &str, args: &[&str], script: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (tests/run.sh installs it)"));
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_offer_every_command_in_bash_fish_and_zsh() {
    let dir = tempfile::tempdir().unwrap();
    generate("completions", dir.path());
    assert_eq!(
        files(dir.path()),
        ["_poplar", "poplar.bash", "poplar.fish"]
            .map(String::from)
            .into()
    );
    let bash = dir.path().join("poplar.bash");
    let fish = dir.path().join("poplar.fish");
    let zsh = dir.path().join("_poplar");
    let paths = command_paths();
    // Each level's commands, as completed after the words before them.
    let mut levels: Vec<(Vec<String>, BTreeSet<String>)> = vec![(Vec::new(), BTreeSet::new())];
    for p in &paths {
        let parent = p[..p.len() - 1].to_vec();
        match levels.iter_mut().find(|(l, _)| *l == parent) {
            Some((_, names)) => {
                names.insert(p[p.len() - 1].clone());
            }
            None => levels.push((parent, [p[p.len() - 1].clone()].into())),
        }
    }
    for (words, names) in &levels {
        let typed = words.join(" ");
        let bash_words = if typed.is_empty() {
            "poplar ''".to_string()
        } else {
            format!("poplar {typed} ''")
        };
        let offered: BTreeSet<String> = shell(
            "bash",
            &["-c"],
            &format!(
                "source {}; COMP_WORDS=({bash_words}); COMP_CWORD={}; \
                 _poplar poplar '' {}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                bash.display(),
                words.len() + 1,
                words.last().map_or("poplar", String::as_str),
            ),
        )
        .lines()
        .map(String::from)
        .collect();
        assert!(
            offered.is_superset(names),
            "bash after {typed:?}: {offered:?}"
        );
        assert!(
            !offered.contains("generate"),
            "bash offers a hidden command"
        );

        let line = format!("poplar {typed} ").replace("  ", " ");
        let offered: BTreeSet<String> = shell(
            "fish",
            &["--no-config", "-c"],
            &format!("source {}; complete -C '{line}'", fish.display()),
        )
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
        assert!(
            offered.is_superset(names),
            "fish after {typed:?}: {offered:?}"
        );
        assert!(
            !offered.contains("generate"),
            "fish offers a hidden command"
        );
    }
    // zsh: the script parses, defines the completion function and knows
    // every command (driving compsys needs a terminal).
    let defined = shell(
        "zsh",
        &["-f", "-c"],
        &format!(
            "autoload -Uz compinit; compinit -u -D; source {}; whence -w _poplar",
            zsh.display()
        ),
    );
    assert!(defined.contains("_poplar: function"), "{defined}");
    let text = std::fs::read_to_string(&zsh).unwrap();
    for p in &paths {
        let name = p.last().unwrap();
        assert!(text.contains(&format!("'{name}:")), "zsh lacks {p:?}");
    }
    assert!(!text.contains("'generate:"), "zsh offers a hidden command");
}
