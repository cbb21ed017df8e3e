//! The backup store: archives and their manifests as objects, through the `object_store` crate —
//! a directory of the server (`file://`, the default `<data-dir>/backups`) or any S3-compatible
//! store (`s3://bucket/prefix?region=…&endpoint=…&allow_http=true`, credentials from the usual
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` environment). Keys:
//!
//! ```text
//! <prefix>/<stack>/<name>/<host id>/<backup id>.archive
//! <prefix>/<stack>/<name>/<host id>/<backup id>.manifest.json
//! ```
//!
//! An archive is written from its verified file on the server's disk: in one request up to
//! [`PART_SIZE`], else as a multipart upload of equal parts (the last smaller), at most two
//! parts in flight, and at most [`CONCURRENT_WRITES`] archives written at once — so memory stays
//! bounded whatever the archive's size. A multipart upload that fails is aborted; nothing is
//! visible under the key until it completes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::error::Error;

/// The size of the parts of a multipart upload (S3 wants ≥ 5 MiB but the last; R2 equal ones),
/// and the largest archive written in one request.
pub const PART_SIZE: usize = 8 << 20;
/// Archives written to the store at once (each holds up to three parts in memory).
pub const CONCURRENT_WRITES: usize = 2;
/// How long one request to the store may take (a part of [`PART_SIZE`] on a slow link).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a connection to the store may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a failed request (with backoff), and for how long at most: a store that is away
/// fails the start within a minute or so, an upload gets an error the agent retries later.
const RETRIES: usize = 4;
const RETRY_FOR: Duration = Duration::from_secs(60);

/// The query keys an `s3://` URL takes.
const S3_KEYS: &[&str] = &["region", "endpoint", "allow_http"];

/// The backup store.
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// How messages name the store (the URL as given: it holds no credentials).
    url: String,
    part_size: usize,
    writes: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").field("url", &self.url).finish()
    }
}

