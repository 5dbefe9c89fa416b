//! One startup path: a config named with `--config` whose every line is commented out means
//! this instance's registry, and the daemon watches and reloads *that* file (not the default).

mod common;

use common::*;

#[test]
fn a_commented_out_config_named_on_the_command_line_is_watched_and_reloaded() {
    require_root!();
    let w = World::new();
    w.fake.set_imds_identity("333333333333", "ap-south-1");
    let my = w.path("my.toml");
    std::fs::write(
        &my,
        "# [[registry]]\n# host = \"123456789012.dkr.ecr.us-east-1.amazonaws.com\"\n",
    )
    .unwrap();
    let target = w.path("d/config.json");
    let real = format!(
        "[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\n",
        target.display()
    );
    std::fs::write(w.path("real.toml"), real).unwrap();
    // The instance default writes root's docker config and uses the default socket and state
    // directory: give the daemon its own /root, /run and /var/lib in a private mount namespace.
    let envs: Vec<_> = w
        .cmd()
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    let mut c = std::process::Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
        .arg(
            r#"
mount -t tmpfs tmpfs /root; mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /var/lib
"$BIN" --config "$MY" run 2>"$DIR/daemon.log" &
pid=$!
for i in $(seq 400); do "$BIN" status --json 2>/dev/null | grep -q 333333333333 && break; sleep 0.05; done
"$BIN" status --json | grep -o '"host": "[^"]*"' || true
cp "$DIR/real.toml" "$MY.new"; mv "$MY.new" "$MY"
for i in $(seq 400); do test -s "$TARGET" && "$BIN" status --json 2>/dev/null | grep -q "$H1" && break; sleep 0.05; done
echo "after edit:"; "$BIN" status --json | grep -o '"host": "[^"]*"' || true
test -s "$TARGET" && echo "TARGET WRITTEN"
"$BIN" --config "$MY" reload && echo "RELOAD OK"
kill $pid; wait $pid || true
cat "$DIR/daemon.log" >&2
"#,
        )
        .env_clear()
        .envs(envs)
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("BIN", BIN)
        .env("MY", &my)
        .env("DIR", w.dir.path())
        .env("TARGET", &target)
        .env("H1", H1);
    let out = w.capture(c.output().unwrap());
    let (text, err) = (stdout(&out), stderr(&out));
    let (before, after) = text.split_once("after edit:").unwrap_or((&text, ""));
    assert!(
        before.contains("333333333333.dkr.ecr.ap-south-1.amazonaws.com"),
        "the instance default did not apply:\n{text}\n{err}"
    );
    assert!(
        after.contains(H1) && !after.contains("333333333333"),
        "the edit of the file named with --config was not picked up:\n{text}\n{err}"
    );
    assert!(text.contains("TARGET WRITTEN"), "{text}\n{err}");
    assert!(text.contains("RELOAD OK"), "{text}\n{err}");
    assert_fresh_entry(&w, &target, H1);
}
