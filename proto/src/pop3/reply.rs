//! Formatting POP3 replies: status lines with optional RFC 2449/3206
//! response codes, and multi-line responses.

/// An extended response code (RFC 2449 §8, RFC 3206).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Credentials were wrong (RFC 3206).
    Auth,
    /// The maildrop is in use by another session (RFC 2449).
    InUse,
    /// The user logged in too soon after the previous login (RFC 2449).
    LoginDelay,
    /// A passing problem; try again later (RFC 3206).
    SysTemp,
    /// A lasting problem; retrying will not help (RFC 3206).
    SysPerm,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Auth => "AUTH",
            Code::InUse => "IN-USE",
            Code::LoginDelay => "LOGIN-DELAY",
            Code::SysTemp => "SYS/TEMP",
            Code::SysPerm => "SYS/PERM",
        }
    }
}

/// `+OK text\r\n`.
pub fn ok(text: &str) -> Vec<u8> {
    format!("+OK {text}\r\n").into_bytes()
}

/// `-ERR text\r\n`.
pub fn err(text: &str) -> Vec<u8> {
    format!("-ERR {text}\r\n").into_bytes()
}

/// `-ERR [CODE] text\r\n`.
pub fn err_code(code: Code, text: &str) -> Vec<u8> {
    format!("-ERR [{}] {text}\r\n", code.as_str()).into_bytes()
}

/// `+OK text` followed by `lines` and the terminating `.` line. Lines
/// starting with `.` are dot-stuffed.
pub fn multi<S: AsRef<str>>(text: &str, lines: impl IntoIterator<Item = S>) -> Vec<u8> {
    let mut out = ok(text);
    for line in lines {
        let line = line.as_ref();
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(ok("hi"), b"+OK hi\r\n");
        assert_eq!(err("no"), b"-ERR no\r\n");
        assert_eq!(err_code(Code::InUse, "busy"), b"-ERR [IN-USE] busy\r\n");
        assert_eq!(
            multi("list", ["1 2", ".x"]),
            b"+OK list\r\n1 2\r\n..x\r\n.\r\n"
        );
    }
}
