//! Bridges between Docker's async streams and the archive code, which is synchronous (it runs in
//! `spawn_blocking`): a bounded channel of chunks read as a `std::io::Read`, and a
//! `std::io::Write` that sends chunks into one. Memory stays bounded by the channel's depth.

use std::io::{self, Read, Write};

use tokio::sync::mpsc;

/// How many chunks may wait in a pipe.
pub const DEPTH: usize = 8;
/// The size of the chunks a [`ChunkWriter`] sends.
pub const CHUNK: usize = 256 << 10;

/// A `Read` over chunks from a channel; ends when the sender is dropped. An `Err` chunk ends the
/// read with that error.
pub struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        ChunkReader {
            rx,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A `Write` that sends [`CHUNK`]-sized chunks into a channel (call `flush` or drop to send the
/// rest). Fails with BrokenPipe when the receiver is gone.
pub struct ChunkWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    pub fn new(tx: mpsc::Sender<Vec<u8>>) -> Self {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_cross_both_ways_in_order_and_errors_arrive() {
        let (tx, rx) = mpsc::channel(DEPTH);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter::new(tx);
            w.write_all(&data).unwrap();
        });
        let (in_tx, in_rx) = mpsc::channel(DEPTH);
        let reader = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            ChunkReader::new(in_rx).read_to_end(&mut out).map(|_| out)
        });
        let mut rx = rx;
        while let Some(chunk) = rx.recv().await {
            assert!(chunk.len() <= CHUNK);
            in_tx.send(Ok(chunk)).await.unwrap();
        }
        drop(in_tx);
        writer.await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), expected);

        let (tx, rx) = mpsc::channel(DEPTH);
        tx.send(Ok(vec![1, 2])).await.unwrap();
        tx.send(Err(io::Error::other("the dump failed")))
            .await
            .unwrap();
        let got = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            ChunkReader::new(rx).read_to_end(&mut out)
        })
        .await
        .unwrap();
        assert_eq!(got.unwrap_err().to_string(), "the dump failed");
    }
}
