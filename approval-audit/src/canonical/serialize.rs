//! Canonical JSON straight from serde: scalars (most arguments) are
//! written directly; anything compound goes through a `serde_json::Value`
//! first, whose objects the writer sorts.

use serde::Serialize;
use serde::ser::{self, Impossible};

use super::CanonicalError;
use super::write::{write_data_i64, write_data_u64, write_f64, write_str, write_value};

/// Appends the canonical form of `value`. NaN and infinities are refused
/// (`serde_json` alone would write them as `null`); on error nothing is
/// appended.
pub fn write_serialize<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), CanonicalError> {
    let start = out.len();
    match value.serialize(Scalar { out: &mut *out }) {
        Ok(()) => Ok(()),
        Err(Fallback::Compound) => {
            out.truncate(start);
            crate::finite::check(value).map_err(|_| CanonicalError::NonFinite)?;
            let value = serde_json::to_value(value)
                .map_err(|e| CanonicalError::Serialize(e.to_string()))?;
            write_value(out, &value)
        }
        Err(Fallback::Failed(e)) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Why the direct path stopped.
#[derive(Debug)]
enum Fallback {
    /// A compound value: take the general path.
    Compound,
    /// A value with no canonical form.
    Failed(CanonicalError),
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Compound => f.write_str("compound value"),
            Self::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Fallback {}

impl ser::Error for Fallback {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self::Failed(CanonicalError::Serialize(msg.to_string()))
    }
}

/// Writes scalars as `serde_json::to_value` followed by the canonical writer
/// would, and gives up on anything else.
struct Scalar<'a> {
    out: &'a mut Vec<u8>,
}

macro_rules! compound {
    ($($method:ident($($arg:ty),*) -> $ty:ty),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ty, Fallback> {
            Err(Fallback::Compound)
        })*
    };
}

impl ser::Serializer for Scalar<'_> {
    type Ok = ();
    type Error = Fallback;
    type SerializeSeq = Impossible<(), Fallback>;
    type SerializeTuple = Impossible<(), Fallback>;
    type SerializeTupleStruct = Impossible<(), Fallback>;
    type SerializeTupleVariant = Impossible<(), Fallback>;
    type SerializeMap = Impossible<(), Fallback>;
    type SerializeStruct = Impossible<(), Fallback>;
    type SerializeStructVariant = Impossible<(), Fallback>;

    fn serialize_bool(self, v: bool) -> Result<(), Fallback> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), Fallback> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), Fallback> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), Fallback> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), Fallback> {
        write_data_i64(self.out, v);
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), Fallback> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), Fallback> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), Fallback> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), Fallback> {
        write_data_u64(self.out, v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), Fallback> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<(), Fallback> {
        write_f64(self.out, v).map_err(Fallback::Failed)
    }

    fn serialize_char(self, v: char) -> Result<(), Fallback> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Fallback> {
        write_str(self.out, v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Fallback> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Fallback> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Fallback> {
        self.serialize_none()
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Fallback> {
        self.serialize_none()
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Fallback> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Fallback> {
        value.serialize(self)
    }

    compound!(
        serialize_i128(i128) -> (),
        serialize_u128(u128) -> (),
        serialize_bytes(&[u8]) -> (),
        serialize_seq(Option<usize>) -> Self::SerializeSeq,
        serialize_tuple(usize) -> Self::SerializeTuple,
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant,
        serialize_map(Option<usize>) -> Self::SerializeMap,
        serialize_struct(&'static str, usize) -> Self::SerializeStruct,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant,
    );

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Fallback> {
        Err(Fallback::Compound)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// The general path, for comparison.
    fn via_value<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
        crate::finite::check(value).map_err(|_| CanonicalError::NonFinite)?;
        let value =
            serde_json::to_value(value).map_err(|e| CanonicalError::Serialize(e.to_string()))?;
        let mut out = Vec::new();
        write_value(&mut out, &value)?;
        Ok(out)
    }

    fn direct<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
        let mut out = b"prefix".to_vec();
        let result = write_serialize(&mut out, value);
        if result.is_err() {
            assert_eq!(out, b"prefix", "nothing appended on error");
        }
        result.map(|()| out[6..].to_vec())
    }

    #[derive(Serialize)]
    enum Mode {
        Fast,
        Pair(u8, u8),
    }

    #[derive(Serialize)]
    struct Meters(f64);

    #[test]
    fn every_scalar_shape_matches_the_general_path() {
        macro_rules! same {
            ($($value:expr),* $(,)?) => {$(
                assert_eq!(direct(&$value), via_value(&$value), "{}", stringify!($value));
            )*};
        }
        same!(
            true,
            false,
            0u8,
            255u8,
            -128i8,
            i16::MIN,
            u32::MAX,
            i32::MIN,
            0u64,
            9_007_199_254_740_991u64,
            9_007_199_254_740_992u64,
            u64::MAX,
            i64::MIN,
            -9_007_199_254_740_991i64,
            -9_007_199_254_740_992i64,
            1.0f64,
            -0.0f64,
            0.1f32,
            1e21f64,
            5e-324f64,
            'x',
            '\u{1F600}',
            "tab\tquote\"",
            "",
            (),
            None::<u8>,
            Some("x"),
            Some(Some(2u8)),
            Mode::Fast,
            Meters(2.5),
            Mode::Pair(1, 2),
            vec![1, 2],
            json!({"b": 1, "a": [true, null]}),
            7u128,
            -7i128,
            (1u8, "two"),
        );
    }

    #[test]
    fn non_finite_numbers_are_refused_directly_and_inside_compounds() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(direct(&bad), Err(CanonicalError::NonFinite));
            assert_eq!(direct(&Some(bad)), Err(CanonicalError::NonFinite));
            assert_eq!(direct(&vec![1.0, bad]), Err(CanonicalError::NonFinite));
        }
        assert_eq!(direct(&f32::NAN), Err(CanonicalError::NonFinite));
        assert_eq!(
            super::super::CanonicalJson::from_serialize(&Some(f64::NAN)),
            Err(CanonicalError::NonFinite)
        );
    }

    proptest! {
        #[test]
        fn random_scalars_match_the_general_path(
            f in any::<f64>().prop_filter("finite", |f| f.is_finite()),
            i in any::<i64>(),
            u in any::<u64>(),
            s in ".*",
        ) {
            prop_assert_eq!(direct(&f), via_value(&f));
            prop_assert_eq!(direct(&i), via_value(&i));
            prop_assert_eq!(direct(&u), via_value(&u));
            prop_assert_eq!(direct(&s), via_value(&s));
        }
    }
}
