//! A gate on bpfsnap's system calls (seccomp user notification): stops it
//! at an exact point of its run, for tests of what a signal, a full disk or
//! a kill does there.

use std::process::Command;
use std::time::Instant;

use super::PATIENCE;

/// A system call of the gated process, stopped before it runs until
/// [`SyscallGate::resume`] lets it go on.
#[derive(Debug, Clone, Copy)]
pub struct Trapped {
    pub id: u64,
    /// The calling thread.
    pub pid: u32,
    pub nr: i64,
    pub args: [u64; 6],
}

impl Trapped {
    /// The NUL-terminated string argument `index` (a path), read from the
    /// stopped thread's memory.
    pub fn string_arg(&self, index: usize) -> Option<Vec<u8>> {
        self.c_string_at(self.args[index])
    }

    /// The path a trapped bpf(BPF_OBJ_PIN) pins at: the `pathname` pointer
    /// that starts its `union bpf_attr`, read from the stopped thread.
    pub fn bpf_pin_path(&self) -> Option<Vec<u8>> {
        let mut pointer = [0u8; 8];
        if self.read_at(&mut pointer, self.args[1])? != pointer.len() {
            return None;
        }
        self.c_string_at(u64::from_ne_bytes(pointer))
    }

    /// The NUL-terminated string at `address` in the stopped thread.
    fn c_string_at(&self, address: u64) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        let n = self.read_at(&mut buf, address)?;
        buf.truncate(n);
        let end = buf.iter().position(|&b| b == 0)?;
        buf.truncate(end);
        Some(buf)
    }

    /// Reads the stopped thread's memory at `address` into `buf`: bytes read.
    fn read_at(&self, buf: &mut [u8], address: u64) -> Option<usize> {
        use std::os::unix::fs::FileExt;
        let mem = std::fs::File::open(format!("/proc/{}/mem", self.pid)).ok()?;
        mem.read_at(buf, address).ok()
    }

    /// bpf(2)'s command, for a trapped bpf call.
    pub fn bpf_cmd(&self) -> u32 {
        self.args[0] as u32
    }
}

/// Which system calls a [`SyscallGate`] stops.
#[derive(Debug, Clone, Copy)]
pub enum Trap {
    Syscall(i64),
    /// The call when its first argument (low 32 bits) is the value: bpf(cmd).
    Arg0(i64, u32),
    /// The call when its third argument has one of these bits: openat(flags).
    Arg2Bits(i64, u32),
}

/// bpf(2) commands (linux/bpf.h).
pub const BPF_PROG_LOAD: u32 = 5;
pub const BPF_OBJ_PIN: u32 = 6;
pub const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;
pub const BPF_LINK_CREATE: u32 = 28;

/// Stops chosen system calls of a child before they run (seccomp user
/// notification, the kernel's own mechanism: no ptrace, no timing), so a
/// test can act at an exact point of bpfsnap's run — the first program load,
/// the first attach, the rename that publishes a file — and then let it go
/// on. Needs root (or no_new_privs) and Linux ≥ 5.19.
pub struct SyscallGate {
    listener: std::os::fd::OwnedFd,
}

