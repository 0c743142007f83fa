//! systemd socket activation (`sd_listen_fds(3)`): when `LISTEN_PID` is
//! this process and `LISTEN_FDS=n`, file descriptors 3 to 3+n-1 are
//! listening sockets systemd (or `systemd-socket-activate`, or any
//! supervisor speaking the protocol) bound for us, named by
//! `LISTEN_FDNAMES` (`FileDescriptorName=` in the `.socket` unit).
//!
//! Each configured listener (POP3, LMTP, admin) takes the passed socket
//! bound to its address (`getsockname`; `0.0.0.0:110` and `[::]:110` count
//! as the same wildcard), or else the next unused one named after its role:
//! `pop3` (a `starttls` listener), `pop3s` (`implicit`), `lmtp`, `admin`.
//! A listener without a passed socket binds its address itself; a passed
//! socket no listener wants is logged and closed.
//!
//! The variables are removed from the environment once read, as
//! `sd_listen_fds(1)` does, so nothing this process starts inherits them.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// What a configured socket is for; its `FileDescriptorName=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A `starttls` POP3 listener.
    Pop3,
    /// An `implicit` TLS POP3 listener.
    Pop3s,
    Lmtp,
    Admin,
}

impl Role {
    /// The `FileDescriptorName=` that selects this role.
    pub fn fd_name(self) -> &'static str {
        match self {
            Role::Pop3 => "pop3",
            Role::Pop3s => "pop3s",
            Role::Lmtp => "lmtp",
            Role::Admin => "admin",
        }
    }
}

/// Where a configured listener listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a passed descriptor turned out to be.
#[derive(Debug, Clone)]
enum Bound {
    Inet(SocketAddr),
    Unix(Option<PathBuf>),
}

/// One passed descriptor, until a listener takes it.
#[derive(Debug)]
struct Passed {
    fd: Option<OwnedFd>,
    number: RawFd,
    name: String,
    bound: Bound,
}

impl Passed {
    fn describe(&self) -> String {
        let at = match &self.bound {
            Bound::Inet(a) => a.to_string(),
            Bound::Unix(Some(p)) => p.display().to_string(),
            Bound::Unix(None) => "an unnamed Unix socket".into(),
        };
        format!("fd {} ({at}, name {:?})", self.number, self.name)
    }

    fn is_at(&self, endpoint: &Endpoint) -> bool {
        match (&self.bound, endpoint) {
            (Bound::Inet(have), Endpoint::Tcp(want)) => {
                have == want
                    || (have.port() == want.port()
                        && have.ip().is_unspecified()
                        && want.ip().is_unspecified())
            }
            (Bound::Unix(Some(have)), Endpoint::Unix(want)) => have == want,
            _ => false,
        }
    }

    fn same_kind(&self, endpoint: &Endpoint) -> bool {
        matches!(
            (&self.bound, endpoint),
            (Bound::Inet(_), Endpoint::Tcp(_)) | (Bound::Unix(_), Endpoint::Unix(_))
        )
    }
}

/// The sockets passed by the service manager (none when not activated).
#[derive(Debug, Default)]
pub struct Activation {
    passed: Vec<Passed>,
}

impl Activation {
    /// Not socket-activated: every listener binds its own address.
    pub fn none() -> Activation {
        Activation::default()
    }

