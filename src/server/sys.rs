//! The server's only unsafe code, each call with what makes it sound: libc calls the standard
//! library and the crates in use do not wrap (allocator tuning, the descriptor limit, TCP_INFO).
#![allow(unsafe_code)]

use std::time::Duration;

use super::limits::Ending;

/// glibc's allocator, tuned so that memory freed after a burst goes back to the system: buffers
/// of 64 KiB and more (download chunks) get their own mappings, returned when freed (the default
/// threshold rises after the first free and then keeps such buffers in the heap, fragmented),
/// and at most four arenas serve the worker and blocking threads.
pub(crate) fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raise the soft descriptor limit to the hard one; the soft limit in force afterwards, or
/// `None` when it cannot be read.
pub(crate) fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Some(lim.rlim_cur)
}

/// A connection cut while data waits to go out (or to be read) is reset rather than closed: the
/// kernel would otherwise keep an orphan socket holding the unsent data, for minutes, trying to
/// deliver it to a client that does not read. (`fd` belongs to the connection, which is dropped
/// right after.)
pub(crate) fn abort_if_stuck(fd: std::os::fd::RawFd, why: Ending) {
    if !matches!(why, Ending::ResponseNotRead | Ending::BodyTooSlow) {
        return;
    }
    // SAFETY: the connection that owns `fd` is alive until the caller returns.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
}

/// Bytes the peer's TCP stack has acknowledged on socket `fd` (`tcpi_bytes_acked`, Linux 4.1 and
/// later): what a client has received, however much the server's kernel has buffered for it.
pub(crate) fn bytes_acked(fd: std::os::fd::RawFd) -> Option<u64> {
    // SAFETY: an all-zero tcp_info is valid (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, on a descriptor the caller's
    // connection keeps open.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + std::mem::size_of::<u64>();
    (rc == 0 && len as usize >= end).then_some(info.tcpi_bytes_acked)
}
