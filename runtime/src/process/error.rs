//! Why a process tether starts in a container failed before exec: sent to the parent by the init,
//! and the exit code (126/127) of `tether exec`'s process.

/// Why a container process could not exec. The exit code of `tether exec` comes from the kind,
/// as a shell's does: 127 when the command (or a path on the way) does not exist, else 126.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildError {
    /// The command is not in `$PATH`, or its path does not exist.
    NotFound(String),
    /// A system call failed.
    Sys {
        what: String,
        errno: nix::errno::Errno,
    },
    Other(String),
}

impl ChildError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ChildError::NotFound(_)
            | ChildError::Sys {
                errno: nix::errno::Errno::ENOENT,
                ..
            } => 127,
            _ => 126,
        }
    }
}

impl std::fmt::Display for ChildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildError::NotFound(m) | ChildError::Other(m) => f.write_str(m),
            ChildError::Sys { what, errno } => write!(f, "{what}: {errno}"),
        }
    }
}

pub type ChildResult<T> = std::result::Result<T, ChildError>;

/// `.map_err(sys("what was being done"))` for nix calls.
pub fn sys(what: impl std::fmt::Display) -> impl FnOnce(nix::errno::Errno) -> ChildError {
    move |errno| ChildError::Sys {
        what: what.to_string(),
        errno,
    }
}
