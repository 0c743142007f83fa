//! Builds the default plugins in `plugins/` for wasm32-wasip2, so that a
//! fresh checkout gets working components from a plain `cargo build`, and
//! tells the crate where they are (`POPLAR_PLUGIN_DIR`). The demo embeds
//! them in the binary.
//!
//! The nested cargo uses its own target directory under the workspace's
//! `target/` (sharing the outer one would deadlock on its lock).

use std::path::PathBuf;
use std::process::Command;

/// The default plugins, and the deliberately broken one the tests use.
const PLUGINS: &[&str] = &[
    "storage-maildir",
    "auth-passwd",
    "filter-rules",
    "filter-bayes",
    "hostile-filter",
    "hostile-auth",
    "hostile-storage",
];

fn main() {
    record_build();
    // Packagers (or a plugin author iterating) may point at components
    // built elsewhere instead.
    println!("cargo:rerun-if-env-changed=POPLAR_PREBUILT_PLUGINS");
    if let Ok(dir) = std::env::var("POPLAR_PREBUILT_PLUGINS") {
        println!("cargo:rustc-env=POPLAR_PLUGIN_DIR={dir}");
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.parent().unwrap().to_path_buf();
    for dir in ["plugins", "wit", "tests/plugins"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    ensure_wasm_target();
    let target_dir = workspace.join("target").join("wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--profile", "plugin", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&target_dir);
    for p in PLUGINS {
        cmd.args(["-p", p]);
    }
    // Flags meant for the host build (coverage, sanitizers, clippy's
    // wrapper) must not leak into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo to build the plugins");
    if !status.success() {
        panic!(
            "building the default plugins for wasm32-wasip2 failed; \
             is the target installed? run: rustup target add wasm32-wasip2"
        );
    }
    let out = target_dir.join("wasm32-wasip2").join("plugin");
    println!("cargo:rustc-env=POPLAR_PLUGIN_DIR={}", out.display());
}

/// Tells the crate which commit and profile it is built from
/// (`POPLAR_COMMIT`, `POPLAR_PROFILE`, shown by `poplar --version`), so a
/// benchmark can record exactly what it measured. The commit ends in `+`
/// when the checkout had uncommitted changes; it is `unknown` outside git.
fn record_build() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{head}{}", if dirty { "+" } else { "" })
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=POPLAR_COMMIT={commit}");
    let profile = std::env::var("PROFILE").unwrap_or_default();
    println!("cargo:rustc-env=POPLAR_PROFILE={profile}");
    // Again when HEAD moves, and when a source changes (it may make the
    // checkout dirty).
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    for dir in ["host/src", "proto/src"] {
        println!(
            "cargo:rerun-if-changed={}",
            manifest.parent().unwrap().join(dir).display()
        );
    }
}

/// Installs the wasm32-wasip2 standard library with rustup if it is missing
/// (`rust-toolchain.toml` asks for it, but rustup may be set not to install
/// anything on its own). Failures fall through to the build's own error.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let installed = libdir.is_some_and(|d| std::path::Path::new(&d).is_dir());
    if !installed {
        let _ = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status();
    }
}
