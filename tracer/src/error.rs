//! Failures the user can act on, each one line, and the exit code it means.
use std::fmt;

/// What kind of failure, and so the exit code (the only place exit codes are decided, with
/// `cmd::exit_code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The machine cannot run the tracer as asked (privileges, BTF, hooks): exit code 1.
    Environment = 1,
    /// Bad command-line input: exit code 2, like clap's usage errors.
    Input = 2,
    /// A soak run breached a threshold (`memstall soak`): exit code 3.
    Breach = 3,
}

/// A failure the user can fix, printed as one line with no error chain.
#[derive(Debug)]
pub struct UserError {
    message: String,
    pub failure: Failure,
}

impl UserError {
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(Failure::Input, message)
    }

    pub fn breach(message: impl Into<String>) -> Self {
        Self::new(Failure::Breach, message)
    }

    pub fn environment(message: impl Into<String>) -> Self {
        Self::new(Failure::Environment, message)
    }

    fn new(failure: Failure, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            failure,
        }
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}
