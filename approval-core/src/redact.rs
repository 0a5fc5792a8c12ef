//! How a redacted argument is digested.

use approval_audit::CanonicalJson;

/// A value that can be an approval argument without being recorded: the
/// audit record keeps only HMAC-SHA256, under the writer's digest key, of
/// its canonical form (AUDIT-FORMAT.md, `args`), and the binding covers
/// that form too, so a reviewer approves exactly this value.
///
/// The canonical form of text is a JSON string, and of bytes a JSON string
/// of their lowercase hex. Secrets need not be `Serialize`: implement this
/// for them (it is implemented for `str`, `String`, byte slices and vectors,
/// references, and, with the `secrecy` feature, `secrecy`'s secrets).
///
/// ```
/// use approval_core::Redact;
///
/// assert_eq!("s3cr3t".canonical_form().as_str(), r#""s3cr3t""#);
/// assert_eq!(b"\x01\xff".canonical_form().as_str(), r#""01ff""#);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be redacted: it does not implement `approval_core::Redact`",
    label = "not `Redact`",
    note = "implement `approval_core::Redact` for it (its canonical form is what the digest covers)"
)]
pub trait Redact {
    /// The value's canonical JSON form.
    fn canonical_form(&self) -> CanonicalJson;
}

impl Redact for str {
    fn canonical_form(&self) -> CanonicalJson {
        let mut out = Vec::with_capacity(self.len() + 2);
        approval_audit::canonical::write_str(&mut out, self);
        CanonicalJson::from_trusted_bytes(out)
    }
}

impl Redact for String {
    fn canonical_form(&self) -> CanonicalJson {
        self.as_str().canonical_form()
    }
}

impl Redact for [u8] {
    fn canonical_form(&self) -> CanonicalJson {
        let mut out = Vec::with_capacity(self.len() * 2 + 2);
        out.push(b'"');
        approval_audit::canonical::write_hex(&mut out, self);
        out.push(b'"');
        CanonicalJson::from_trusted_bytes(out)
    }
}

impl<const N: usize> Redact for [u8; N] {
    fn canonical_form(&self) -> CanonicalJson {
        self[..].canonical_form()
    }
}

impl Redact for Vec<u8> {
    fn canonical_form(&self) -> CanonicalJson {
        self[..].canonical_form()
    }
}

impl<T: Redact + ?Sized> Redact for &T {
    fn canonical_form(&self) -> CanonicalJson {
        (**self).canonical_form()
    }
}

impl<T: Redact + ?Sized> Redact for Box<T> {
    fn canonical_form(&self) -> CanonicalJson {
        (**self).canonical_form()
    }
}

#[cfg(feature = "secrecy")]
impl Redact for secrecy::SecretString {
    fn canonical_form(&self) -> CanonicalJson {
        use secrecy::ExposeSecret;
        self.expose_secret().canonical_form()
    }
}

#[cfg(feature = "secrecy")]
impl Redact for secrecy::SecretSlice<u8> {
    fn canonical_form(&self) -> CanonicalJson {
        use secrecy::ExposeSecret;
        self.expose_secret().canonical_form()
    }
}
