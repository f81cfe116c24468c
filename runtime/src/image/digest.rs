//! `sha256:<64 hex>` digests: parsing (a digest becomes a path in the store, so it is checked to
//! be exactly that shape) and hashing readers/writers that compute one while data streams past.

use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};

/// The hex part of a `sha256:` digest, checked: 64 lowercase hex digits, nothing else (safe as a
/// file name).
pub fn hex_of(digest: &str) -> Result<&str> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        Error::usage(format!(
            "digest {digest:?}: only sha256 digests are supported"
        ))
    })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::usage(format!("malformed digest {digest:?}")));
    }
    Ok(hex)
}

pub fn of_bytes(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

/// Hashes (and counts) what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    pub count: u64,
}

impl HashingReader<std::io::Empty> {
    pub fn hasher() -> Sha256 {
        Sha256::new()
    }
    pub fn hex(h: Sha256) -> String {
        format!("sha256:{:x}", h.finalize())
    }
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }
    /// Reads what is left (a tar stream may end before its padding) and returns the digest.
    pub fn finish(mut self) -> std::io::Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((format!("sha256:{:x}", self.hash.finalize()), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes (and counts) what is read through it on a second thread, so that hashing a layer
/// overlaps with unpacking it (an import is then bound by the slower of the two, not their sum).
pub struct ThreadedHashingReader<R> {
    inner: R,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<String>>,
    pub count: u64,
}

impl<R: Read> ThreadedHashingReader<R> {
    pub fn new(inner: R) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(32);
        let worker = std::thread::spawn(move || {
            let mut h = Sha256::new();
            for chunk in rx {
                h.update(&chunk);
            }
            format!("sha256:{:x}", h.finalize())
        });
        ThreadedHashingReader {
            inner,
            tx: Some(tx),
            worker: Some(worker),
            count: 0,
        }
    }

    /// Reads what is left and returns the digest of everything read.
    pub fn finish(mut self) -> std::io::Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        drop(self.tx.take());
        let d = self
            .worker
            .take()
            .expect("finished once")
            .join()
            .map_err(|_| std::io::Error::other("hashing thread panicked"))?;
        Ok((d, self.count))
    }
}

impl<R: Read> Read for ThreadedHashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let tx = self.tx.as_ref().expect("not finished");
            tx.send(buf[..n].to_vec())
                .map_err(|_| std::io::Error::other("hashing thread gone"))?;
            self.count += n as u64;
        }
        Ok(n)
    }
}

/// Hashes (and counts) what is written through it.
pub struct HashingWriter<W> {
    pub inner: W,
    hash: Sha256,
    pub count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }
    pub fn digest(&self) -> String {
        format!("sha256:{:x}", self.hash.clone().finalize())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_sha256_digests_become_names() {
        let good = of_bytes(b"x");
        assert_eq!(hex_of(&good).unwrap().len(), 64);
        for bad in ["sha512:00", "sha256:../../etc", "sha256:ABC", "abc"] {
            assert!(hex_of(bad).is_err(), "{bad}");
        }
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(hex_of(&upper).is_err());
    }
}
