//! Encryption of stored archives with age (the C2SP age format, X25519 recipients only), so an
//! operator can decrypt a downloaded archive with `age -d -i key.txt`. The server and the
//! agent's configuration hold only recipients (`age1…`); the identity (`AGE-SECRET-KEY-1…`) is
//! needed to restore and stays with whoever may restore.
//!
//! age authenticates every 64 KiB chunk and flags the last one, so a corrupted or truncated
//! archive fails to decrypt instead of decrypting short.

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use age::secrecy::ExposeSecret;
use age::x25519;

/// Every age file starts with this line.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// The recipients an archive is encrypted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipients(Vec<x25519::Recipient>);

impl Recipients {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recipients as `age1…` strings.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// How every age X25519 secret key (identity) starts.
const SECRET_KEY_PREFIX: &str = "AGE-SECRET-KEY-1";

/// Parses age X25519 recipients (`age1…`). An empty list means "not encrypted". The error
/// names the recipient that is not one, and shows none of a secret key given by mistake.
pub fn parse_recipients(list: &[String]) -> Result<Recipients, String> {
    let mut out: Vec<x25519::Recipient> = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let trimmed = text.trim();
        if trimmed
            .get(..SECRET_KEY_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(SECRET_KEY_PREFIX))
        {
            // Never echo any of a private key, not even its start: errors are logged and audited.
            return Err(format!(
                "backup recipient {} is an age secret key (AGE-SECRET-KEY-1…), not a recipient: \
                 give its public key (age1…, printed by `age-keygen -y`) and keep the secret key off the server",
                i + 1
            ));
        }
        let r: x25519::Recipient = trimmed.parse().map_err(|e: &str| {
            format!(
                "backup recipient {} ({:?}) is not an age X25519 recipient (age1…): {e}",
                i + 1,
                shorten(trimmed)
            )
        })?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(Recipients(out))
}

/// Wraps `out` so what is written to it is encrypted to `recipients` (not empty). Call
/// [`age::stream::StreamWriter::finish`] at the end, or the file is truncated (and will not
/// decrypt).
pub fn encrypting_writer<W: Write>(
    recipients: &Recipients,
    out: W,
) -> io::Result<age::stream::StreamWriter<W>> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| io::Error::other(format!("age: {e}")))?;
    encryptor.wrap_output(out)
}

/// The identities of an age identity file: `AGE-SECRET-KEY-1…` lines, blank lines and `#`
/// comments.
pub struct Identities(Vec<x25519::Identity>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} keys)", self.0.len())
    }
}

impl Identities {
    /// Parses an identity file's contents. The error names the line (never its contents: it
    /// may be a key).
    pub fn parse(text: &str) -> Result<Identities, String> {
        let mut ids = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id: x25519::Identity = line.parse().map_err(|e: &str| {
                format!(
                    "age identity file, line {}: not an X25519 identity (AGE-SECRET-KEY-1…): {e}",
                    n + 1
                )
            })?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Err("age identity file: no identity in it".into());
        }
        Ok(Identities(ids))
    }

    /// The recipients these identities decrypt for.
    pub fn recipients(&self) -> Vec<String> {
        self.0.iter().map(|i| i.to_public().to_string()).collect()
    }
}

/// Why an age file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    #[error(
        "none of the identities given can decrypt this archive (it is encrypted to other keys)"
    )]
    NoMatchingKey,
    #[error("the archive's age header is invalid: {0}")]
    Header(String),
    #[error("reading the archive's age header: {0}")]
    Io(io::Error),
}

/// The bytes an age header may take (one X25519 recipient takes about 100). The age crate
/// reads a header whole into memory and parses it again for each line it adds: a header
/// without end would cost memory and quadratic time.
pub const MAX_AGE_HEADER: u64 = 16 << 10;

/// Starts decrypting an age file with `identities`. The header is checked here; every chunk is
/// authenticated as it is read (an error from `read` means corrupted or truncated).
pub fn decrypting_reader<R: Read>(
    input: R,
    identities: &Identities,
) -> Result<age::stream::StreamReader<BufReader<HeaderCap<R>>>, DecryptError> {
    let left = Arc::new(AtomicU64::new(MAX_AGE_HEADER));
    let capped = HeaderCap {
        inner: input,
        left: left.clone(),
    };
    let decryptor = age::Decryptor::new_buffered(BufReader::with_capacity(256 << 10, capped))
        .map_err(map_decrypt_error)?;
    left.store(u64::MAX, Ordering::Relaxed);
    decryptor
        .decrypt(identities.0.iter().map(|i| i as &dyn age::Identity))
        .map_err(map_decrypt_error)
}

