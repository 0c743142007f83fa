//! The same filter written in Python, JavaScript and C (examples/filters),
//! each delivered through end to end. Build them first with
//! `examples/filters/build-all.sh` (tests/run.sh does).

use std::path::{Path, PathBuf};

use crate::delivery::{fetch_all, lmtp_config, lmtp_tcp};
use crate::harness::TestServer;

fn example(lang: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/filters")
        .join(lang)
        .join("filter.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run examples/filters/install-deps.sh (as root) and \
         examples/filters/build-all.sh, or tests/run.sh",
        path.display()
    );
    path
}

/// Delivers the four kinds of message through the `lang` filter and checks
/// each verdict.
fn exercise(lang: &str) {
    let path = example(lang);
    let opts = lmtp_config(&format!(
        "[delivery]\nchain = [{{ filter = \"{lang}\" }}]\n\
         [filter.{lang}]\npath = \"{}\"\ntimeout_ms = 10000\n",
        path.display()
    ));
    let s = TestServer::start_with(opts.clone());
    let mut c = lmtp_tcp(&s);
    let mut send = |from: &str, body: &str| c.send_mail(from, &["dave@x"], body).remove(0);
    assert_eq!(
        send("a@b", "Subject: hello\n\nplain text"),
        "250 2.0.0 <dave@x> Saved\r\n"
    );
    assert_eq!(
        send("a@b", "Subject: [SPAM] pills\n\nbuy"),
        "250 2.0.0 <dave@x> Saved\r\n"
    );
    assert_eq!(
        send("blocked@example.org", "Subject: hi\n\nhi"),
        format!("550 5.7.1 <dave@x> sender blocked by {lang} filter\r\n")
    );
    assert_eq!(
        send("a@b", "Subject: bye\n\nplease DISCARD-ME now"),
        "250 2.0.0 <dave@x> Accepted and discarded\r\n"
    );
    let inbox = fetch_all(&s, "dave", "dave-pw");
    assert_eq!(inbox.len(), 1);
    let text = String::from_utf8_lossy(&inbox[0]).into_owned();
    assert!(
        text.contains(&format!("\r\nX-Poplar-Filter: {lang}\r\n")),
        "{text}"
    );
    assert!(
        text.contains("\r\nX-Poplar-Body-Prefix-Octets: 12\r\n"),
        "{text}"
    );
    let junk = fetch_all(&s, "dave+Junk", "dave-pw");
    assert_eq!(junk.len(), 1);
    assert!(String::from_utf8_lossy(&junk[0]).contains("Subject: [SPAM] pills"));
    s.wait_for_log(&format!("filter={lang}"));

    // A second start finds the compiled component in the cache instead of
    // compiling it again.
    drop(s);
    let s = TestServer::start_with(opts);
    s.wait_for_log(&format!("{}", path.display()));
    assert!(
        s.log()
            .lines()
            .any(|l| l.contains("loaded the compiled plugin from the cache")
                && l.contains(&path.display().to_string())),
        "{}",
        s.log()
    );
}

#[test]
fn python_filter() {
    exercise("python");
}

#[test]
fn javascript_filter() {
    exercise("js");
}

#[test]
fn c_filter() {
    exercise("c");
}
