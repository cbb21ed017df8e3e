//! Hooks run in a service's container through Docker's exec API, without a TTY (a TTY would mangle
//! a binary dump) and without a shell (argv as declared): a dump streams its stdout out, a restore
//! or verify hook gets the archive on its stdin. Output and error streams are demultiplexed; the
//! exit code comes from inspecting the exec once its streams end (it is null while it runs).

use std::collections::VecDeque;
use std::io;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::engine::docker_message;

/// How much of a hook's stderr (and, for restore hooks, stdout) is kept for the reason of a
/// failure.
const TAIL: usize = 4096;

/// The last bytes of a stream.
#[derive(Default)]
struct Tail(VecDeque<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend(bytes);
        while self.0.len() > TAIL {
            self.0.pop_front();
        }
    }

    fn text(&self) -> String {
        let bytes: Vec<u8> = self.0.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_owned()
    }
}

fn describe(argv: &[String], code: Option<i64>, stderr: &str) -> String {
    let name = argv.first().map(String::as_str).unwrap_or("the hook");
    let code = code.map_or_else(|| "with no exit code".to_owned(), |c| format!("{c}"));
    if stderr.is_empty() {
        format!("{name} exited {code}")
    } else {
        format!("{name} exited {code}: {stderr}")
    }
}

async fn start(
    docker: &Docker,
    container: &str,
    argv: &[String],
    stdin: bool,
) -> Result<(String, StartExecResults), String> {
    let config = ExecConfig {
        cmd: Some(argv.to_vec()),
        attach_stdin: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, config)
        .await
        .map_err(|e| format!("exec {argv:?} in {container}: {}", docker_message(&e)))?;
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: Some(1 << 20),
            }),
        )
        .await
        .map_err(|e| format!("exec {argv:?} in {container}: {}", docker_message(&e)))?;
    Ok((created.id, started))
}

async fn exit_code(docker: &Docker, id: &str) -> Result<Option<i64>, String> {
    // The streams end as the process exits; its code may take a moment to be recorded.
    for _ in 0..50 {
        let inspect = docker
            .inspect_exec(id)
            .await
            .map_err(|e| format!("inspecting the exec: {}", docker_message(&e)))?;
        if inspect.running != Some(true) && inspect.exit_code.is_some() {
            return Ok(inspect.exit_code);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// Run a dump hook: its stdout goes into `out` chunk by chunk (bounded by the channel); when it
/// ends with an exit code other than 0, or the streams fail, an `Err` chunk goes last so the
/// reader fails too. Returns the byte count, or why it failed.
pub async fn dump(
    docker: &Docker,
    container: &str,
    argv: &[String],
    out: mpsc::Sender<io::Result<Vec<u8>>>,
) -> Result<u64, String> {
    let result = dump_inner(docker, container, argv, &out).await;
    if let Err(e) = &result {
        let _ = out.send(Err(io::Error::other(e.clone()))).await;
    }
    result
}

async fn dump_inner(
    docker: &Docker,
    container: &str,
    argv: &[String],
    out: &mpsc::Sender<io::Result<Vec<u8>>>,
) -> Result<u64, String> {
    let (id, started) = start(docker, container, argv, false).await?;
    let StartExecResults::Attached { mut output, .. } = started else {
        return Err("the exec started detached".to_owned());
    };
    let mut stderr = Tail::default();
    let mut bytes = 0u64;
    while let Some(item) = output.next().await {
        match item {
            Ok(LogOutput::StdOut { message }) => {
                bytes += message.len() as u64;
                if out.send(Ok(message.to_vec())).await.is_err() {
                    return Err("the archive writer stopped".to_owned());
                }
            }
            Ok(LogOutput::StdErr { message }) => stderr.push(&message),
            Ok(_) => {}
            Err(e) => return Err(format!("reading the dump: {}", docker_message(&e))),
        }
    }
    let code = exit_code(docker, &id).await?;
    if code != Some(0) {
        return Err(describe(argv, code, &stderr.text()));
    }
    if !stderr.0.is_empty() {
        tracing::info!("{:?} wrote on stderr: {}", argv, stderr.text());
    }
    Ok(bytes)
}

/// Run a restore or verify hook with `input` on its stdin (closed when the channel ends). Returns
/// its output's tail when it exits 0, else why it failed.
pub async fn feed(
    docker: &Docker,
    container: &str,
    argv: &[String],
    mut input: mpsc::Receiver<io::Result<Vec<u8>>>,
) -> Result<String, String> {
    let (id, started) = start(docker, container, argv, true).await?;
    let StartExecResults::Attached {
        mut output,
        input: mut stdin,
    } = started
    else {
        return Err("the exec started detached".to_owned());
    };
    let writer = async move {
        while let Some(chunk) = input.recv().await {
            let chunk = chunk.map_err(|e| format!("reading the archive: {e}"))?;
            if let Err(e) = stdin.write_all(&chunk).await {
                // The hook stopped reading (it exited): its exit code says why.
                tracing::debug!("writing the hook's stdin: {e}");
                return Ok(false);
            }
        }
        stdin
            .shutdown()
            .await
            .map_err(|e| format!("closing the hook's stdin: {e}"))?;
        Ok::<bool, String>(true)
    };
    let reader = async move {
        let mut tail = Tail::default();
        while let Some(item) = output.next().await {
            match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::StdErr { message }) => {
                    tail.push(&message)
                }
                Ok(_) => {}
                Err(e) => return Err(format!("reading the hook's output: {}", docker_message(&e))),
            }
        }
        Ok(tail)
    };
    let (written, tail) = tokio::join!(writer, reader);
    let tail = tail?;
    let code = exit_code(docker, &id).await?;
    if code != Some(0) {
        return Err(describe(argv, code, &tail.text()));
    }
    if !written? {
        return Err(format!(
            "{} exited 0 before reading the whole archive",
            argv.first().map(String::as_str).unwrap_or("the hook")
        ));
    }
    Ok(tail.text())
}
