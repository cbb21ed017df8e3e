//! A TCP proxy a test can cut: agents dial it instead of the server, and `cut` closes every
//! connection through it at once (both directions), as a network failure would. New connections
//! are accepted again right after, unless the proxy is `block`ed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    live: Arc<Mutex<Vec<TcpStream>>>,
    blocked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listen on a free loopback port, forwarding to `127.0.0.1:<target>`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking proxy listener");
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let blocked = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, b, s) = (live.clone(), blocked.clone(), stop.clone());
        thread::spawn(move || {
            let to: SocketAddr = ([127, 0, 0, 1], target).into();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if b.load(Ordering::Relaxed) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                        else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        pipe(&client, &server, &l);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy {
            port,
            live,
            blocked,
            stop,
        }
    }

    /// Close every connection through the proxy now.
    pub fn cut(&self) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for s in live.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Refuse new connections (and cut the live ones) until `unblock`.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::Relaxed);
        self.cut();
    }

    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn pipe(client: &TcpStream, server: &TcpStream, live: &Arc<Mutex<Vec<TcpStream>>>) {
    let pairs = [
        (client.try_clone(), server.try_clone()),
        (server.try_clone(), client.try_clone()),
    ];
    {
        let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
        for s in [client.try_clone(), server.try_clone()]
            .into_iter()
            .flatten()
        {
            l.push(s);
        }
    }
    for (from, to) in pairs {
        let (Ok(mut from), Ok(mut to)) = (from, to) else {
            continue;
        };
        thread::spawn(move || {
            let mut buf = [0u8; 32 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }
}