/// The default store's directory: `backups` in the data directory (made absolute).
pub fn default_dir(data_dir: &Path) -> std::path::PathBuf {
    let dir = data_dir.join("backups");
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Make a directory for backups, 0700 (archives hold the stacks' data), unless it exists.
fn make_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn bad(url: &str, why: impl std::fmt::Display) -> String {
    format!("--backup-store {url:?}: {why}")
}

impl Objects {
    /// The store a URL names; `env` reads the environment (credentials, default region). The
    /// error names the URL and what is wrong with it. Nothing is contacted yet: see
    /// [`Objects::probe`].
    pub fn from_url(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Objects, String> {
        let parsed = url::Url::parse(url).map_err(|e| {
            bad(
                url,
                format!(
                    "not a URL ({e}): use file:///absolute/path or s3://bucket/prefix?region=…&endpoint=…"
                ),
            )
        })?;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                if parsed.query().is_some() || parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(bad(
                        url,
                        "a file URL is file:///absolute/path (no host, no query)",
                    ));
                }
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad(url, "not an absolute path (file:///absolute/path)"))?;
                return Objects::local(&dir, url);
            }
            "s3" => s3(url, &parsed, env)?,
            other => {
                return Err(bad(
                    url,
                    format!("unknown scheme {other:?}: use file:// or s3://"),
                ));
            }
        };
        Ok(Objects::new(store, url))
    }

    /// A directory of the server as the store (`url`: how messages name it). Written with
    /// fsync (file and directory), so a stored archive survives a crash.
    pub fn local(dir: &Path, url: &str) -> Result<Objects, String> {
        make_dir(dir).map_err(|e| bad(url, format!("cannot create {}: {e}", dir.display())))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| bad(url, e))?
            .with_fsync(true);
        Ok(Objects::new(Arc::new(store), url))
    }

    fn new(store: Arc<dyn ObjectStore>, url: &str) -> Objects {
        Objects {
            store,
            url: url.to_string(),
            part_size: PART_SIZE,
            writes: tokio::sync::Semaphore::new(CONCURRENT_WRITES),
        }
    }

    /// The store of `noco-server run --backup-store` (default: `<data-dir>/backups`), checked
    /// reachable and writable.
    pub async fn open(url: Option<&str>, data_dir: &Path) -> anyhow::Result<Objects> {
        let objects = match url {
            Some(url) => Objects::from_url(url, &|k| std::env::var(k).ok()),
            None => {
                let dir = default_dir(data_dir);
                Objects::local(&dir, &format!("file://{}", dir.display()))
            }
        }
        .map_err(anyhow::Error::msg)?;
        objects.probe().await.map_err(anyhow::Error::msg)?;
        Ok(objects)
    }

    /// A store in memory (tests).
    pub fn in_memory() -> Objects {
        Objects::new(Arc::new(object_store::memory::InMemory::new()), "memory://")
    }

    /// The same store with another multipart part size (tests: small multipart uploads).
    pub fn with_part_size(mut self, bytes: usize) -> Objects {
        self.part_size = bytes.max(1);
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Write and delete an object: the store is there, the credentials are good, and the server
    /// may write. The error says which step failed, with the store's reason.
    pub async fn probe(&self) -> Result<(), String> {
        let key = Key::from(format!(".noco-probe-{}", noco_certs::random_hex::<8>()));
        self.store
            .put(&key, PutPayload::from_static(b"noco"))
            .await
            .map_err(|e| {
                format!(
                    "the backup store {} is not writable (writing a probe object failed): {e}",
                    self.url
                )
            })?;
        self.store.delete(&key).await.map_err(|e| {
            format!(
                "the backup store {} took a probe object but did not let it be deleted: {e}",
                self.url
            )
        })
    }

    fn failed(&self, doing: String, e: object_store::Error) -> Error {
        Error::Objects {
            doing,
            reason: format!("{}: {e}", self.url),
        }
    }

    /// Store the file at `path` under `key`; returns its size.
    pub async fn put_file(&self, key: &Key, path: &Path) -> Result<u64, Error> {
        let _permit = self
            .writes
            .acquire()
            .await
            .map_err(|e| Error::Internal(format!("the store's write permits: {e}")))?;
        let doing = || format!("storing {key}");
        let io = |e: std::io::Error| Error::Internal(format!("reading {}: {e}", path.display()));
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let size = file.metadata().await.map_err(io)?.len();
        if size <= self.part_size as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await.map_err(io)?;
            self.store
                .put(key, PutPayload::from(bytes))
                .await
                .map_err(|e| self.failed(doing(), e))?;
            return Ok(size);
        }
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|e| self.failed(doing(), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut buf = vec![0u8; 1 << 20];
        let mut written = 0u64;
        let outcome: Result<(), Error> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|e| self.failed(doing(), e))?;
                writer.write(&buf[..n]);
                written += n as u64;
            }
            if written != size {
                return Err(Error::Internal(format!(
                    "{} changed while it was stored ({size} bytes, then {written})",
                    path.display()
                )));
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                writer.finish().await.map_err(|e| self.failed(doing(), e))?;
                Ok(size)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!("aborting the multipart upload of {key}: {abort}");
                }
                Err(e)
            }
        }
    }

    pub async fn put_bytes(&self, key: &Key, bytes: Vec<u8>) -> Result<(), Error> {
        self.store
            .put(key, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.failed(format!("storing {key}"), e))
    }

    /// A whole (small) object, or `None` when there is none.
    pub async fn get_bytes(&self, key: &Key) -> Result<Option<Vec<u8>>, Error> {
        match self.store.get(key).await {
            Ok(r) => Ok(Some(
                r.bytes()
                    .await
                    .map_err(|e| self.failed(format!("reading {key}"), e))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(format!("reading {key}"), e)),
        }
    }

    /// An object's size, or `None` when there is none.
    pub async fn size(&self, key: &Key) -> Result<Option<u64>, Error> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(format!("reading {key}"), e)),
        }
    }

    /// An object's bytes from `offset` to its end (`offset` below its size), as the store hands
    /// them over.
    pub async fn read_from(
        &self,
        key: &Key,
        offset: u64,
    ) -> Result<BoxStream<'static, Result<Bytes, Error>>, Error> {
        let options =
            GetOptions::new().with_range((offset > 0).then_some(GetRange::Offset(offset)));
        let result = self
            .store
            .get_opts(key, options)
            .await
            .map_err(|e| self.failed(format!("reading {key}"), e))?;
        let url = self.url.clone();
        let name = key.to_string();
        Ok(result
            .into_stream()
            .map(move |chunk| {
                chunk.map_err(|e| Error::Objects {
                    doing: format!("reading {name}"),
                    reason: format!("{url}: {e}"),
                })
            })
            .boxed())
    }

    /// Delete an object; one that is not there is deleted already.
    pub async fn delete(&self, key: &Key) -> Result<(), Error> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(format!("deleting {key}"), e)),
        }
    }
}

