//! How many connections this machine lets one broker serve. A connection costs one file
//! descriptor and two threads (its reader and its writer), and each
//! thread costs about four memory mappings (stack, guard page, signal stack and its guard).
//! Past either limit the operating system refuses a socket or a thread — and a thread that
//! cannot set up its signal stack aborts the whole process — so the broker lowers
//! `--max-connections` to what fits, and says so, instead of failing under load.

use std::fs;

/// Mappings a connection may need: two threads, four each.
const MAPS_PER_CONNECTION: usize = 8;
/// Mappings and descriptors kept for everything else in the process.
const RESERVE: usize = 1024;

/// The most connections the process limits allow, if they can be read (Linux).
pub fn connection_capacity() -> Option<usize> {
    let by_maps = read_number("/proc/sys/vm/max_map_count")
        .map(|maps| maps.saturating_sub(RESERVE) / MAPS_PER_CONNECTION);
    let by_files = open_file_limit().map(|files| files.saturating_sub(RESERVE.min(files / 2)));
    // The lower of the two that could be read.
    by_maps.into_iter().chain(by_files).min()
}

fn read_number(path: &str) -> Option<usize> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_file_limit() -> Option<usize> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_positive_where_limits_are_readable() {
        if let Some(cap) = connection_capacity() {
            assert!(cap > 0);
        }
    }
}
