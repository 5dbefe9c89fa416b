//! Small deterministic container images (a config blob and one gzip layer) for the fake registry.

use sha2::{Digest as _, Sha256};

/// Docker image manifest, v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The manifest format of an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ManifestFormat {
    /// Docker image manifest v2, schema 2 (what `docker push` stores in ECR).
    #[default]
    Docker,
    /// OCI image manifest v1 (what buildkit, podman and oras often push).
    Oci,
}

impl ManifestFormat {
    fn media_types(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ManifestFormat::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
            ManifestFormat::Oci => (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER),
        }
    }
}

/// A blob: its bytes, their `sha256:` digest and the media type its manifest gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<64 hex>` of `bytes`.
    pub digest: String,
    /// The media type of the descriptor that names this blob.
    pub media_type: &'static str,
    /// The content.
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_digest(&bytes),
            media_type,
            bytes,
        }
    }
}

/// One image: a manifest naming a config blob and one layer blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The manifest, byte for byte as served.
    pub manifest: Vec<u8>,
    /// `sha256:` digest of `manifest` (the `Docker-Content-Digest`).
    pub manifest_digest: String,
    /// The manifest's media type (its `Content-Type`).
    pub media_type: &'static str,
    /// The config blob.
    pub config: Blob,
    /// The one layer: a gzip-compressed tar holding one small text file.
    pub layer: Blob,
}

impl Image {
    /// The image for `name:tag`: the same bytes every time, for every process.
    pub fn build(name: &str, tag: &str, format: ManifestFormat) -> Image {
        let (manifest_type, config_type, layer_type) = format.media_types();
        let text = format!("fake-aws image {name}:{tag}\n");
        let tar = tar_one_file("fake-aws-image.txt", text.as_bytes());
        let diff_id = sha256_digest(&tar);
        let layer = Blob::new(layer_type, gzip_stored(&tar));
        // Written by hand so the bytes (and digests) never depend on serde_json's features.
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{}},\
             \"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{diff_id}\"]}},\
             \"history\":[{{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"fake-aws {}\"}}]}}",
            json_escape(&format!("{name}:{tag}")),
        );
        let config = Blob::new(config_type, config.into_bytes());
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{manifest_type}\",\
             \"config\":{{\"mediaType\":\"{config_type}\",\"size\":{},\"digest\":\"{}\"}},\
             \"layers\":[{{\"mediaType\":\"{layer_type}\",\"size\":{},\"digest\":\"{}\"}}]}}",
            config.bytes.len(),
            config.digest,
            layer.bytes.len(),
            layer.digest,
        )
        .into_bytes();
        Image {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            media_type: manifest_type,
            config,
            layer,
        }
    }

    /// The config or layer blob with this digest.
    pub fn blob(&self, digest: &str) -> Option<&Blob> {
        [&self.config, &self.layer]
            .into_iter()
            .find(|b| b.digest == digest)
    }
}

/// `sha256:` and the lowercase hex SHA-256 of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    out.push_str(&hex(&Sha256::digest(bytes)));
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn json_escape(s: &str) -> String {
    let v = serde_json::Value::String(s.to_string()).to_string();
    v[1..v.len() - 1].to_string()
}

/// A ustar archive with one regular file (mode 0644, owner 0:0, mtime 0) and its end marker.
fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, field: &[u8]| {
        h[at..at + field.len()].copy_from_slice(field);
    };
    let name = name.as_bytes();
    put(&mut h, 0, &name[..name.len().min(99)]);
    put(&mut h, 100, b"0000644\0");
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{:011o}\0", content.len()).as_bytes());
    put(&mut h, 136, b"00000000000\0");
    put(&mut h, 148, b"        ");
    h[156] = b'0';
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    put(&mut h, 265, b"root");
    put(&mut h, 297, b"root");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// gzip (RFC 1952) of `data` in stored (uncompressed) deflate blocks: valid for every gunzip,
/// and needs no compressor.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown)
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        // chunks(0xffff) yields at most 65535 bytes.
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&((data.len() & 0xffff_ffff) as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses it).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn images_are_deterministic_and_digests_match() {
        let a = Image::build("team/app", "v1", ManifestFormat::Docker);
        assert_eq!(a, Image::build("team/app", "v1", ManifestFormat::Docker));
        assert_ne!(
            a.manifest_digest,
            Image::build("team/app", "v2", ManifestFormat::Docker).manifest_digest
        );
        assert_eq!(a.manifest_digest, sha256_digest(&a.manifest));
        assert_eq!(a.layer.digest, sha256_digest(&a.layer.bytes));
        let m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["mediaType"], DOCKER_MANIFEST);
        assert_eq!(m["config"]["digest"], a.config.digest.as_str());
        assert_eq!(m["layers"][0]["size"], a.layer.bytes.len());
        let c: serde_json::Value = serde_json::from_slice(&a.config.bytes).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
        let o = Image::build("team/app", "v1", ManifestFormat::Oci);
        assert_eq!(o.media_type, OCI_MANIFEST);
        assert_eq!(o.layer.media_type, OCI_LAYER);
        assert!(o.blob(&o.config.digest).is_some());
        // The same file in both formats: the same layer bytes, another media type.
        assert_eq!(o.layer.digest, a.layer.digest);
        let other = Image::build("team/app", "v2", ManifestFormat::Oci);
        assert!(o.blob(&other.layer.digest).is_none());
    }

    #[test]
    fn the_layer_is_a_gzip_tar() {
        let img = Image::build("x", "y", ManifestFormat::Docker);
        let gz = &img.layer.bytes;
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
        // One final stored block: header byte, LEN, NLEN, data, CRC32, ISIZE.
        assert_eq!(gz[10], 1);
        let len = usize::from(u16::from_le_bytes([gz[11], gz[12]]));
        let tar = &gz[15..15 + len];
        assert_eq!(gz.len(), 15 + len + 8);
        assert_eq!(&gz[15 + len..15 + len + 4], &crc32(tar).to_le_bytes());
        assert_eq!(&tar[257..262], b"ustar");
        assert_eq!(tar.len() % 512, 0);
        let text = b"fake-aws image x:y\n";
        assert_eq!(&tar[512..512 + text.len()], text);
    }
}
