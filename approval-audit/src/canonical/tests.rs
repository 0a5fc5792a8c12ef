use std::path::Path;

use proptest::prelude::*;
use serde_json::Value;

use super::*;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/jcs")
        .join(name)
}

const VECTORS: [&str; 6] = [
    "arrays",
    "french",
    "structures",
    "unicode",
    "values",
    "weird",
];

#[test]
fn rfc8785_vectors_canonicalise_to_the_expected_bytes() {
    for name in VECTORS {
        let input = std::fs::read(data(&format!("input/{name}.json"))).unwrap();
        let expected = std::fs::read_to_string(data(&format!("output/{name}.json"))).unwrap();
        let value: Value = serde_json::from_slice(&input).unwrap();
        let canonical = CanonicalJson::from_value(&value).unwrap();
        assert_eq!(canonical.as_str(), expected, "vector {name}");
    }
}

#[test]
fn rfc8785_outputs_pass_the_checker_and_inputs_do_not() {
    for name in VECTORS {
        let output = std::fs::read(data(&format!("output/{name}.json"))).unwrap();
        assert_eq!(check_value(&output), Ok(()), "output {name}");
        // Every input file is pretty-printed, so valid but not canonical.
        let input = std::fs::read(data(&format!("input/{name}.json"))).unwrap();
        assert_eq!(
            check_value(&input),
            Err(Fault::NotCanonical),
            "input {name}"
        );
    }
}

#[test]
fn ecmascript_number_cases_print_and_check_exactly() {
    let csv = std::fs::read_to_string(data("numbers.csv")).unwrap();
    let mut count = 0;
    for line in csv.lines() {
        let (hex, text) = line.split_once(',').unwrap();
        let value = f64::from_bits(u64::from_str_radix(hex, 16).unwrap());
        let mut out = Vec::new();
        write::write_f64(&mut out, value).unwrap();
        assert_eq!(std::str::from_utf8(&out).unwrap(), text, "bits {hex}");
        assert_eq!(check_value(text.as_bytes()), Ok(()), "checker on {text}");
        count += 1;
    }
    assert_eq!(count, 25_000);
}

#[test]
fn non_finite_numbers_are_refused() {
    for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(
            write::write_f64(&mut Vec::new(), f),
            Err(CanonicalError::NonFinite)
        );
    }
}

#[test]
fn integers_beyond_2_pow_53_become_digit_strings() {
    let value = serde_json::json!([
        9007199254740991u64,
        9007199254740992u64,
        -9007199254740993i64,
        u64::MAX
    ]);
    assert_eq!(
        CanonicalJson::from_value(&value).unwrap().as_str(),
        r#"[9007199254740991,"9007199254740992","-9007199254740993","18446744073709551615"]"#
    );
}

#[test]
fn members_sort_by_utf16_code_units_not_code_points() {
    // U+FB33 sorts after U+1F602 in UTF-16 (0xFB33 > 0xD83D), before it by
    // code point.
    let value = serde_json::json!({"\u{1F602}": 1, "\u{FB33}": 2});
    let text = CanonicalJson::from_value(&value).unwrap();
    assert_eq!(text.as_str(), "{\"\u{1F602}\":1,\"\u{FB33}\":2}");
    assert_eq!(check_value(text.as_str().as_bytes()), Ok(()));
    assert_eq!(
        check_value("{\"\u{FB33}\":2,\"\u{1F602}\":1}".as_bytes()),
        Err(Fault::NotCanonical)
    );
}

#[test]
fn checker_names_each_non_canonical_form() {
    let not_canonical = [
        r#"{"a":1,"a":1}"#,
        r#"{"b":1,"a":1}"#,
        r#"{ "a":1}"#,
        r#"[1 ]"#,
        r#"1.0"#,
        r#"1E3"#,
        r#"-0"#,
        r#"100000000000000000000000"#,
        r#"0.10"#,
        r#""\u0041""#,
        r#""\/""#,
        r#""\u000a""#,
        r#""\u001F""#,
        r#""\ud83d\ude02""#,
        "\"a\" ",
    ];
    for text in not_canonical {
        assert_eq!(
            check_value(text.as_bytes()),
            Err(Fault::NotCanonical),
            "{text}"
        );
    }
    let malformed: [&[u8]; 15] = [
        b"1e400",
        b"",
        b"{",
        b"{\"a\"}",
        b"{\"a\":1,}",
        b"[1,]",
        b"01",
        b"1.",
        b"-",
        b"\"\x01\"",
        b"\"\\x\"",
        b"\"\\ud800\"",
        b"\"\xff\"",
        b"tru",
        b"1 2",
    ];
    for text in malformed {
        assert_eq!(
            check_value(text),
            Err(Fault::Malformed),
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
    let canonical = [
        r#""\u001f""#,
        r#""\b\t\n\f\r\"\\""#,
        "\"\u{7f}é\"",
        "1e+21",
        "-1e-7",
        "0",
    ];
    for text in canonical {
        assert_eq!(check_value(text.as_bytes()), Ok(()), "{text}");
    }
}

#[test]
fn nesting_beyond_the_limit_is_malformed_not_a_stack_overflow() {
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    assert_eq!(check_value(deep.as_bytes()), Err(Fault::Malformed));
}

/// Arbitrary JSON values, floats and astral keys included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::from(i % (1 << 53))),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}|[\\x00-\\x1f\"\\\\\u{7f}\u{fb33}\u{1f602}]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}|[\u{e000}\u{fb33}\u{1f602}a]{1,3}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn writer_matches_a_generic_jcs_implementation(value in json_value()) {
        let ours = CanonicalJson::from_value(&value).unwrap();
        let theirs = serde_jcs::to_string(&value).unwrap();
        prop_assert_eq!(ours.as_str(), theirs.as_str());
    }

    #[test]
    fn checker_accepts_canonical_text_and_flags_any_other_rendering(value in json_value()) {
        let canonical = serde_jcs::to_string(&value).unwrap();
        prop_assert_eq!(check_value(canonical.as_bytes()), Ok(()));
        for other in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
            let expected = if other == canonical { Ok(()) } else { Err(Fault::NotCanonical) };
            prop_assert_eq!(check_value(other.as_bytes()), expected, "{}", other);
        }
    }

    #[test]
    fn checker_agrees_with_parse_then_recanonicalise(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
        // Random bytes: mostly malformed, sometimes JSON. The checker must
        // agree with the slow path on which.
        let expected = match serde_json::from_slice::<Value>(&bytes) {
            Err(_) => Err(Fault::Malformed),
            Ok(v) => match serde_jcs::to_vec(&v) {
                Ok(c) if c == bytes => Ok(()),
                _ => Err(Fault::NotCanonical),
            },
        };
        prop_assert_eq!(check_value(&bytes), expected);
    }
}
