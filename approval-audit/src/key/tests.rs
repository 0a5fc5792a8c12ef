use super::*;

const SECRET_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
// HMAC-SHA256(secret, label), computed with Python's hmac module.
const RECORD_KEY_HEX: &str = "93f970b5ea5211fc249f6994cdda999c3bed053d8e42669046031b7f4c0c0c5a";
const DIGEST_OF_HELLO: &str = "eee0de55bd5d3eaf81428c7478a80e8905f7cfc63c8a275ab94b8ed51903ea18";

fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    crate::canonical::write_hex(&mut out, bytes);
    String::from_utf8(out).unwrap()
}

#[test]
fn derived_keys_match_the_format_definition() {
    let secret = WriterSecret::from_hex(SECRET_HEX).unwrap();
    assert_eq!(
        secret.record_key(),
        RecordKey::from_hex(RECORD_KEY_HEX).unwrap()
    );
    assert_ne!(
        secret.record_key(),
        RecordKey::from_hex(SECRET_HEX).unwrap()
    );
    assert_eq!(hex(&secret.digest_key().digest(b"hello")), DIGEST_OF_HELLO);
}

#[test]
fn key_text_must_be_64_lowercase_hex_digits_and_one_optional_newline() {
    assert!(WriterSecret::from_hex(SECRET_HEX).is_some());
    assert!(WriterSecret::from_hex(&format!("{SECRET_HEX}\n")).is_some());
    for bad in [
        format!("{SECRET_HEX}\n\n"),
        format!("{SECRET_HEX} "),
        format!(" {SECRET_HEX}"),
        format!("{SECRET_HEX}\r\n"),
        SECRET_HEX.to_uppercase(),
        SECRET_HEX[..62].to_owned(),
        format!("{SECRET_HEX}00"),
        SECRET_HEX.replace('0', "g"),
        String::new(),
    ] {
        assert!(WriterSecret::from_hex(&bad).is_none(), "{bad:?}");
        assert!(RecordKey::from_hex(&bad).is_none(), "{bad:?}");
    }
}

#[test]
fn no_key_type_shows_its_bytes_in_debug_or_errors() {
    let secret = WriterSecret::from_hex(SECRET_HEX).unwrap();
    let shown = [
        format!("{secret:?}"),
        format!("{:?}", secret.record_key()),
        format!("{:?}", secret.digest_key()),
        format!("{:#?}", secret.record_key()),
    ];
    assert_eq!(shown[0], "WriterSecret([REDACTED])");
    assert_eq!(shown[1], "RecordKey([REDACTED])");
    assert_eq!(shown[2], "DigestKey([REDACTED])");
    for text in shown {
        for needle in [
            SECRET_HEX,
            &SECRET_HEX[..16],
            RECORD_KEY_HEX,
            &RECORD_KEY_HEX[..16],
        ] {
            assert!(!text.contains(needle), "{text}");
        }
    }
    // A malformed key file's error names the file, not its contents.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    std::fs::write(&path, SECRET_HEX.to_uppercase()).unwrap();
    let err = WriterSecret::read_file(&path).unwrap_err().to_string();
    assert!(err.contains(&*path.to_string_lossy()), "{err}");
    assert!(!err.to_lowercase().contains(&SECRET_HEX[..16]), "{err}");
}

#[test]
fn key_files_are_new_mode_0600_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("writer.key");
    let secret = WriterSecret::generate().unwrap();
    secret.write_new_file(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read(&path).unwrap().len(), 65);
    assert_eq!(WriterSecret::read_file(&path).unwrap(), secret);
    let again = WriterSecret::generate().unwrap();
    assert!(matches!(
        again.write_new_file(&path),
        Err(KeyError::Exists { .. })
    ));
    assert_eq!(WriterSecret::read_file(&path).unwrap(), secret);
}

#[test]
fn generated_secrets_differ() {
    assert_ne!(
        WriterSecret::generate().unwrap(),
        WriterSecret::generate().unwrap()
    );
}

#[test]
fn key_ids_follow_the_naming_rule() {
    assert!(KeyId::new("k1").is_ok());
    assert!(KeyId::new(&"a".repeat(64)).is_ok());
    for bad in ["", "a b", "é", "k=1", &"a".repeat(65)] {
        assert!(
            matches!(KeyId::new(bad), Err(KeyError::InvalidKeyId)),
            "{bad:?}"
        );
    }
}
