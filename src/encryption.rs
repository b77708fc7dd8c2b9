//! Encryption at rest with age public keys.
//!
//! A backup made with recipients stores every file but the manifest as one complete age file
//! of its own (compress, then encrypt), so each stays independently verifiable, restorable,
//! resumable, and readable with the stock `age` CLI. The backup host needs only public keys;
//! restore and a deep verify need an identity (a private key) that matches one recipient.
//!
//! [`Sealing`] holds what a run has: the recipients to encrypt to (backup) and the identities
//! to decrypt with (restore, verify). It rides on the [`crate::storage::Store`] so that every
//! chunk writer and reader sees it without being told at each call site. The cryptography is
//! the `age` crate's; nothing here is more than plumbing.

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The environment variable naming an identity file for `restore` and `verify`.
pub const IDENTITY_FILE_ENV: &str = "DBBACKUP_IDENTITY_FILE";

type BoxedRecipient = Box<dyn age::Recipient + Send + Sync>;
type BoxedIdentity = Box<dyn age::Identity + Send + Sync>;

/// Encryption settings of one run: public keys to encrypt to and identities to decrypt with.
/// Either may be empty. Never prints an identity (its `Debug` shows only counts).
#[derive(Default)]
pub struct Sealing {
    /// The recipients' public keys in age's canonical spelling (no ssh comment), sorted.
    recipients: Vec<String>,
    parsed: Vec<BoxedRecipient>,
    identities: Vec<BoxedIdentity>,
    /// Identity files given, for messages.
    identity_files: Vec<PathBuf>,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing")
            .field("recipients", &self.recipients)
            .field("identities", &self.identities.len())
            .finish()
    }
}

impl Sealing {
    /// Encrypts to `recipients`: `age1…` X25519 keys, `ssh-ed25519 …` and `ssh-rsa …` public
    /// keys (a trailing comment is allowed and dropped). Duplicates count once.
    pub fn to_recipients(recipients: &[String]) -> Result<Sealing> {
        let mut keyed: Vec<(String, BoxedRecipient)> = Vec::new();
        for text in recipients {
            let (canonical, parsed) = parse_recipient(text)?;
            if !keyed.iter().any(|(k, _)| *k == canonical) {
                keyed.push((canonical, parsed));
            }
        }
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let (recipients, parsed) = keyed.into_iter().unzip();
        Ok(Sealing {
            recipients,
            parsed,
            ..Sealing::default()
        })
    }

    /// Adds the identities of age identity files (`AGE-SECRET-KEY-1…` lines) or unencrypted
    /// OpenSSH private keys (ssh-ed25519, ssh-rsa), one file per path.
    pub fn with_identity_files(mut self, paths: &[PathBuf]) -> Result<Sealing> {
        for path in paths {
            self.identities.extend(read_identity_file(path)?);
            self.identity_files.push(path.clone());
        }
        Ok(self)
    }

    /// The recipients' public keys, as the manifest records them.
    pub fn recipients(&self) -> &[String] {
        &self.recipients
    }

    /// Whether new files are encrypted.
    pub fn encrypts(&self) -> bool {
        !self.parsed.is_empty()
    }

    /// Whether encrypted files can be read.
    pub fn can_decrypt(&self) -> bool {
        !self.identities.is_empty()
    }

    /// Wraps `out` so that what is written to it is stored encrypted (when there are
    /// recipients); [`Sealed::finish`] must be called.
    pub fn seal<W: Write>(&self, out: W) -> io::Result<Sealed<W>> {
        if !self.encrypts() {
            return Ok(Sealed::Plain(out));
        }
        let encryptor = age::Encryptor::with_recipients(
            self.parsed
                .iter()
                .map(|r| r.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| io::Error::other(format!("cannot encrypt: {e}")))?;
        Ok(Sealed::Age(Box::new(encryptor.wrap_output(out)?)))
    }

    /// Opens an age file read from `input` with the identities given. The error says why in a
    /// phrase (the caller names the file).
    pub fn unseal<R: Read>(&self, input: R) -> std::result::Result<Unsealed<R>, String> {
        if !self.can_decrypt() {
            return Err(format!(
                "the file is encrypted and no identity was given: pass --identity FILE or set {IDENTITY_FILE_ENV}"
            ));
        }
        let decryptor = age::Decryptor::new_buffered(BufReader::with_capacity(64 * 1024, input))
            .map_err(|e| describe(&e))?;
        let reader = decryptor
            .decrypt(
                self.identities
                    .iter()
                    .map(|i| i.as_ref() as &dyn age::Identity),
            )
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => {
                    let files: Vec<String> = self
                        .identity_files
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect();
                    format!(
                        "no identity given ({}) matches a recipient of this file",
                        files.join(", ")
                    )
                }
                e => describe(&e),
            })?;
        Ok(Unsealed::Age(Box::new(reader)))
    }
}

