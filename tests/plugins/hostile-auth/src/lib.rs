//! An auth plugin that misbehaves on request, for testing how the host
//! contains a broken or hostile plugin. What `verify` does depends on the
//! user name:
//!
//! - `panic`: panics (a trap, with a message on stderr).
//! - `loop`: spins forever (the host's deadline must stop it).
//! - `alloc`: allocates without bound (the memory cap must stop it).
//! - `sleep`: busy-waits about 10 s on the monotonic clock.
//! - `overflow`: recurses without bound (a stack overflow).
//! - `flood`: calls `host::log` 100000 times with 10 KiB messages, then
//!   denies.
//! - `evil-principal`: allows, with the principal `../../etc` (the storage
//!   plugin must refuse it).
//! - anyone else: allowed with the password `ok`, principal = user name.
//!
//! `resolve-user` finds every user; `lookup-secret` has no secrets.

wit_bindgen::generate!({ path: "../../../wit", world: "auth-plugin" });

use exports::poplar::plugin::auth::{
    Decision, Grant, Guest, Login, Peer, SecretKind, SecretLookup, UserLookup,
};
use poplar::plugin::host::{Level, log};

struct Plugin;

/// A login as `principal`, with the server's POP3 settings.
fn grant(principal: &str) -> Grant {
    Grant {
        principal: principal.into(),
        policy: None,
    }
}

/// Recurses until the stack runs out; the frame is kept big and alive so
/// the compiler can neither shrink it nor turn the recursion into a loop.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    let below = recurse(std::hint::black_box(depth + 1));
    below.wrapping_add(frame.iter().sum::<u64>())
}

impl Guest for Plugin {
    fn validate() -> Result<(), String> {
        Ok(())
    }

    fn verify(attempt: Login) -> Decision {
        match attempt.user.as_str() {
            "panic" => panic!("hostile auth panicked on purpose"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 4 * 1024 * 1024]);
                    std::hint::black_box(&hoard);
                }
            }
            "sleep" => {
                let start = std::time::Instant::now();
                while start.elapsed() < std::time::Duration::from_secs(10) {
                    std::hint::black_box(());
                }
                Decision::Deny("slept 10 s".into())
            }
            "overflow" => {
                let n = recurse(0);
                Decision::Deny(format!("recursion ended at {n}"))
            }
            "flood" => {
                let line = "x".repeat(10 * 1024);
                for _ in 0..100_000 {
                    log(Level::Error, &line);
                }
                Decision::Deny("flooded the log".into())
            }
            "evil-principal" => Decision::Allow(grant("../../etc")),
            user if attempt.credential == "ok" => Decision::Allow(grant(user)),
            _ => Decision::Deny("wrong password".into()),
        }
    }

    fn resolve_user(user: String) -> UserLookup {
        UserLookup::Found(user)
    }

    fn lookup_secret(_user: String, _kind: SecretKind, _peer: Peer) -> SecretLookup {
        SecretLookup::Unavailable
    }
}

#[cfg(target_arch = "wasm32")]
export!(Plugin);
