//! `[http] max_connections` against the process's open-file limit: every connection is a
//! file descriptor, and running out of them fails accepts, Redis and component loads alike.

use std::io;

/// File descriptors kept for everything but client connections: the listener, Redis,
/// outbound HTTP, component files, the artifact cache, stdio.
const RESERVED_FDS: u64 = 256;

/// `max_connections`, clamped (with a warning) so that connections cannot use up the
/// open-file limit. A soft limit below what they need is first raised to the hard limit: the
/// usual soft default, 1,024, dates from `select(2)`; the hard limit is what the
/// administrator allows.
pub(super) fn clamp_to_fd_limit(max_connections: u32) -> usize {
    let wanted = u64::from(max_connections);
    let Some(limit) = raise_fd_limit(wanted + RESERVED_FDS) else {
        return usize::try_from(wanted).unwrap_or(usize::MAX);
    };
    let allowed = limit.saturating_sub(RESERVED_FDS).max(1);
    if wanted > allowed {
        tracing::warn!(
            "[http] max_connections {wanted} does not fit the open-file limit {limit} (less \
             {RESERVED_FDS} kept for the host); serving at most {allowed} connections"
        );
    }
    usize::try_from(wanted.min(allowed)).unwrap_or(usize::MAX)
}

/// The soft `RLIMIT_NOFILE` after raising it towards the hard limit when it is below
/// `needed`; `None` when it cannot be read.
#[cfg(target_os = "linux")]
#[expect(unsafe_code, reason = "getrlimit and setrlimit are C functions")]
fn raise_fd_limit(needed: u64) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur >= needed || limit.rlim_cur >= limit.rlim_max {
        return Some(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = io::Error::last_os_error();
        tracing::warn!(
            "raising the open-file limit from {} to {}: {e}",
            limit.rlim_cur,
            limit.rlim_max
        );
        return Some(limit.rlim_cur);
    }
    tracing::info!(
        "raised the open-file limit from {} to {} for [http] max_connections",
        limit.rlim_cur,
        limit.rlim_max
    );
    Some(limit.rlim_max)
}

#[cfg(not(target_os = "linux"))]
fn raise_fd_limit(_needed: u64) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        assert_eq!(clamp_to_fd_limit(10), 10);
        let huge = clamp_to_fd_limit(u32::MAX);
        assert!(huge >= 1 && huge < u32::MAX as usize, "{huge}");
    }
}
