//! JSON event decoding: one flat JSON object per line → [`Event`].
//!
//! A small, allocation-free scanner specialised for flat objects: it reads the
//! standard fields, skips everything else (nested values included) and keeps
//! the whole line as the event's raw JSON, so unknown fields stay reachable.
//! serde_json's generic path costs several times more per event and the
//! decoder is the host's hottest loop (see BENCHMARKS.md). Its results are
//! checked against serde_json in the tests.

use rtap_sdk::time::parse_rfc3339;

use crate::event::{Event, EventBatch, Span, TextField};

/// Why a line is not an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid UTF-8 (byte {0})")]
    Utf8(usize),
    #[error("invalid JSON at byte {at}: {what}")]
    Syntax { at: usize, what: &'static str },
    #[error("missing field `timestamp`")]
    MissingTimestamp,
    #[error("invalid `{field}`: {why}")]
    Field { field: &'static str, why: String },
}

fn syntax(at: usize, what: &'static str) -> DecodeError {
    DecodeError::Syntax { at, what }
}

/// Decode one line and append the event to `batch` (the line is copied into
/// the batch's buffer). Empty lines are not events: returns `Ok(false)`.
pub fn decode_into(line: &[u8], offset: u64, batch: &mut EventBatch) -> Result<bool, DecodeError> {
    let line = trim(line);
    if line.is_empty() {
        return Ok(false);
    }
    let text = std::str::from_utf8(line).map_err(|e| DecodeError::Utf8(e.valid_up_to()))?;
    let base = batch.buf.len();
    batch.buf.push_str(text);
    let mut p = Parser {
        s: line,
        i: 0,
        base: base as u32,
        owned: Vec::new(),
    };
    let mut ev = Event {
        ts: 0,
        latency_ms: f64::NAN,
        value: f64::NAN,
        text: [Span::MISSING; 8],
        raw: Span {
            off: base as u32,
            len: line.len() as u32,
        },
        offset,
    };
    let mut have_ts = false;
    let res = p.object(&mut ev, &mut have_ts);
    let res = res.and(if have_ts {
        Ok(())
    } else {
        Err(DecodeError::MissingTimestamp)
    });
    if let Err(e) = res {
        batch.buf.truncate(base);
        return Err(e);
    }
    // Unescaped strings go after the line; fix their spans up.
    if !p.owned.is_empty() {
        // Unescaped from valid UTF-8 and whole characters: valid UTF-8.
        let Ok(owned) = std::str::from_utf8(&p.owned) else {
            batch.buf.truncate(base);
            return Err(DecodeError::Utf8(0));
        };
        let owned_base = batch.buf.len() as u32;
        for span in ev.text.iter_mut() {
            if !span.is_missing() && span.off & OWNED != 0 {
                span.off = owned_base + (span.off & !OWNED);
            }
        }
        batch.buf.push_str(owned);
    }
    batch.events.push(ev);
    Ok(true)
}

/// Marks a span that points into `Parser::owned` until fixed up.
const OWNED: u32 = 1 << 31;

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest
        } else {
            break;
        }
    }
    s
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    base: u32,
    owned: Vec<u8>,
}

