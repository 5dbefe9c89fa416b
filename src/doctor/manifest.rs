//! The few fields of a manifest `doctor` reads, taken while parsing, so a registry's 4 MiB answer costs no more than itself.
//!
//! Every value but the media type, the first layer and the index's entries is skipped (see
//! [`super::json`]), and of the index only the first entry and this platform's are kept.

use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::json::{Fields, KeyOf, Str, drain_map, drain_seq, otherwise_none};

/// What `doctor` needs of a manifest or an index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// `mediaType`.
    pub media_type: Option<String>,
    /// Of an index (`manifests`): the digest of the entry for `linux/<arch>`, else of the first.
    pub platform: Option<String>,
    /// The first layer's digest: `layers[0].digest` (schema 2, OCI), else `fsLayers[0].blobSum`.
    pub first_layer: Option<String>,
}

/// Reads `body` for `arch` (`amd64`, `arm64`, ...); anything that is not a JSON object gives
/// an empty [`Manifest`].
pub fn parse(body: &[u8], arch: &str) -> Manifest {
    let mut de = serde_json::Deserializer::from_slice(body);
    match de.deserialize_any(Top { arch }) {
        Ok(m) if de.end().is_ok() => m,
        _ => Manifest::default(),
    }
}

/// `[ {field: "..."}, ... ]`: the first element's `field`; the rest skipped.
struct FirstField(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FirstField {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstField {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
        let first = seq.next_element_seed(Fields(self.0))?.flatten();
        drain_seq(seq)?;
        Ok(first.and_then(|mut f| f.pop().flatten()))
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<String>, A::Error> {
        drain_map(map).map(|()| None)
    }
    otherwise_none!();
}

/// An index entry: its digest, and whether its platform is `linux/<arch>`.
struct Entry<'a> {
    arch: &'a str,
}

impl<'de> DeserializeSeed<'de> for Entry<'_> {
    type Value = Option<(Option<String>, bool)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Entry<'_> {
    type Value = Option<(Option<String>, bool)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an index entry")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut digest, mut ours) = (None, false);
        while let Some(key) = map.next_key_seed(KeyOf(&["digest", "platform"]))? {
            match key {
                Some(0) => digest = map.next_value_seed(Str)?,
                Some(_) => {
                    ours = map
                        .next_value_seed(Fields(&["os", "architecture"]))?
                        .is_some_and(|f| {
                            f[0].as_deref() == Some("linux") && f[1].as_deref() == Some(self.arch)
                        })
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some((digest, ours)))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| None)
    }
    otherwise_none!();
}

/// `manifests`: this platform's entry's digest, else the first entry's.
struct Platform<'a> {
    arch: &'a str,
}

impl<'de> DeserializeSeed<'de> for Platform<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Platform<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of manifests")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
        let mut first: Option<Option<String>> = None;
        let mut ours: Option<Option<String>> = None;
        while let Some(entry) = seq.next_element_seed(Entry { arch: self.arch })? {
            let (digest, matches) = entry.unwrap_or((None, false));
            if ours.is_some() {
                continue;
            }
            if matches {
                ours = Some(digest);
            } else if first.is_none() {
                first = Some(digest);
            }
        }
        Ok(ours.or(first).flatten())
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<String>, A::Error> {
        drain_map(map).map(|()| None)
    }
    otherwise_none!();
}

/// The top-level object.
struct Top<'a> {
    arch: &'a str,
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Manifest;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a manifest object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Manifest, A::Error> {
        const KEYS: &[&str] = &["mediaType", "manifests", "layers", "fsLayers"];
        let mut m = Manifest::default();
        let (mut layer, mut fs_layer) = (None, None);
        while let Some(key) = map.next_key_seed(KeyOf(KEYS))? {
            match key {
                Some(0) => m.media_type = map.next_value_seed(Str)?,
                Some(1) => m.platform = map.next_value_seed(Platform { arch: self.arch })?,
                Some(2) => layer = map.next_value_seed(FirstField(&["digest"]))?,
                Some(_) => fs_layer = map.next_value_seed(FirstField(&["blobSum"]))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        m.first_layer = layer.or(fs_layer);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn p(v: serde_json::Value) -> Manifest {
        parse(v.to_string().as_bytes(), "arm64")
    }

    #[test]
    fn the_fields_of_each_schema() {
        let m = p(serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": D2}, "layers": [{"size": 1, "digest": D1}, {"digest": D2}],
        }));
        assert_eq!(
            m.media_type.as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        assert_eq!(m.first_layer.as_deref(), Some(D1));
        assert_eq!(m.platform, None);
        let m = p(serde_json::json!({"fsLayers": [{"blobSum": D2}, {"blobSum": D1}]}));
        assert_eq!(m.first_layer.as_deref(), Some(D2));
        let m = p(serde_json::json!({"layers": [], "fsLayers": [{"blobSum": D2}]}));
        assert_eq!(
            m.first_layer.as_deref(),
            Some(D2),
            "schema 1 when schema 2 has none"
        );
    }

    #[test]
    fn an_index_gives_this_platform_else_the_first() {
        let entry = |d: &str, os: &str, arch: &str| serde_json::json!({"digest": d, "size": 7, "platform": {"os": os, "architecture": arch}});
        let m = p(
            serde_json::json!({"manifests": [entry(D1, "linux", "amd64"), entry(D2, "linux", "arm64")]}),
        );
        assert_eq!(m.platform.as_deref(), Some(D2));
        let m = p(
            serde_json::json!({"manifests": [entry(D1, "windows", "arm64"), entry(D2, "linux", "s390x")]}),
        );
        assert_eq!(m.platform.as_deref(), Some(D1), "else the first");
        let m = p(
            serde_json::json!({"manifests": [{"platform": {"os": "linux", "architecture": "arm64"}}, entry(D2, "linux", "arm64")]}),
        );
        assert_eq!(m.platform, None, "this platform's entry has no digest");
        assert_eq!(p(serde_json::json!({"manifests": []})).platform, None);
    }

    #[test]
    fn unexpected_types_are_missing_fields_not_errors() {
        let m = p(serde_json::json!({
            "mediaType": 5, "layers": {"digest": D1}, "fsLayers": [7, {"blobSum": D2}],
            "manifests": "x", "other": [1.5e300, null, true, {"a": [[]]}],
        }));
        assert_eq!(m, Manifest::default());
        let m = p(
            serde_json::json!({"mediaType": "t", "layers": [{"digest": 1}], "manifests": [3, [], {"digest": D1}]}),
        );
        assert_eq!(m.media_type.as_deref(), Some("t"));
        assert_eq!(m.first_layer, None);
        assert_eq!(m.platform, None, "the first entry (3) has no digest");
        for bad in [&b"[1]"[..], b"\"s\"", b"12", b"{", b"{} x", b"", b"\xff"] {
            assert_eq!(parse(bad, "arm64"), Manifest::default(), "{bad:?}");
        }
    }

    #[test]
    fn deep_and_escaped_input() {
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse(deep.as_bytes(), "arm64"), Manifest::default());
        let m = parse(
            br#"{"media\u0054ype":"a\"b","lay\u0065rs":[{"dig\u0065st":"d"}]}"#,
            "arm64",
        );
        assert_eq!(m.media_type.as_deref(), Some("a\"b"));
        assert_eq!(m.first_layer.as_deref(), Some("d"));
    }
}
