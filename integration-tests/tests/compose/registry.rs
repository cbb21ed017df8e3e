//! Private registries: a pull carries the credentials of the agent's own configuration file.
//! A fake registry on loopback (which Docker treats as a plain-HTTP registry) demands Basic
//! authentication, records what the Docker engine sends it, and has no images.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::stack::Stack;

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Serve at most `max` connections, recording every Authorization header.
fn fake_registry(max: usize) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = vec![0u8; 16 * 1024];
            let mut len = 0;
            while len < buf.len() {
                match s.read(&mut buf[len..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => len += n,
                }
                // A TLS ClientHello (the engine tries HTTPS first): hang up so it falls back.
                if buf[0] == 0x16 || buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            if len == 0 || buf[0] == 0x16 {
                continue;
            }
            let head = String::from_utf8_lossy(&buf[..len]).to_string();
            let auth = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("authorization")
                    .then(|| v.trim().to_string())
            });
            let response = match auth {
                None => "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"noco-test\"\r\nDocker-Distribution-Api-Version: registry/2.0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                Some(a) => {
                    record.lock().unwrap().push(a);
                    let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
                    format!("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nDocker-Distribution-Api-Version: registry/2.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                }
            };
            let _ = s.write_all(response.as_bytes());
        }
    });
    (port, seen)
}

#[test]
fn a_pull_from_a_private_registry_carries_the_configured_credentials() {
    if !require_docker() {
        return;
    }
    let (port, seen) = fake_registry(40);
    let stack = Stack::new(
        "reg",
        &format!("services:\n  app:\n    image: 127.0.0.1:{port}/noco/private:1\n"),
    );
    stack.write("agent.toml", &format!("[[registries]]\nhost = \"127.0.0.1:{port}\"\nusername = \"deployer\"\npassword = \"s3cret\"\n"));
    let config = stack.path().join("agent.toml");
    let out = stack.run("up", &["--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot be pulled"), "{err}");
    let expected = format!("Basic {}", base64(b"deployer:s3cret"));
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&expected),
        "the registry was sent {seen:?}, not {expected:?}"
    );
    assert!(stack.ps().is_empty(), "nothing was created");

    // Without credentials, the engine never authenticates.
    let (port, seen) = fake_registry(40);
    let stack = Stack::new(
        "reg",
        &format!("services:\n  app:\n    image: 127.0.0.1:{port}/noco/private:1\n"),
    );
    let out = stack.run("up", &["--config", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
}
