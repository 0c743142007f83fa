//! A filter that misbehaves on request, for testing how the host contains
//! a broken or hostile plugin. What it does depends on the message's
//! Subject:
//!
//! - `PANIC`: panics (a trap, with a message on stderr).
//! - `LOOP`: spins forever (the host's deadline must stop it).
//! - `ALLOC`: allocates without bound (the memory cap must stop it).
//! - `BADFOLDER`: files the message into `../escape`, a folder name the
//!   storage must refuse.
//! - `REJECT`: rejects the message.
//! - `ERROR`: cannot decide: `classify` returns an error (the host applies
//!   the chain entry's `on_failure`, as for a trap).
//! - `NET <ip:port>`: tries to open a TCP connection there and reports in
//!   `X-Hostile-Net` whether the sandbox let it (`connected` or the error).
//! - `ENV <NAME>`: reports the variable in `X-Hostile-Env` (`unset` if the
//!   host granted none).
//! - anything else: accepts, adding `X-Hostile: passed`.

wit_bindgen::generate!({ path: "../../../wit", world: "filter-plugin" });

use exports::poplar::plugin::filter::{Action, Envelope, Guest, Header, Verdict};
use poplar::plugin::message::Message;

struct Plugin;

impl Guest for Plugin {
    fn validate() -> Result<(), String> {
        Ok(())
    }

    fn classify(_env: Envelope, msg: &Message) -> Result<Verdict, String> {
        let subject = msg
            .headers()
            .into_iter()
            .find(|h| h.name.eq_ignore_ascii_case("subject"))
            .map(|h| h.value)
            .unwrap_or_default();
        let subject = subject.trim();
        let mut add_headers = Vec::new();
        if let Some(addr) = subject.strip_prefix("NET ") {
            let outcome = match std::net::TcpStream::connect(addr.trim()) {
                Ok(_) => "connected".to_string(),
                Err(e) => format!("refused: {e}"),
            };
            add_headers.push(Header {
                name: "X-Hostile-Net".into(),
                value: outcome,
            });
        }
        if let Some(name) = subject.strip_prefix("ENV ") {
            add_headers.push(Header {
                name: "X-Hostile-Env".into(),
                value: std::env::var(name.trim()).unwrap_or_else(|_| "unset".into()),
            });
        }
        let action = match subject {
            "PANIC" => panic!("hostile filter panicked on purpose"),
            "LOOP" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "ALLOC" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 * 1024 * 1024]);
                    std::hint::black_box(&hoard);
                }
            }
            "BADFOLDER" => Action::FileInto("../escape".into()),
            "REJECT" => Action::Reject("hostile filter says no".into()),
            "ERROR" => return Err("hostile filter cannot decide on purpose".into()),
            _ => Action::Accept,
        };
        add_headers.push(Header {
            name: "X-Hostile".into(),
            value: "passed".into(),
        });
        Ok(Verdict {
            action,
            add_headers,
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Plugin);