enum Str<'a> {
    /// Borrowed: position in the line.
    Raw(usize, usize),
    /// Unescaped into `owned`: position there.
    Owned(usize, usize, std::marker::PhantomData<&'a ()>),
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), DecodeError> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(syntax(self.i, what))
        }
    }

    fn object(&mut self, ev: &mut Event, have_ts: &mut bool) -> Result<(), DecodeError> {
        self.ws();
        if self.peek() != Some(b'{') {
            return Err(syntax(self.i, "expected a JSON object"));
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                self.ws();
                if self.peek() != Some(b'"') {
                    return Err(syntax(self.i, "expected a field name"));
                }
                let key = self.string()?;
                // An escaped name (`"p\u0061ge"`) is unescaped into `owned`:
                // copied out (rare), and its bytes given back.
                let escaped: Vec<u8>;
                let key: &[u8] = match key {
                    Str::Raw(a, b) => &self.s[a..b],
                    Str::Owned(a, b, _) => {
                        escaped = self.owned[a..b].to_vec();
                        self.owned.truncate(a);
                        &escaped
                    }
                };
                self.expect(b':', "expected ':'")?;
                self.ws();
                self.field(key, ev, have_ts)?;
                self.ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(syntax(self.i, "expected ',' or '}'")),
                }
            }
        }
        self.ws();
        if self.i != self.s.len() {
            return Err(syntax(self.i, "trailing characters after the object"));
        }
        Ok(())
    }

    fn field(&mut self, key: &[u8], ev: &mut Event, have_ts: &mut bool) -> Result<(), DecodeError> {
        let text = match key {
            b"timestamp" => {
                ev.ts = self.timestamp()?;
                *have_ts = true;
                return Ok(());
            }
            b"latency_ms" => {
                ev.latency_ms = self.opt_number("latency_ms")?;
                return Ok(());
            }
            b"value" => {
                ev.value = self.opt_number("value")?;
                return Ok(());
            }
            b"event_id" => TextField::EventId,
            b"event_type" => TextField::EventType,
            b"user_id" => TextField::UserId,
            b"session_id" => TextField::SessionId,
            b"page" => TextField::Page,
            b"country" => TextField::Country,
            b"device" => TextField::Device,
            b"referrer" => TextField::Referrer,
            _ => return self.skip_value(0),
        };
        ev.text[text as usize] = match self.peek() {
            Some(b'"') => match self.string()? {
                Str::Raw(a, b) => Span {
                    off: self.base + a as u32,
                    len: (b - a) as u32,
                },
                Str::Owned(a, b, _) => Span {
                    off: OWNED | a as u32,
                    len: (b - a) as u32,
                },
            },
            Some(b'n') => {
                self.literal(b"null")?;
                Span::MISSING
            }
            // Numbers and booleans as ids ("user_id": 42) keep their JSON text.
            _ => {
                let start = self.i;
                self.skip_value(0)?;
                Span {
                    off: self.base + start as u32,
                    len: (self.i - start) as u32,
                }
            }
        };
        Ok(())
    }

    fn literal(&mut self, lit: &'static [u8]) -> Result<(), DecodeError> {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(syntax(self.i, "invalid literal"))
        }
    }

    /// A string starting at `"`; returns where its (unescaped) bytes are.
    fn string(&mut self) -> Result<Str<'a>, DecodeError> {
        let start = self.i + 1;
        let rest = &self.s[start..];
        match memchr::memchr2(b'"', b'\\', rest) {
            Some(n) if rest[n] == b'"' => {
                if let Some(c) = rest[..n].iter().position(|&b| b < 0x20) {
                    return Err(syntax(start + c, "control character in string"));
                }
                self.i = start + n + 1;
                Ok(Str::Raw(start, start + n))
            }
            Some(_) => self.escaped_string(start),
            None => Err(syntax(self.s.len(), "unterminated string")),
        }
    }

    fn escaped_string(&mut self, start: usize) -> Result<Str<'a>, DecodeError> {
        let out_start = self.owned.len();
        let mut i = start;
        loop {
            let Some(&c) = self.s.get(i) else {
                return Err(syntax(i, "unterminated string"));
            };
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(i + 1) else {
                        return Err(syntax(i, "unterminated escape"));
                    };
                    i += 2;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4(i)?;
                            i += 4;
                            if (0xD800..0xDC00).contains(&hi) {
                                if self.s.get(i) != Some(&b'\\') || self.s.get(i + 1) != Some(&b'u')
                                {
                                    return Err(syntax(i, "unpaired surrogate"));
                                }
                                let lo = self.hex4(i + 2)?;
                                i += 6;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(syntax(i, "invalid surrogate pair"));
                                }
                                let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                char::from_u32(cp).ok_or(syntax(i, "invalid code point"))?
                            } else {
                                char::from_u32(hi).ok_or(syntax(i, "invalid code point"))?
                            }
                        }
                        _ => return Err(syntax(i - 1, "invalid escape")),
                    };
                    let mut buf = [0u8; 4];
                    self.owned
                        .extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(syntax(i, "control character in string")),
                c => {
                    self.owned.push(c);
                    i += 1;
                }
            }
        }
        self.i = i + 1;
        Ok(Str::Owned(
            out_start,
            self.owned.len(),
            std::marker::PhantomData,
        ))
    }

    fn hex4(&self, i: usize) -> Result<u32, DecodeError> {
        let h = self.s.get(i..i + 4).ok_or(syntax(i, "short \\u escape"))?;
        // Four hex digits exactly (`from_str_radix` would take a sign too).
        if !h.iter().all(u8::is_ascii_hexdigit) {
            return Err(syntax(i, "invalid \\u escape"));
        }
        let h = std::str::from_utf8(h).map_err(|_| syntax(i, "invalid \\u escape"))?;
        u32::from_str_radix(h, 16).map_err(|_| syntax(i, "invalid \\u escape"))
    }

    /// The extent of a JSON number at the cursor.
    fn number_span(&mut self) -> Result<(usize, usize), DecodeError> {
        let start = self.i;
        let mut i = self.i;
        if self.s.get(i) == Some(&b'-') {
            i += 1;
        }
        // JSON's grammar: an integer part without leading zeros, then an
        // optional fraction and exponent, each with at least one digit.
        let digits = |i: usize| {
            self.s[i.min(self.s.len())..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        let int = digits(i);
        if int == 0 || (int > 1 && self.s[i] == b'0') {
            return Err(syntax(start, "invalid number"));
        }
        i += int;
        if self.s.get(i) == Some(&b'.') {
            let frac = digits(i + 1);
            if frac == 0 {
                return Err(syntax(start, "invalid number"));
            }
            i += 1 + frac;
        }
        if matches!(self.s.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(self.s.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let exp = digits(i);
            if exp == 0 {
                return Err(syntax(start, "invalid number"));
            }
            i += exp;
        }
        self.i = i;
        Ok((start, i))
    }

    fn number(&mut self, field: &'static str) -> Result<f64, DecodeError> {
        let (a, b) = self.number_span()?;
        let text = std::str::from_utf8(&self.s[a..b]).unwrap_or("");
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            // `1e999`: valid JSON, but no f64 (serde_json refuses it too).
            Ok(_) => Err(DecodeError::Field {
                field,
                why: format!("`{text}` is out of range"),
            }),
            Err(_) => Err(DecodeError::Field {
                field,
                why: format!("`{text}` is not a number"),
            }),
        }
    }

    fn opt_number(&mut self, field: &'static str) -> Result<f64, DecodeError> {
        match self.peek() {
            Some(b'n') => {
                self.literal(b"null")?;
                Ok(f64::NAN)
            }
            Some(b'-' | b'0'..=b'9') => self.number(field),
            _ => Err(DecodeError::Field {
                field,
                why: "expected a number or null".into(),
            }),
        }
    }

    fn timestamp(&mut self) -> Result<i64, DecodeError> {
        let bad = |why: String| DecodeError::Field {
            field: "timestamp",
            why,
        };
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => {
                let (a, b) = self.number_span()?;
                let text = std::str::from_utf8(&self.s[a..b]).unwrap_or("");
                if let Ok(ms) = text.parse::<i64>() {
                    return Ok(ms);
                }
                let f: f64 = text
                    .parse()
                    .map_err(|_| bad(format!("`{text}` is not a number")))?;
                if !f.is_finite() || f.abs() > 9.0e15 {
                    return Err(bad(format!("`{text}` is out of range")));
                }
                Ok(f.floor() as i64)
            }
            Some(b'"') => {
                let (a, b) = match self.string()? {
                    Str::Raw(a, b) => (a, b),
                    Str::Owned(..) => return Err(bad("escaped characters in a timestamp".into())),
                };
                let text = std::str::from_utf8(&self.s[a..b]).unwrap_or("");
                if let Ok(ms) = text.parse::<i64>() {
                    return Ok(ms);
                }
                parse_rfc3339(text).ok_or_else(|| {
                    bad(format!(
                        "`{text}` is neither ms since the epoch nor RFC 3339"
                    ))
                })
            }
            _ => Err(bad("expected a number (ms) or an RFC 3339 string".into())),
        }
    }

    /// Skip any JSON value.
    fn skip_value(&mut self, depth: u32) -> Result<(), DecodeError> {
        if depth > 64 {
            return Err(syntax(self.i, "nesting too deep"));
        }
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number_span().map(|_| ()),
            Some(open @ (b'{' | b'[')) => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                self.ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.ws();
                        if self.peek() != Some(b'"') {
                            return Err(syntax(self.i, "expected a field name"));
                        }
                        self.string()?;
                        self.expect(b':', "expected ':'")?;
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(c) if c == close => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(syntax(self.i, "expected ',' or a closing bracket")),
                    }
                }
            }
            _ => Err(syntax(self.i, "expected a value")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;

    fn batch() -> EventBatch {
        EventBatch::new(Origin {
            source: "test".into(),
            partition: 0,
        })
    }

    fn one(line: &str) -> Result<(EventBatch, Event), DecodeError> {
        let mut b = batch();
        decode_into(line.as_bytes(), 1, &mut b)?;
        let ev = b.events[0];
        Ok((b, ev))
    }

    #[test]
    fn decodes_standard_fields() {
        let (b, ev) = one(r#"{"event_id":"e1","event_type":"page_view","user_id":"u1","session_id":"s1","page":"/home","timestamp":1764000000123,"latency_ms":12.5,"value":null,"country":"DE","device":"mobile","referrer":"google","extra":{"a":[1,2,{"b":null}]}}"#).unwrap();
        assert_eq!(ev.ts, 1764000000123);
        assert_eq!(ev.latency_ms, 12.5);
        assert!(ev.value.is_nan());
        assert_eq!(b.text(&ev, TextField::Page), Some("/home"));
        assert_eq!(b.text(&ev, TextField::Referrer), Some("google"));
        assert!(b.raw(&ev).contains("\"extra\""));
    }

    #[test]
    fn unescapes_strings_and_keeps_spans_right() {
        let (b, ev) = one(r#"{"timestamp":1,"page":"/a\"b\u00e9\ud83d\ude00","user_id":"plain","country":"x\\y"}"#).unwrap();
        assert_eq!(b.text(&ev, TextField::Page), Some("/a\"bé😀"));
        assert_eq!(b.text(&ev, TextField::UserId), Some("plain"));
        assert_eq!(b.text(&ev, TextField::Country), Some("x\\y"));
    }

    #[test]
    fn timestamps_in_every_form() {
        assert_eq!(
            one(r#"{"timestamp":"2026-11-25T14:52:49.123Z"}"#)
                .unwrap()
                .1
                .ts,
            1_795_618_369_123
        );
        assert_eq!(
            one(r#"{"timestamp":"2026-11-25T15:52:49.123+01:00"}"#)
                .unwrap()
                .1
                .ts,
            1_795_618_369_123
        );
        assert_eq!(
            one(r#"{"timestamp":"1970-01-01T00:00:01Z"}"#).unwrap().1.ts,
            1000
        );
        assert_eq!(one(r#"{"timestamp":"1000"}"#).unwrap().1.ts, 1000);
        assert_eq!(one(r#"{"timestamp":1000.7}"#).unwrap().1.ts, 1000);
        assert!(matches!(
            one(r#"{"timestamp":"yesterday"}"#),
            Err(DecodeError::Field {
                field: "timestamp",
                ..
            })
        ));
        assert_eq!(
            one(r#"{"page":"/"}"#).unwrap_err(),
            DecodeError::MissingTimestamp
        );
    }

    #[test]
    fn rejects_bad_lines_with_a_position() {
        for bad in [
            r#"{"timestamp":1"#,
            r#"[1,2]"#,
            r#"{"timestamp":1} x"#,
            r#"{"timestamp":1,"page":"x}"#,
            "{\"timestamp\":1,\"page\":\"a\u{1}\"}",
            r#"{"timestamp":1,"latency_ms":"fast"}"#,
            "not json",
        ] {
            assert!(one(bad).is_err(), "{bad} should fail");
        }
        let mut b = batch();
        assert!(decode_into(&[b'{', 0xff, b'}'], 1, &mut b).is_err());
        assert!(b.buf.is_empty(), "a failed line leaves nothing behind");
    }

    /// Found by the `decode` fuzz target (fuzz/regressions/decode/).
    #[test]
    fn numbers_and_escapes_follow_json_exactly() {
        for bad in [
            r#"{"timestamp" :370.}"#,
            r#"{"timestamp":1,"x":01}"#,
            r#"{"timestamp":1,"x":1e}"#,
            r#"{"timestamp":1,"x":1.5.2}"#,
            r#"{"timestamp":1,"x":-}"#,
            r#"{"timestamp":1,"page":"\u+041"}"#,
        ] {
            assert!(one(bad).is_err(), "{bad} should fail");
        }
        for good in [
            r#"{"timestamp":1,"x":-0.5e+3}"#,
            r#"{"timestamp":0,"x":10E2}"#,
        ] {
            assert!(one(good).is_ok(), "{good} should pass");
        }
        let (b, ev) = one(r#"{"timestamp":1,"p\u0061ge":"\u0041"}"#).unwrap();
        assert_eq!(b.text(&ev, TextField::Page), Some("A"));
    }

    #[test]
    fn agrees_with_serde_json() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let strings = ["a", "\\\"q\\\"", "\\u00fc", "/x/y", "", "\\n"];
        for _ in 0..500 {
            let mut fields = vec![format!("\"timestamp\":{}", next() % 100000)];
            for name in ["page", "user_id", "event_type", "country"] {
                if next() % 3 > 0 {
                    fields.push(format!(
                        "\"{name}\":\"{}\"",
                        strings[next() % strings.len()]
                    ));
                }
            }
            if next() % 2 == 0 {
                fields.push(format!("\"latency_ms\":{}.{}", next() % 1000, next() % 10));
            }
            if next() % 2 == 0 {
                fields.push("\"nested\":{\"k\":[1,\"}\",{\"z\":true}]}".into());
            }
            let line = format!("{{{}}}", fields.join(","));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let (b, ev) = one(&line).unwrap();
            assert_eq!(ev.ts, v["timestamp"].as_i64().unwrap());
            for f in [
                TextField::Page,
                TextField::UserId,
                TextField::EventType,
                TextField::Country,
            ] {
                assert_eq!(b.text(&ev, f), v[f.name()].as_str(), "{line}");
            }
            match v["latency_ms"].as_f64() {
                Some(l) => assert_eq!(ev.latency_ms, l),
                None => assert!(ev.latency_ms.is_nan()),
            }
        }
    }
}