fn describe(e: &age::DecryptError) -> String {
    match e {
        age::DecryptError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "cannot decrypt: the age header is cut short (truncated file)".into()
        }
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => {
            "cannot decrypt: not a valid age file (damaged header, or not encrypted)".into()
        }
        age::DecryptError::InvalidMac => {
            "cannot decrypt: the age header's MAC does not match (damaged or tampered)".into()
        }
        e => format!("cannot decrypt: {e}"),
    }
}

/// One recipient in canonical form, and parsed.
fn parse_recipient(text: &str) -> Result<(String, BoxedRecipient)> {
    let text = text.trim();
    if text.starts_with("age1") {
        let r: age::x25519::Recipient = text.parse().map_err(|e| {
            Error::Usage(format!(
                "--recipient {text:?} is not an age public key: {e}"
            ))
        })?;
        return Ok((r.to_string(), Box::new(r)));
    }
    if text.starts_with("ssh-") {
        let r: age::ssh::Recipient = text.parse().map_err(|e| {
            Error::Usage(format!(
                "--recipient {text:?} is not a usable ssh public key: {}",
                match e {
                    age::ssh::ParseRecipientKeyError::Unsupported(t) =>
                        format!("key type {t} is not supported (use ssh-ed25519 or ssh-rsa)"),
                    age::ssh::ParseRecipientKeyError::RsaModulusTooSmall =>
                        "the RSA key is shorter than 2048 bits".into(),
                    age::ssh::ParseRecipientKeyError::RsaModulusTooLarge =>
                        "the RSA key is too large".into(),
                    _ => "cannot parse it".into(),
                }
            ))
        })?;
        return Ok((r.to_string(), Box::new(r)));
    }
    Err(Error::Usage(format!(
        "--recipient {text:?} is neither an age public key (age1…) nor an ssh public key (ssh-ed25519 …, ssh-rsa …)"
    )))
}

/// The recipients listed in an age recipients file: one per line, `#` comments and blank
/// lines ignored.
pub fn read_recipients_file(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io("reading recipients file", path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("AGE-SECRET-KEY-") || line.contains("PRIVATE KEY") {
            return Err(Error::Usage(format!(
                "recipients file {} line {}: holds a private key; give public keys only (age-keygen -y)",
                path.display(),
                n + 1
            )));
        }
        parse_recipient(line).map_err(|e| {
            Error::Usage(format!(
                "recipients file {} line {}: {e}",
                path.display(),
                n + 1
            ))
        })?;
        out.push(line.to_string());
    }
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "recipients file {} lists no recipient",
            path.display()
        )));
    }
    Ok(out)
}

/// The identities of one file: age identities, or one unencrypted OpenSSH private key.
/// Messages never quote the file's content.
fn read_identity_file(path: &Path) -> Result<Vec<BoxedIdentity>> {
    let data = std::fs::read(path).map_err(|e| Error::io("reading identity file", path, e))?;
    let unusable = |why: String| Error::Usage(format!("identity file {}: {why}", path.display()));
    if let Ok(file) = age::IdentityFile::from_buffer(&data[..]) {
        let ids = file
            .into_identities()
            .map_err(|e| unusable(e.to_string()))?;
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    match age::ssh::Identity::from_buffer(&data[..], Some(path.display().to_string())) {
        Ok(age::ssh::Identity::Unencrypted(key)) => {
            Ok(vec![Box::new(age::ssh::Identity::Unencrypted(key))])
        }
        Ok(age::ssh::Identity::Encrypted(_)) => Err(unusable(
            "the ssh key is protected by a passphrase, which dbbackup cannot ask for; use an unencrypted copy or an age identity".into(),
        )),
        Ok(age::ssh::Identity::Unsupported(k)) => Err(unusable(format!(
            "unsupported ssh key type ({k:?}); use ssh-ed25519 or ssh-rsa"
        ))),
        Err(_) => Err(unusable(
            "holds neither age identities (AGE-SECRET-KEY-1…) nor an ssh private key".into(),
        )),
    }
}

/// A writer that encrypts (or passes bytes through when there are no recipients).
pub enum Sealed<W: Write> {
    Plain(W),
    Age(Box<age::stream::StreamWriter<W>>),
}

impl<W: Write> Sealed<W> {
    /// Writes the last age chunk; returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Sealed::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Sealed::Age(s) => s.finish(),
        }
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(buf),
            Sealed::Age(s) => s.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.write_all(buf),
            Sealed::Age(s) => s.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.flush(),
            Sealed::Age(s) => s.flush(),
        }
    }
}

/// A reader of a stored file's payload: decrypted, or passed through.
pub enum Unsealed<R: Read> {
    Plain(R),
    Age(Box<age::stream::StreamReader<BufReader<R>>>),
}

/// A read error of the decryption itself (authentication failed, file cut short), told apart
/// from decompression errors above it.
#[derive(Debug)]
pub struct DecryptFailure(pub String);

impl std::fmt::Display for DecryptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecryptFailure {}

impl<R: Read> Read for Unsealed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Unsealed::Plain(r) => r.read(buf),
            Unsealed::Age(s) => s.read(buf).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    DecryptFailure(format!(
                        "cannot decrypt: {e} (damaged, truncated or tampered)"
                    )),
                )
            }),
        }
    }
}