impl SyscallGate {
    /// Arms `command` so the process it starts runs under a filter stopping
    /// `traps`; call [`SyscallGate::connect`] right after spawning it.
    pub fn arm(command: &mut Command, traps: &[Trap]) -> GateSocket {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let mut pair = [0i32; 2];
        // SAFETY: plain socketpair(2) into a two-int array.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
        // SAFETY: fresh descriptors we own.
        let (parent, child) =
            unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        let filter = seccomp_filter(traps);
        let child_fd = child.as_raw_fd();
        // SAFETY: the hook only makes async-signal-safe system calls and does
        // not allocate: the filter was built before the fork.
        unsafe {
            command.pre_exec(move || {
                let prog = libc::sock_fprog {
                    len: filter.len() as u16,
                    filter: filter.as_ptr() as *mut libc::sock_filter,
                };
                let install = |flags: libc::c_ulong| {
                    libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_SET_MODE_FILTER,
                        flags,
                        &prog as *const libc::sock_fprog,
                    )
                };
                let mut fd = install(
                    libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
                        | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                );
                // Kernels before 5.19 lack WAIT_KILLABLE_RECV (EINVAL): there
                // a signal that bpfsnap handles interrupts a trapped call
                // (which restarts), and SIGKILL works as everywhere.
                if fd < 0 && *libc::__errno_location() == libc::EINVAL {
                    fd = install(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER);
                }
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                send_fd(child_fd, fd as i32)?;
                libc::close(fd as i32);
                Ok(())
            });
        }
        GateSocket {
            parent,
            _child: child,
        }
    }

    /// The next trapped call; None once no process runs under the filter.
    /// Panics after [`PATIENCE`] without either (a hang guard).
    pub fn next(&self) -> Option<Trapped> {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut poll = libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, 200) };
            if ready > 0 && poll.revents & libc::POLLIN != 0 {
                // SAFETY: the kernel fills a zeroed seccomp_notif.
                let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
                let rc = unsafe {
                    libc::ioctl(
                        self.listener.as_raw_fd(),
                        libc::SECCOMP_IOCTL_NOTIF_RECV,
                        &mut notif,
                    )
                };
                if rc == 0 {
                    return Some(Trapped {
                        id: notif.id,
                        pid: notif.pid,
                        nr: i64::from(notif.data.nr),
                        args: notif.data.args,
                    });
                }
                // ENOENT: the caller went away meanwhile; wait for the next.
                continue;
            }
            if ready > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "no trapped system call and no exit within {PATIENCE:?}"
            );
        }
    }

    /// Lets a trapped call run (as if it had never been stopped).
    pub fn resume(&self, call: &Trapped) {
        use std::os::fd::AsRawFd;
        let mut response = libc::seccomp_notif_resp {
            id: call.id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        // SAFETY: a valid response; ENOENT (the caller died) is fine.
        unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut response,
            )
        };
    }

    /// Fails a trapped call with `errno`, as the kernel would have failed it.
    pub fn fail(&self, call: &Trapped, errno: i32) {
        use std::os::fd::AsRawFd;
        let mut response = libc::seccomp_notif_resp {
            id: call.id,
            val: 0,
            error: -errno,
            flags: 0,
        };
        // SAFETY: a valid response; ENOENT (the caller died) is fine.
        unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut response,
            )
        };
    }

    /// Resumes trapped calls until one satisfies `wanted`, which stays
    /// stopped; panics if the process exits first.
    pub fn stop_at(&self, what: &str, wanted: impl Fn(&Trapped) -> bool) -> Trapped {
        loop {
            let call = self
                .next()
                .unwrap_or_else(|| panic!("bpfsnap exited before {what}"));
            if wanted(&call) {
                return call;
            }
            self.resume(&call);
        }
    }

    /// Resumes every call from now on, on a thread of its own, until the
    /// process is gone.
    pub fn release(self) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            let mut resumed = 0;
            while let Some(call) = self.next() {
                self.resume(&call);
                resumed += 1;
            }
            resumed
        })
    }
}

/// The parent's end of an armed command's socket (see [`SyscallGate::arm`]).
pub struct GateSocket {
    parent: std::os::fd::OwnedFd,
    _child: std::os::fd::OwnedFd,
}

impl GateSocket {
    /// Receives the gate of the process just spawned from the armed command.
    pub fn connect(self) -> SyscallGate {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        drop(self._child);
        let fd = recv_fd(self.parent.as_raw_fd()).expect("receive the seccomp listener");
        SyscallGate {
            // SAFETY: a descriptor we just received and own.
            listener: unsafe { OwnedFd::from_raw_fd(fd) },
        }
    }
}

/// A classic BPF seccomp program: USER_NOTIF for `traps`, ALLOW otherwise.
fn seccomp_filter(traps: &[Trap]) -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let allow = libc::SECCOMP_RET_ALLOW;
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    let mut prog = vec![
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 1, 0, ARCH),
        op(RET_K, 0, 0, allow),
    ];
    for trap in traps {
        match *trap {
            Trap::Syscall(nr) => prog.extend([
                op(LD_W_ABS, 0, 0, 0),
                op(JEQ_K, 0, 1, nr as u32),
                op(RET_K, 0, 0, notify),
            ]),
            Trap::Arg0(nr, value) => prog.extend([
                op(LD_W_ABS, 0, 0, 0),
                op(JEQ_K, 0, 3, nr as u32),
                op(LD_W_ABS, 0, 0, 16),
                op(JEQ_K, 0, 1, value),
                op(RET_K, 0, 0, notify),
            ]),
            Trap::Arg2Bits(nr, bits) => prog.extend([
                op(LD_W_ABS, 0, 0, 0),
                op(JEQ_K, 0, 3, nr as u32),
                op(LD_W_ABS, 0, 0, 32),
                op(JSET_K, 0, 1, bits),
                op(RET_K, 0, 0, notify),
            ]),
        }
    }
    prog.push(op(RET_K, 0, 0, allow));
    prog
}

/// Sends `fd` over the unix socket `sock` (SCM_RIGHTS); async-signal-safe.
unsafe fn send_fd(sock: i32, fd: i32) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 8];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = libc::CMSG_SPACE(4) as _;
    let cmsg = libc::CMSG_FIRSTHDR(&msg);
    (*cmsg).cmsg_level = libc::SOL_SOCKET;
    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
    (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
    if libc::sendmsg(sock, &msg, 0) < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`].
fn recv_fd(sock: i32) -> std::io::Result<i32> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 8];
    // SAFETY: a msghdr over buffers that outlive the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&space) as _;
        if libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) <= 0 {
            return Err(std::io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::other("no descriptor received"));
        }
        Ok(std::ptr::read_unaligned(
            libc::CMSG_DATA(cmsg).cast::<i32>(),
        ))
    }
}