/// Where a backup's archive lives.
pub fn archive_key(stack: &str, name: &str, host_id: &str, id: &str) -> Key {
    let file = format!("{id}.archive");
    Key::from_iter([stack, name, host_id, file.as_str()])
}

/// Where a backup's manifest lives (next to its archive).
pub fn manifest_key(stack: &str, name: &str, host_id: &str, id: &str) -> Key {
    let file = format!("{id}.manifest.json");
    Key::from_iter([stack, name, host_id, file.as_str()])
}

fn s3(
    url: &str,
    parsed: &url::Url,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ObjectStore>, String> {
    use object_store::aws::AmazonS3Builder;
    let bucket = parsed
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad(url, "no bucket: s3://bucket/prefix"))?;
    let mut region = None;
    let mut endpoint = None;
    let mut allow_http = false;
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "region" => region = Some(value.into_owned()),
            "endpoint" => endpoint = Some(value.into_owned()),
            "allow_http" => {
                allow_http = match value.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    v => return Err(bad(url, format!("allow_http={v:?}: use true or false"))),
                }
            }
            other => {
                return Err(bad(
                    url,
                    format!(
                        "unknown parameter {other:?}: an s3 URL takes {}",
                        S3_KEYS.join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(e) = &endpoint {
        let ep = url::Url::parse(e)
            .map_err(|err| bad(url, format!("endpoint {e:?} is not a URL: {err}")))?;
        match ep.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => {
                return Err(bad(
                    url,
                    format!("endpoint {e:?} is plain http: add allow_http=true to use it"),
                ));
            }
            s => {
                return Err(bad(
                    url,
                    format!("endpoint {e:?}: scheme {s:?} is not http(s)"),
                ));
            }
        }
    }
    let (Some(key_id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    else {
        return Err(bad(
            url,
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones) in the server's environment",
        ));
    };
    let region = region
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string());
    // The HTTP client (reqwest, rustls without a provider of its own) uses the process's:
    // ring, as everywhere in noco.
    noco_certs::install_crypto_provider();
    // Client options first: they carry allow_http, which `with_client_options` would reset.
    let mut builder = AmazonS3Builder::new()
        .with_client_options(
            object_store::ClientOptions::new()
                .with_timeout(REQUEST_TIMEOUT)
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_allow_http(allow_http),
        )
        .with_retry(object_store::RetryConfig {
            max_retries: RETRIES,
            retry_timeout: RETRY_FOR,
            ..object_store::RetryConfig::default()
        })
        .with_bucket_name(bucket)
        .with_region(region)
        .with_access_key_id(key_id)
        .with_secret_access_key(secret);
    if let Some(token) = env("AWS_SESSION_TOKEN") {
        builder = builder.with_token(token);
    }
    if let Some(e) = endpoint {
        builder = builder.with_endpoint(e);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(builder.build().map_err(|e| bad(url, e))?);
    let prefix = parsed.path().trim_matches('/');
    if prefix.is_empty() {
        Ok(store)
    } else {
        let prefix = Key::parse(prefix).map_err(|e| bad(url, format!("prefix: {e}")))?;
        Ok(Arc::new(object_store::prefix::PrefixStore::new(
            store, prefix,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn creds(k: &str) -> Option<String> {
        match k {
            "AWS_ACCESS_KEY_ID" => Some("id".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".into()),
            _ => None,
        }
    }

    fn refused(url: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
        match Objects::from_url(url, env) {
            Ok(o) => panic!("{url} was accepted: {o:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_bad_store_url_is_refused_naming_the_url_and_what_is_wrong() {
        let cases = [
            ("backups", "not a URL"),
            ("ftp://host/x", "unknown scheme \"ftp\""),
            ("file://relative/x", "no host, no query"),
            ("file:///tmp/x?a=b", "no host, no query"),
            ("s3:///prefix", "no bucket"),
            ("s3://b/p?regoin=eu", "unknown parameter \"regoin\""),
            ("s3://b/p?allow_http=maybe", "allow_http=\"maybe\""),
            (
                "s3://b/p?endpoint=http://127.0.0.1:9000",
                "add allow_http=true",
            ),
            ("s3://b/p?endpoint=nope", "is not a URL"),
        ];
        for (url, want) in cases {
            let err = refused(url, &creds);
            assert!(err.contains(url), "{url}: {err}");
            assert!(err.contains(want), "{url}: {err}");
        }
        let err = refused("s3://bucket/prefix?region=eu-west-1", &no_env);
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    }

    #[test]
    fn good_store_urls_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("b").display());
        Objects::from_url(&url, &no_env).unwrap();
        assert!(dir.path().join("b").is_dir(), "the directory is made");
        Objects::from_url(
            "s3://bucket/some/prefix?region=eu-west-1&endpoint=http://127.0.0.1:9000&allow_http=true",
            &creds,
        )
        .unwrap();
        Objects::from_url("s3://bucket", &creds).unwrap();
    }

    #[tokio::test]
    async fn the_default_store_is_a_private_directory_of_the_data_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(None, dir.path()).await.unwrap();
        let store = dir.path().join("backups");
        assert_eq!(objects.url(), format!("file://{}", store.display()));
        let mode = std::fs::metadata(&store).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(
            std::fs::read_dir(&store).unwrap().next().is_none(),
            "the probe object is gone"
        );
        let err = Objects::open(Some("s3://b/p?bad=1"), dir.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3://b/p?bad=1"), "{err}");
    }

    #[tokio::test]
    async fn a_store_that_is_not_writable_fails_the_probe_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("ro");
        let objects = Objects::from_url(&format!("file://{}", store.display()), &no_env).unwrap();
        objects.probe().await.unwrap();
        // Root ignores permissions: replace the directory by a file instead.
        std::fs::remove_dir_all(&store).unwrap();
        std::fs::write(&store, b"not a directory").unwrap();
        let err = objects.probe().await.unwrap_err();
        assert!(err.contains("is not writable"), "{err}");
        assert!(err.contains(&store.display().to_string()), "{err}");
    }

    #[tokio::test]
    async fn an_s3_store_that_is_away_fails_the_probe_soon_naming_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("s3://b/p?endpoint=http://127.0.0.1:{port}&allow_http=true");
        let objects = Objects::from_url(&url, &creds).unwrap();
        let started = std::time::Instant::now();
        let err = objects.probe().await.unwrap_err();
        assert!(started.elapsed() < RETRY_FOR, "{:?}", started.elapsed());
        assert!(
            err.contains(&url) && err.contains("is not writable"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn files_go_in_whole_or_in_parts_and_come_back_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::from_url(
            &format!("file://{}", dir.path().join("store").display()),
            &no_env,
        )
        .unwrap()
        .with_part_size(64 << 10);
        for size in [0usize, 1000, (64 << 10) * 3 + 17] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let path = dir.path().join("f");
            std::fs::write(&path, &data).unwrap();
            let key = archive_key("shop", "db", "h1", &format!("shop.db.x.{size}"));
            assert_eq!(objects.put_file(&key, &path).await.unwrap(), size as u64);
            assert_eq!(objects.size(&key).await.unwrap(), Some(size as u64));
            for offset in [0, size / 2, size.saturating_sub(1)] {
                if offset >= size && size > 0 {
                    continue;
                }
                let mut got = Vec::new();
                let mut s = objects.read_from(&key, offset as u64).await.unwrap();
                while let Some(chunk) = s.next().await {
                    got.extend_from_slice(&chunk.unwrap());
                }
                assert_eq!(got, data[offset..], "size {size} offset {offset}");
            }
            objects.delete(&key).await.unwrap();
            objects.delete(&key).await.unwrap();
            assert_eq!(objects.size(&key).await.unwrap(), None);
        }
    }
}
