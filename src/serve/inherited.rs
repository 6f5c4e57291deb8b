//! Listening sockets bpfsnap is given rather than opens: ebpf_exporter's
//! `fd://N` listen address (a descriptor the parent left open), and
//! systemd's socket activation (`--web.systemd-socket`, as exporter-toolkit
//! takes it: the descriptors from 3 on, LISTEN_FDS of them, when LISTEN_PID
//! is this process; sd_listen_fds(3)).
//!
//! Each must be a listening TCP socket (IPv4 or IPv6): anything else is
//! refused at start with what it is, rather than failing at the first
//! connection.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

use anyhow::{anyhow, Result};

use crate::BadInput;

/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
const SYSTEMD_FIRST_FD: RawFd = 3;

/// The listening socket of descriptor `fd`, named `given` in errors (as
/// the user wrote it); bpfsnap owns it from now on.
pub fn listener(fd: RawFd, given: &str) -> Result<TcpListener> {
    let refuse = |what: String| BadInput::wrap(anyhow!("{given}: {what}"));
    let option = |level, name| -> Result<libc::c_int, std::io::Error> {
        let mut value: libc::c_int = 0;
        let mut length = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `length` bytes into `value`.
        let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut length) };
        match rc {
            0 => Ok(value),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    let domain = option(libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(|err| {
        refuse(format!(
            "descriptor {fd} is not an open socket ({err}): give a listening TCP socket's"
        ))
    })?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(refuse(format!(
            "descriptor {fd} is not an IPv4 or IPv6 socket (address family {domain}): \
             bpfsnap serves TCP only"
        )));
    }
    let stream = option(libc::SOL_SOCKET, libc::SO_TYPE).is_ok_and(|t| t == libc::SOCK_STREAM);
    let listening = option(libc::SOL_SOCKET, libc::SO_ACCEPTCONN).is_ok_and(|on| on == 1);
    if !stream || !listening {
        return Err(refuse(format!(
            "descriptor {fd} is not a listening TCP socket: give one that listen(2) was \
             called on (systemd: ListenStream=)"
        )));
    }
    // SAFETY: fcntl on a descriptor just checked to be open.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: `fd` is an open listening TCP socket that nothing else in
    // this process owns (the parent handed it over for bpfsnap to serve).
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

/// The descriptors systemd passed this process: LISTEN_FDS of them from 3
/// on, if LISTEN_PID is this process.
pub fn systemd_fds(listen_pid: Option<&str>, listen_fds: Option<&str>) -> Result<Vec<RawFd>> {
    let missing = |what: &str| {
        BadInput::wrap(anyhow!(
            "--web.systemd-socket: {what}: start bpfsnap from a systemd .socket unit's \
             service, or give --web.listen-address instead"
        ))
    };
    let pid = listen_pid.ok_or_else(|| missing("LISTEN_PID is not set"))?;
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Err(missing(&format!(
            "LISTEN_PID is {pid:?}, not this process ({}): the sockets were meant for another",
            std::process::id()
        )));
    }
    let count = listen_fds
        .and_then(|count| count.parse::<RawFd>().ok())
        .filter(|count| *count > 0)
        .ok_or_else(|| {
            missing(&format!(
                "LISTEN_FDS is {listen_fds:?}, not a count of sockets"
            ))
        })?;
    Ok((SYSTEMD_FIRST_FD..SYSTEMD_FIRST_FD + count).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_passes_its_sockets_to_the_process_it_names() {
        let me = std::process::id().to_string();
        assert_eq!(systemd_fds(Some(&me), Some("2")).unwrap(), [3, 4]);
        for (pid, fds, says) in [
            (None, Some("1"), "LISTEN_PID is not set"),
            (Some("1"), Some("1"), "not this process"),
            (Some(me.as_str()), None, "not a count"),
            (Some(me.as_str()), Some("0"), "not a count"),
            (Some(me.as_str()), Some("x"), "not a count"),
        ] {
            let err = format!("{:#}", systemd_fds(pid, fds).unwrap_err());
            assert!(err.contains(says), "{pid:?} {fds:?}: {err}");
        }
    }

    #[test]
    fn only_listening_tcp_sockets_are_taken() {
        use std::os::fd::IntoRawFd;
        let file = std::fs::File::open("/proc/self/stat")
            .unwrap()
            .into_raw_fd();
        let err = format!("{:#}", listener(file, "fd://N").unwrap_err());
        assert!(err.contains("not an open socket"), "{err}");
        // SAFETY: the descriptor just opened, not owned by anything else.
        unsafe { libc::close(file) };
        let connected = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .into_raw_fd();
        let err = format!("{:#}", listener(connected, "fd://N").unwrap_err());
        assert!(err.contains("not a listening TCP socket"), "{err}");
        unsafe { libc::close(connected) };
        let bound = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = bound.local_addr().unwrap();
        let taken = listener(bound.into_raw_fd(), "fd://N").unwrap();
        assert_eq!(taken.local_addr().unwrap(), address);
    }
}
