//! Facts about the machine the process runs on, read once where needed: its host name.
//! Reading is all this module does; callers decide on fallbacks.

#![forbid(unsafe_code)]

/// The kernel's host name (or `/etc/hostname`), trimmed; `None` when neither can be read or it is
/// empty.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The first label of [`host_name`] (`web1` of `web1.example.com`): what a node asks to be
/// certified as when no name is configured.
pub fn short_host_name() -> Option<String> {
    host_name()
        .and_then(|h| h.split('.').next().map(str::to_string))
        .filter(|s| !s.is_empty())
}
