//! A process whose standard output is a pipe that its reader closes early, as in `cmd | head -1`
//! or `cmd | true`: what every noco command line must survive quietly.

// Synchronous test code: blocking sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Seek};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::patience;

/// How a process ended whose reader stopped early.
#[derive(Debug)]
pub struct ClosedPipe {
    pub status: ExitStatus,
    /// The lines read before the pipe was closed.
    pub read: Vec<String>,
    pub stderr: String,
}

impl ClosedPipe {
    /// Exit 0 and nothing on stderr about the pipe: no panic, no "Broken pipe" (noco's choice
    /// for a closed output pipe, as README says under exit codes).
    pub fn assert_quiet(&self, what: &str) {
        assert_eq!(
            self.status.code(),
            Some(0),
            "{what}: a closed output pipe must end the program quietly with exit 0, got {}; stderr:\n{}",
            self.status,
            self.stderr
        );
        for noise in ["panicked", "Broken pipe", "failed printing"] {
            assert!(
                !self.stderr.contains(noise),
                "{what}: stderr says {noise:?}:\n{}",
                self.stderr
            );
        }
    }
}

/// Run `cmd` with its stdout a pipe from which `lines` lines are read before the read end is
/// closed (`cmd | head -n <lines>`); with `lines` 0 the read end is closed before the process
/// starts, so its first write already fails. Waits for the process to exit (killing it after
/// [`patience`]).
pub fn read_then_close(cmd: &mut Command, lines: usize) -> ClosedPipe {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let stderr = tempfile::tempfile().expect("a temporary file for stderr");
    cmd.stdout(writer)
        .stderr(stderr.try_clone().expect("stderr file"))
        .stdin(Stdio::null());
    let mut read = Vec::new();
    let mut child = if lines == 0 {
        drop(reader);
        cmd.spawn().expect("spawning the command")
    } else {
        let child = cmd.spawn().expect("spawning the command");
        let mut reader = BufReader::new(reader);
        while read.len() < lines {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => read.push(line),
            }
        }
        child
    };
    // The parent's copy of the write end lives in `cmd`: drop it, so that only the child holds
    // the pipe open and the read end (closed above, or here) is the only reader.
    cmd.stdout(Stdio::null());
    let deadline = Instant::now() + patience();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{:?} did not exit within {:?} after its output pipe was closed",
                cmd.get_program(),
                patience()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = stderr;
    let mut text = String::new();
    let _ = stderr.rewind();
    let _ = stderr.read_to_string(&mut text);
    ClosedPipe {
        status,
        read,
        stderr: text,
    }
}
