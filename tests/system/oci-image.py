#!/usr/bin/env python3
"""Writes a tiny, valid single-layer OCI image layout (tag `latest`) into the directory argv[1]."""
import gzip, hashlib, io, json, os, sys, tarfile

out = sys.argv[1]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)

def put(data: bytes) -> str:
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return d

raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w") as t:
    body = b"hello from ecr-refresherd's consumer test\n"
    info = tarfile.TarInfo("hello.txt")
    info.size, info.mtime, info.mode = len(body), 0, 0o644
    t.addfile(info, io.BytesIO(body))
diff_id = hashlib.sha256(raw.getvalue()).hexdigest()
layer = gzip.compress(raw.getvalue(), mtime=0)
layer_digest = put(layer)
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["/hello.txt"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]},
}).encode()
config_digest = put(config)
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + config_digest, "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + layer_digest, "size": len(layer)}],
}).encode()
manifest_digest = put(manifest)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + manifest_digest,
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