    /// Takes the passed sockets, if `LISTEN_PID` names this process, and
    /// removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from the
    /// environment. Call it before any other thread starts (it changes the
    /// environment), and at most once (it takes ownership of the fds).
    pub fn from_env() -> Result<Activation> {
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            // SAFETY: called from `main` before the async runtime, the
            // epoch ticker or any other thread exists: nothing reads the
            // environment concurrently.
            unsafe { std::env::remove_var(var) };
        }
        let (Some(pid), Some(fds)) = (pid, fds) else {
            return Ok(Activation::none());
        };
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            tracing::debug!(
                listen_pid = %pid,
                "LISTEN_FDS is meant for another process; binding the listeners"
            );
            return Ok(Activation::none());
        }
        let Ok(count) = fds.trim().parse::<RawFd>() else {
            bail!("socket activation: LISTEN_FDS={fds:?} is not a number");
        };
        if !(0..=4096).contains(&count) {
            bail!("socket activation: LISTEN_FDS={count} is out of range");
        }
        let mut names: Vec<String> = names
            .map(|n| n.split(':').map(str::to_string).collect())
            .unwrap_or_default();
        if names.len() != count as usize {
            if !names.is_empty() {
                tracing::warn!(
                    "socket activation: LISTEN_FDNAMES has {} names for {count} sockets; ignoring the names",
                    names.len()
                );
            }
            names = vec![String::new(); count as usize];
        }
        let mut passed = Vec::new();
        for (i, name) in names.into_iter().enumerate() {
            let number = FIRST_FD + i as RawFd;
            // SAFETY: F_GETFD only asks whether the descriptor is open.
            if unsafe { libc::fcntl(number, libc::F_GETFD) } < 0 {
                bail!("socket activation: LISTEN_FDS={count} but fd {number} is not open");
            }
            // SAFETY: the protocol hands descriptors 3.. to this process;
            // nothing else in it owns them, and each is wrapped once.
            let fd = unsafe { OwnedFd::from_raw_fd(number) };
            // Not inherited by anything this process might start.
            // SAFETY: sets a flag on a descriptor we own.
            unsafe { libc::fcntl(number, libc::F_SETFD, libc::FD_CLOEXEC) };
            let bound = inspect(&fd).map_err(|why| {
                anyhow::anyhow!("socket activation: fd {number} (name {name:?}) {why}")
            })?;
            passed.push(Passed {
                fd: Some(fd),
                number,
                name,
                bound,
            });
        }
        if !passed.is_empty() {
            tracing::info!(sockets = passed.len(), "socket-activated");
        }
        Ok(Activation { passed })
    }

    /// Whether any socket was passed.
    pub fn is_empty(&self) -> bool {
        self.passed.is_empty()
    }

    /// Hands each wanted endpoint its passed socket, if there is one: first
    /// by address, then by role name. The result is in `wanted`'s order.
    pub fn assign(&mut self, wanted: &[(Endpoint, Role)]) -> Vec<Option<OwnedFd>> {
        let mut out: Vec<Option<OwnedFd>> = wanted.iter().map(|_| None).collect();
        if self.passed.is_empty() {
            return out;
        }
        for (slot, (endpoint, role)) in out.iter_mut().zip(wanted) {
            if let Some(p) = self
                .passed
                .iter_mut()
                .find(|p| p.fd.is_some() && p.is_at(endpoint))
            {
                tracing::info!(
                    listener = %endpoint,
                    role = role.fd_name(),
                    "using the socket passed by the service manager, {}",
                    p.describe()
                );
                *slot = p.fd.take();
            }
        }
        for (slot, (endpoint, role)) in out.iter_mut().zip(wanted) {
            if slot.is_some() {
                continue;
            }
            if let Some(p) = self
                .passed
                .iter_mut()
                .find(|p| p.fd.is_some() && p.name == role.fd_name() && p.same_kind(endpoint))
            {
                tracing::info!(
                    listener = %endpoint,
                    role = role.fd_name(),
                    "using the socket passed by the service manager by name, {}",
                    p.describe()
                );
                *slot = p.fd.take();
            }
        }
        out
    }

    /// Closes the passed sockets no listener took, saying so.
    pub fn finish(self) {
        for p in self.passed {
            if p.fd.is_some() {
                tracing::warn!(
                    "socket activation: {} matches no configured listener (by address, or by \
                     the names pop3, pop3s, lmtp, admin); closing it",
                    p.describe()
                );
            }
        }
    }
}

