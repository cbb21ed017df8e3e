//! How the command line writes: [`outln!`](crate::outln) and [`out!`](crate::out) instead of
//! `println!`/`print!`, which panic when the reader of stdout has gone away
//! (`noco-agent compose validate stack.yaml | head -1`). A closed stdout ends the agent at once
//! with exit 0, as `head`'s writer expects; another write error exits 2 (an environment
//! problem). Lines for stderr go through [`errln!`](crate::errln), which never fails.

use std::fmt;
use std::io::{self, Write};

/// `println!` for the agent's command-line output: see [`crate::out`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the agent's command-line output: see [`crate::out`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write_stdout(format_args!($($arg)*))
    };
}

/// `eprintln!` that does not panic: when stderr cannot be written there is nobody to tell.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Write to stdout; when that fails, end the agent (exit 0 when the reader went away).
pub fn write_stdout(args: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        write_stderr(format_args!("noco-agent: writing to stdout: {e}\n"));
        std::process::exit(2);
    }
}

/// Write to stderr, ignoring failure.
pub fn write_stderr(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// The same for code that still prints with `println!`/`print!`: their panic on a closed stdout
/// ("failed printing to stdout: Broken pipe") ends the agent quietly with exit 0 instead of
/// exit 101 and a panic message. (Not for stderr: the exit status of a failure whose message
/// could not be written must stay a failure; use [`errln!`](crate::errln) there.) Installed by
/// `main` before anything is printed.
pub fn exit_quietly_on_closed_stdout_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload_as_str().is_some_and(is_closed_stdout_panic) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Whether a panic message is std's for a print to a closed stdout.
fn is_closed_stdout_panic(message: &str) -> bool {
    message.starts_with("failed printing to stdout")
        && (message.contains("Broken pipe") || message.contains("(os error 32)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_std_print_panics_on_a_closed_stdout_are_recognised() {
        assert!(is_closed_stdout_panic(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(!is_closed_stdout_panic(
            "failed printing to stderr: Broken pipe (os error 32)"
        ));
        assert!(!is_closed_stdout_panic(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_closed_stdout_panic(
            "called `Option::unwrap()` on a `None` value"
        ));
    }
}
