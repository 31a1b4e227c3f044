//! The byte layout of a state type, as a fingerprint.
//!
//! `postcard` is not self-describing: a state written by one `State` type
//! does not decode as another. So `describe` carries a fingerprint of the
//! state type's layout, and the host refuses a new version that keeps the
//! `state_schema` but changes the layout ("bump the state schema").
//!
//! The layout is read from the type itself, with no value at hand, by two
//! tracers of serde's data model:
//!
//! - a deserializer that answers every request with a neutral value (`0`,
//!   `""`, one element per sequence, the first variant of an enum) and
//!   writes down what it was asked for: every field's type, element types
//!   of collections, `Option` contents;
//! - a serializer over `State::default()`: what the default value holds,
//!   which also covers types whose deserializer refuses neutral values (the
//!   SDK's sketches check their invariants) and whatever follows them.
//!
//! Names are left out (renaming a field keeps the layout); integer widths,
//! field order, sequence/option/map nesting and enum variant counts are in.

use std::fmt::Write;

use serde::de::DeserializeOwned;
use serde::de::{self, DeserializeSeed, Visitor};
use serde::ser::{self, Serialize};

/// Nesting depth past which the deserializing tracer answers empty
/// collections and `None` (recursive types).
const MAX_DEPTH: usize = 6;

thread_local! {
    static TRACING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is tracing a layout: the SDK's own checked types
/// (sketches) then accept the tracer's neutral values instead of refusing
/// them, so what follows them is traced too.
pub(crate) fn tracing() -> bool {
    TRACING.with(|t| t.get())
}

/// The layout of `S`, as text (what the fingerprint hashes).
pub fn layout<S: Default + Serialize + DeserializeOwned>() -> String {
    let mut de = String::new();
    TRACING.with(|t| t.set(true));
    let _ = S::deserialize(&mut DeTracer {
        out: &mut de,
        depth: 0,
    });
    TRACING.with(|t| t.set(false));
    let mut ser = String::new();
    let _ = S::default().serialize(&mut SerTracer { out: &mut ser });
    format!("{de}|{ser}")
}

/// The fingerprint of `S`'s layout: 16 hex digits.
pub fn fingerprint<S: Default + Serialize + DeserializeOwned>() -> String {
    format!("{:016x}", crate::sketch::hash64(layout::<S>().as_bytes()))
}

/// Why a trace stopped (never shown: the layout up to there counts).
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("trace stopped")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl ser::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

struct DeTracer<'a> {
    out: &'a mut String,
    depth: usize,
}