/// A passed descriptor must be a listening stream socket; returns where it
/// is bound.
fn inspect(fd: &OwnedFd) -> std::result::Result<Bound, String> {
    let raw = fd.as_raw_fd();
    let int_opt = |option| -> std::result::Result<libc::c_int, String> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len describe a c_int the kernel may write.
        let r = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_SOCKET,
                option,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r == 0 {
            Ok(value)
        } else {
            Err(format!(
                "is not a socket ({})",
                std::io::Error::last_os_error()
            ))
        }
    };
    if int_opt(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err("is not a stream (TCP or Unix stream) socket".into());
    }
    if int_opt(libc::SO_ACCEPTCONN)? == 0 {
        return Err("is not listening (use Accept=no in the .socket unit)".into());
    }
    // SAFETY: an all-zero sockaddr_storage is a valid value to overwrite.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len describe a buffer the kernel may write.
    let r = unsafe {
        libc::getsockname(
            raw,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(format!(
            "has no local address ({})",
            std::io::Error::last_os_error()
        ));
    }
    let dup = || {
        fd.try_clone()
            .map_err(|e| format!("cannot be duplicated: {e}"))
    };
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET | libc::AF_INET6 => {
            let l = std::net::TcpListener::from(dup()?);
            l.local_addr()
                .map(Bound::Inet)
                .map_err(|e| format!("has no usable address: {e}"))
        }
        libc::AF_UNIX => {
            let l = std::os::unix::net::UnixListener::from(dup()?);
            let addr = l
                .local_addr()
                .map_err(|e| format!("has no usable address: {e}"))?;
            Ok(Bound::Unix(addr.as_pathname().map(Path::to_path_buf)))
        }
        other => Err(format!("has an unsupported address family ({other})")),
    }
}

/// A passed TCP socket as a tokio listener.
pub fn tcp_listener(fd: OwnedFd) -> std::io::Result<tokio::net::TcpListener> {
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

/// A passed Unix stream socket as a tokio listener.
pub fn unix_listener(fd: OwnedFd) -> std::io::Result<tokio::net::UnixListener> {
    let l = std::os::unix::net::UnixListener::from(fd);
    l.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(l: &std::net::TcpListener, name: &str) -> Passed {
        let fd = OwnedFd::from(l.try_clone().unwrap());
        let bound = inspect(&fd).unwrap();
        Passed {
            number: fd.as_raw_fd(),
            fd: Some(fd),
            name: name.into(),
            bound,
        }
    }

    #[test]
    fn matches_by_address_then_by_name() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a_addr = a.local_addr().unwrap();
        let mut act = Activation {
            passed: vec![passed(&b, "pop3s"), passed(&a, "pop3")],
        };
        let wanted = [
            (Endpoint::Tcp("127.0.0.1:1".parse().unwrap()), Role::Pop3s),
            (Endpoint::Tcp(a_addr), Role::Pop3),
            (Endpoint::Tcp("127.0.0.1:2".parse().unwrap()), Role::Lmtp),
        ];
        let got = act.assign(&wanted);
        let addr = |fd: &Option<OwnedFd>| {
            let l = std::net::TcpListener::from(fd.as_ref().unwrap().try_clone().unwrap());
            l.local_addr().unwrap()
        };
        assert_eq!(addr(&got[1]), a_addr, "by address");
        assert_eq!(addr(&got[0]), b.local_addr().unwrap(), "by name");
        assert!(got[2].is_none(), "nothing left for lmtp");
        act.finish();
    }

    #[test]
    fn refuses_what_is_not_a_listening_stream_socket() {
        let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = inspect(&OwnedFd::from(x)).unwrap_err();
        assert!(e.contains("not listening"), "{e}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = inspect(&OwnedFd::from(udp)).unwrap_err();
        assert!(e.contains("stream"), "{e}");
        let file = std::fs::File::open("/dev/null").unwrap();
        let e = inspect(&OwnedFd::from(file)).unwrap_err();
        assert!(e.contains("not a socket"), "{e}");
    }

    #[test]
    fn wildcards_match_across_families() {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let p = passed(&l, "");
        assert!(p.is_at(&Endpoint::Tcp(format!("[::]:{port}").parse().unwrap())));
        assert!(!p.is_at(&Endpoint::Tcp(format!("127.0.0.1:{port}").parse().unwrap())));
    }
}