/// The input of an age file, allowed [`MAX_AGE_HEADER`] bytes until its header is read.
pub struct HeaderCap<R> {
    inner: R,
    /// Bytes left for the header; `u64::MAX` once it is read.
    left: Arc<AtomicU64>,
}

impl<R: Read> Read for HeaderCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.load(Ordering::Relaxed);
        if left == u64::MAX {
            return self.inner.read(buf);
        }
        if left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the age header is longer than {MAX_AGE_HEADER} bytes"),
            ));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.store(left - n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn map_decrypt_error(e: age::DecryptError) -> DecryptError {
    match e {
        age::DecryptError::NoMatchingKeys => DecryptError::NoMatchingKey,
        age::DecryptError::Io(e) => DecryptError::Io(e),
        other => DecryptError::Header(other.to_string()),
    }
}

/// A new key pair: (identity `AGE-SECRET-KEY-1…`, recipient `age1…`). For tests and for
/// operators who want one without the `age-keygen` tool.
pub fn generate_key_pair() -> (String, String) {
    let id = x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    (id.to_string().expose_secret().to_owned(), recipient)
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 24 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(20).collect::<String>())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_parsed_and_a_bad_one_is_named() {
        let (_, r1) = generate_key_pair();
        let (_, r2) = generate_key_pair();
        let ok = parse_recipients(&[r1.clone(), format!(" {r2} "), r1.clone()]).unwrap();
        assert_eq!(ok.to_strings(), vec![r1.clone(), r2]);
        assert!(parse_recipients(&[]).unwrap().is_empty());

        let e = parse_recipients(&[r1, "age1notakey".into()]).unwrap_err();
        assert!(
            e.contains("recipient 2") && e.contains("age1notakey"),
            "{e}"
        );
        // A secret key given as a recipient is refused without showing any of it: the first
        // character after the prefix is random, so 100 keys would show a leak every time.
        for _ in 0..100 {
            let (secret, _) = generate_key_pair();
            for given in [secret.clone(), secret.to_lowercase(), format!(" {secret}")] {
                let e = parse_recipients(&[given]).unwrap_err();
                assert!(
                    e.contains("recipient 1")
                        && e.contains("secret key")
                        && !e.contains(&secret[..SECRET_KEY_PREFIX.len() + 1])
                        && !e
                            .to_lowercase()
                            .contains(&secret[..SECRET_KEY_PREFIX.len() + 1].to_lowercase()),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn identity_files_with_comments_and_several_keys() {
        let (s1, r1) = generate_key_pair();
        let (s2, r2) = generate_key_pair();
        let text = format!("# created: today\n# public key: {r1}\n{s1}\n\n{s2}\n");
        let ids = Identities::parse(&text).unwrap();
        assert_eq!(ids.recipients(), vec![r1, r2]);

        let e = Identities::parse("# nothing\n").unwrap_err();
        assert!(e.contains("no identity"), "{e}");
        let e = Identities::parse(&format!("{s1}\nAGE-SECRET-KEY-1BROKEN\n")).unwrap_err();
        assert!(e.contains("line 2") && !e.contains("BROKEN"), "{e}");
    }

    #[test]
    fn encrypt_then_decrypt_and_the_wrong_key_is_told() {
        let (secret, recipient) = generate_key_pair();
        let recipients = parse_recipients(&[recipient]).unwrap();
        let mut w = encrypting_writer(&recipients, Vec::new()).unwrap();
        w.write_all(b"hello archive").unwrap();
        let sealed = w.finish().unwrap();
        assert!(sealed.starts_with(AGE_MAGIC));

        let ids = Identities::parse(&secret).unwrap();
        let mut plain = Vec::new();
        decrypting_reader(&sealed[..], &ids)
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, b"hello archive");

        let (other, _) = generate_key_pair();
        let other = Identities::parse(&other).unwrap();
        let e = decrypting_reader(&sealed[..], &other).err().unwrap();
        assert!(matches!(e, DecryptError::NoMatchingKey), "{e}");

        // A header that does not end is refused once past the cap.
        let mut endless = AGE_MAGIC.to_vec();
        for _ in 0..20_000 {
            endless.extend_from_slice(
                b"-> X25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nAAAA\n",
            );
        }
        let e = decrypting_reader(&endless[..], &ids).err().unwrap();
        assert!(e.to_string().contains("longer than"), "{e}");

        // Cut off the last chunk: reading fails instead of returning less.
        let cut = &sealed[..sealed.len() - 5];
        let mut r = decrypting_reader(cut, &ids).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