macro_rules! de_prim {
    ($($method:ident => $tag:literal, $visit:ident($($value:expr)?);)*) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
            self.out.push_str($tag);
            self.out.push(' ');
            v.$visit($($value)?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for &mut DeTracer<'_> {
    type Error = Stop;

    de_prim! {
        deserialize_bool => "bool", visit_bool(false);
        deserialize_i8 => "i8", visit_i8(0);
        deserialize_i16 => "i16", visit_i16(0);
        deserialize_i32 => "i32", visit_i32(0);
        deserialize_i64 => "i64", visit_i64(0);
        deserialize_i128 => "i128", visit_i128(0);
        deserialize_u8 => "u8", visit_u8(0);
        deserialize_u16 => "u16", visit_u16(0);
        deserialize_u32 => "u32", visit_u32(0);
        deserialize_u64 => "u64", visit_u64(0);
        deserialize_u128 => "u128", visit_u128(0);
        deserialize_f32 => "f32", visit_f32(0.0);
        deserialize_f64 => "f64", visit_f64(0.0);
        deserialize_char => "char", visit_char('a');
        deserialize_str => "str", visit_str("");
        deserialize_string => "str", visit_str("");
        deserialize_bytes => "bytes", visit_bytes(&[]);
        deserialize_byte_buf => "bytes", visit_bytes(&[]);
        deserialize_unit => "()", visit_unit();
        deserialize_identifier => "id", visit_u32(0);
        deserialize_ignored_any => "_", visit_unit();
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.out.push_str("any ");
        Err(Stop)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        if self.depth >= MAX_DEPTH {
            self.out.push_str("O(..) ");
            return v.visit_none();
        }
        self.out.push_str("O( ");
        self.depth += 1;
        let r = v.visit_some(&mut *self);
        self.depth -= 1;
        self.out.push_str(") ");
        r
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Stop> {
        self.out.push_str("() ");
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Stop> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        let n = usize::from(self.depth < MAX_DEPTH);
        self.out.push_str("[ ");
        self.depth += 1;
        let r = v.visit_seq(Elements { t: self, left: n });
        self.depth -= 1;
        self.out.push_str("] ");
        r
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Stop> {
        self.out.push_str("( ");
        let r = v.visit_seq(Elements {
            t: &mut *self,
            left: len,
        });
        self.out.push_str(") ");
        r
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, Stop> {
        self.deserialize_tuple(len, v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        let n = usize::from(self.depth < MAX_DEPTH);
        self.out.push_str("{ ");
        self.depth += 1;
        let r = v.visit_map(Elements { t: self, left: n });
        self.depth -= 1;
        self.out.push_str("} ");
        r
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        self.deserialize_tuple(fields.len(), v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "E{}( ", variants.len());
        let r = v.visit_enum(FirstVariant { t: &mut *self });
        self.out.push_str(") ");
        r
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// A sequence, tuple, struct or map of `left` traced elements.
struct Elements<'t, 'a> {
    t: &'t mut DeTracer<'a>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, '_> {
    type Error = Stop;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.t).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, '_> {
    type Error = Stop;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.t).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        self.t.out.push_str(": ");
        seed.deserialize(&mut *self.t)
    }
}

/// An enum's first variant (postcard writes the variant's index first).
struct FirstVariant<'t, 'a> {
    t: &'t mut DeTracer<'a>,
}

impl<'de, 't, 'a> de::EnumAccess<'de> for FirstVariant<'t, 'a> {
    type Error = Stop;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Stop> {
        let tag = seed.deserialize(de::value::U32Deserializer::<Stop>::new(0))?;
        Ok((tag, self))
    }
}

impl<'de> de::VariantAccess<'de> for FirstVariant<'_, '_> {
    type Error = Stop;
    fn unit_variant(self) -> Result<(), Stop> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Stop> {
        seed.deserialize(&mut *self.t)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Stop> {
        v.visit_seq(Elements {
            t: self.t,
            left: len,
        })
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        v.visit_seq(Elements {
            t: self.t,
            left: fields.len(),
        })
    }
}

struct SerTracer<'a> {
    out: &'a mut String,
}

macro_rules! ser_prim {
    ($($method:ident($ty:ty) => $tag:literal;)*) => {
        $(fn $method(self, _: $ty) -> Result<(), Stop> {
            self.out.push_str($tag);
            self.out.push(' ');
            Ok(())
        })*
    };
}

impl<'t, 'a> ser::Serializer for &'t mut SerTracer<'a> {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    ser_prim! {
        serialize_bool(bool) => "bool";
        serialize_i8(i8) => "i8";
        serialize_i16(i16) => "i16";
        serialize_i32(i32) => "i32";
        serialize_i64(i64) => "i64";
        serialize_i128(i128) => "i128";
        serialize_u8(u8) => "u8";
        serialize_u16(u16) => "u16";
        serialize_u32(u32) => "u32";
        serialize_u64(u64) => "u64";
        serialize_u128(u128) => "u128";
        serialize_f32(f32) => "f32";
        serialize_f64(f64) => "f64";
        serialize_char(char) => "char";
        serialize_str(&str) => "str";
        serialize_bytes(&[u8]) => "bytes";
        serialize_unit_struct(&'static str) => "()";
    }

    fn serialize_none(self) -> Result<(), Stop> {
        self.out.push_str("None ");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Stop> {
        self.out.push_str("Some( ");
        v.serialize(&mut *self)?;
        self.out.push_str(") ");
        Ok(())
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        self.out.push_str("() ");
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, i: u32, _: &'static str) -> Result<(), Stop> {
        let _ = write!(self.out, "V{i} ");
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Stop> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        i: u32,
        _: &'static str,
        v: &T,
    ) -> Result<(), Stop> {
        let _ = write!(self.out, "V{i}( ");
        v.serialize(&mut *self)?;
        self.out.push_str(") ");
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Stop> {
        self.out.push_str("[ ");
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Stop> {
        self.out.push_str("( ");
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        self.out.push_str("( ");
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        i: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Stop> {
        let _ = write!(self.out, "V{i}( ");
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Stop> {
        self.out.push_str("{ ");
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        self.out.push_str("( ");
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        i: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Stop> {
        let _ = write!(self.out, "V{i}( ");
        Ok(self)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

macro_rules! ser_compound {
    ($($trait:ident { $($method:ident $(($key:ty))?;)* })*) => {
        $(impl ser::$trait for &mut SerTracer<'_> {
            type Ok = ();
            type Error = Stop;
            $(fn $method<T: Serialize + ?Sized>(&mut self, $(_: $key,)? v: &T) -> Result<(), Stop> {
                v.serialize(&mut **self)
            })*
            fn end(self) -> Result<(), Stop> {
                self.out.push_str(") ");
                Ok(())
            }
        })*
    };
}

ser_compound! {
    SerializeSeq { serialize_element; }
    SerializeTuple { serialize_element; }
    SerializeTupleStruct { serialize_field; }
    SerializeTupleVariant { serialize_field; }
    SerializeStruct { serialize_field(&'static str); }
    SerializeStructVariant { serialize_field(&'static str); }
}

impl ser::SerializeMap for &mut SerTracer<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Stop> {
        k.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
        self.out.push_str(": ");
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Stop> {
        self.out.push_str("} ");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::{DdSketch, HyperLogLog};
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Default, Serialize, Deserialize)]
    struct V1 {
        count: u64,
        users: Vec<String>,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct V1Renamed {
        views: u64,
        people: Vec<String>,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct V2 {
        count: u64,
        users: Vec<String>,
        batches: u32,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct Narrower {
        count: u32,
        users: Vec<String>,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct WithSketch {
        hll: HyperLogLog,
        after: Option<Vec<(u8, f64)>>,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct WithSketchWider {
        hll: HyperLogLog,
        after: Option<Vec<(u16, f64)>>,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct Tree {
        children: Vec<Tree>,
        by_key: BTreeMap<String, Option<Box<Tree>>>,
    }

    #[test]
    fn fields_and_types_count_names_do_not() {
        assert_eq!(fingerprint::<V1>(), fingerprint::<V1Renamed>());
        assert_ne!(fingerprint::<V1>(), fingerprint::<V2>());
        assert_ne!(fingerprint::<V1>(), fingerprint::<Narrower>());
        assert_ne!(fingerprint::<u64>(), fingerprint::<(u64, u64)>());
        assert_eq!(fingerprint::<u64>().len(), 16);
    }

    #[test]
    fn element_types_behind_a_checked_sketch_count_too() {
        assert_ne!(
            fingerprint::<WithSketch>(),
            fingerprint::<WithSketchWider>()
        );
        assert_ne!(fingerprint::<HyperLogLog>(), fingerprint::<DdSketch>());
    }

    #[test]
    fn recursive_types_end() {
        assert!(layout::<Tree>().len() < 10_000);
    }
}
